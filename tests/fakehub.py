"""A local HTTP server that speaks the Hugging Face Hub's file-resolve protocol (enough for
``huggingface_hub``'s ``hf_hub_download`` and ``list_repo_files``), reached through ``HF_ENDPOINT``."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "hf_good_token"


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}  # repo -> path -> content (revision "main")
        self.gated: set[str] = set()
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, body: bool) -> None:
        data = json.dumps({"error": code}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = urllib.parse.urlparse(h.path).path
        self.requests.append(f"{h.command} {path}")
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            repo, revision = "/".join(parts[2:4]), parts[5]
            if repo not in self.repos:
                return self._error(h, 404, "RepoNotFound", body)
            if revision != "main":
                return self._error(h, 404, "RevisionNotFound", body)
            listing = [{"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                       for p, c in sorted(self.repos[repo].items())]
            return self._send(h, json.dumps(listing).encode(), body, {"Content-Type": "application/json"})
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo not in self.repos:
                return self._error(h, 404, "RepoNotFound", body)
            if repo in self.gated and h.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._error(h, 401, "GatedRepo", body)
            if revision != "main":
                return self._error(h, 404, "RevisionNotFound", body)
            if file not in self.repos[repo]:
                return self._error(h, 404, "EntryNotFound", body)
            content = self.repos[repo][file]
            return self._send(h, content, body, {
                "X-Repo-Commit": hashlib.sha1(repo.encode()).hexdigest(),
                "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            })
        return self._error(h, 404, "RepoNotFound", body)

    def _send(self, h: BaseHTTPRequestHandler, data: bytes, body: bool, headers: dict[str, str]) -> None:
        h.send_response(200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
