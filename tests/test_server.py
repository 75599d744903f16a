"""The bundled server, driven by the official openai client, on generated models."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from serverproc import CONSOLE_SCRIPT, ServerProcess

HELLO = 15043  # "Hello" in the llama-spm vocabulary; the deterministic model continues 15044, 15045, ...


def post(srv: ServerProcess, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(srv.base_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.load(resp)


def client(srv: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=5)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def test_health_is_503_while_loading_then_200(deterministic_model: Path, tmp_path: Path) -> None:
    # The HTTP socket is bound before the model loads; a UNIX socket is an address known in advance.
    sock = tmp_path / "server.sock"
    proc = subprocess.Popen([str(CONSOLE_SCRIPT), "-m", str(deterministic_model), "--host", str(sock),
                             "-c", "8192", "--load-mode", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while (not statuses or statuses[-1] != 200) and time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = UnixHTTPConnection(sock)
                conn.request("GET", "/health")
                status = conn.getresponse().status
                conn.close()
            except OSError:
                continue  # not bound yet
            if not statuses or statuses[-1] != status:
                statuses.append(status)
    finally:
        proc.terminate()
        proc.wait(30)
    assert statuses == [503, 200]


def test_tokenize_endpoint(deterministic_server: ServerProcess) -> None:
    assert post(deterministic_server, "/tokenize", {"content": "Hello"})["tokens"] == [HELLO]
    assert post(deterministic_server, "/detokenize", {"tokens": [HELLO]})["content"].strip() == "Hello"


def test_deterministic_greedy_output_is_known_in_advance(deterministic_server: ServerProcess) -> None:
    result = post(deterministic_server, "/completion",
                  {"prompt": "Hello", "n_predict": 8, "temperature": 0, "return_tokens": True})
    assert result["tokens"] == list(range(HELLO + 1, HELLO + 9))


def test_openai_completion_matches_the_known_tokens(deterministic_server: ServerProcess) -> None:
    expected = post(deterministic_server, "/detokenize", {"tokens": list(range(HELLO + 1, HELLO + 6))})
    result = client(deterministic_server).completions.create(
        model="det", prompt="Hello", max_tokens=5, temperature=0)
    assert result.choices[0].text == expected["content"]
    assert result.usage is not None and result.usage.completion_tokens == 5


def test_openai_chat_plain_and_streaming_agree(deterministic_server: ServerProcess) -> None:
    messages: Any = [{"role": "user", "content": "Hello"}]
    api = client(deterministic_server)
    plain = api.chat.completions.create(model="det", messages=messages, max_tokens=6, temperature=0)
    text = plain.choices[0].message.content
    assert text and plain.choices[0].finish_reason == "length"
    stream = api.chat.completions.create(model="det", messages=messages, max_tokens=6, temperature=0,
                                         stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) >= 2
    assert "".join(pieces) == text


def test_openai_chat_on_random_model(random_model: Path) -> None:
    with ServerProcess("-m", str(random_model), "-c", "512") as srv:
        srv.wait_healthy()
        result = client(srv).chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Hi there"}], max_tokens=8, seed=3)
    assert result.choices[0].finish_reason in {"length", "stop"}
    assert result.usage is not None and 0 < result.usage.completion_tokens <= 8


def test_bad_request_gets_an_http_error_body(deterministic_server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(deterministic_server).chat.completions.create(
            model="det", messages=[{"role": "user"}], max_tokens=2)  # type: ignore[typeddict-item]
    assert info.value.status_code == 400
