"""The bundled web UI in a real browser (Debian's Chromium, driven by Selenium; no browser downloads)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LLAMA_SERVE_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Every message's text, then " Hello": the deterministic model answers with the tokens after "▁Hello".
TEMPLATE = "{%- for m in messages -%}{{ m['content'] }}{%- endfor -%}{{ ' Hello' }}"

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no browser: apt-get install chromium chromium-driver (scripts/test.sh does)")


@pytest.fixture
def ui_server(deterministic_model: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    template = tmp_path / "template.jinja"
    template.write_text(TEMPLATE)
    with ServerProcess("-m", str(deterministic_model), "-c", "512", "-n", "12",
                       "--chat-template-file", str(template), "--alias", "det") as srv:
        srv.wait_healthy()
        yield srv


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_ui_answers_a_typed_message_with_the_known_reply(ui_server: ServerProcess, browser: object) -> None:
    import openai
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    api = openai.OpenAI(base_url=ui_server.base_url + "/v1", api_key="none", max_retries=0)
    expected = api.chat.completions.create(model="det", messages=[{"role": "user", "content": "Hi"}],
                                           temperature=0).choices[0].message.content
    assert expected and expected.startswith("rell")  # token 15044, after "▁Hello" (15043)

    driver = browser
    driver.get(ui_server.base_url + "/")  # type: ignore[attr-defined]
    box = WebDriverWait(driver, 60).until(ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea")))
    box.send_keys("Hi")
    box.send_keys(Keys.ENTER)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "webui.png"
    try:
        WebDriverWait(driver, 90).until(lambda d: expected[:8] in d.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000


def test_root_serves_the_built_ui(ui_server: ServerProcess) -> None:
    import gzip
    import urllib.request

    request = urllib.request.Request(ui_server.base_url + "/", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # assets are stored gzip-compressed
        page = gzip.decompress(resp.read()).decode(errors="replace")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert "No web UI in this build" not in page, "built without npm: the placeholder page is embedded"


def test_no_ui_flag_still_works(deterministic_model: Path) -> None:
    import urllib.error
    import urllib.request

    with ServerProcess("-m", str(deterministic_model), "-c", "256", "--no-webui") as srv:
        srv.wait_healthy()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(srv.base_url + "/", timeout=10)
        assert info.value.code == 404
