"""Running the real app in a subprocess and driving it with Playwright on Debian's Chromium."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def require_chromium() -> None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian chromium is not installed (bash .ci/setup --test installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpProcess:
    """A server subprocess with its log in a file, ready once `ready_url` answers 200
    (and, when given, `ready_marker` is in its log)."""

    def __init__(self, command: list[str], log_path: Path, ready_url: str, env: dict | None = None,
                 timeout: float = 180, ready_marker: str | None = None):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **OFFLINE_ENV, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(ready_url, ready_marker, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self, url: str, marker: str | None, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if marker is None or marker in self.log():
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class ServerProcess(HttpProcess):
    """`python app.py serve ...` on a free port, with its log in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None, timeout: float = 180,
                 ready_path: str = ""):
        # ready_path: "login" for a server with accounts, whose other pages ask for a login first.
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        if "--min-label-seconds" not in args:
            # A script labels as soon as the item is in the page, faster than the guard against
            # chained submits allows a person (0.3 s on screen): on a quiet machine the tests' own
            # clicks would be refused. The guard has its own tests, which set it explicitly.
            args = [*args, "--min-label-seconds", "0"]
        super().__init__([sys.executable, str(ROOT / "app.py"), "serve", "--port", str(self.port), *args], log_path,
                         self.url + ready_path, env=env, timeout=timeout, ready_marker="Running on local URL")


def users_cli(db_path, *args, password: str | None = None) -> subprocess.CompletedProcess:
    """`app.py users ...` with the password on standard input (not a terminal: read as one line)."""
    return subprocess.run([sys.executable, "app.py", "users", "--db", str(db_path), *args], cwd=ROOT,
                          input=None if password is None else password + "\n", capture_output=True, text=True,
                          timeout=120, env={**os.environ, **OFFLINE_ENV})


def launch_browser(playwright, block_third_party_cookies: bool = False):
    """Debian's Chromium; `block_third_party_cookies` as a private window does (a login must not need them)."""
    require_chromium()
    extra = ["--test-third-party-cookie-phaseout"] if block_third_party_cookies else []
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra])


def sign_in(browser, url: str, name: str, password: str):
    """A fresh browser context (no cookie shared with any other) logged in through the login page."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#log-in")
    expect(page.locator("#signed-in")).to_contain_text(f"Signed in as {name}")
    return page


def call_endpoint(client: httpx.Client, name: str, data: list, session: str | None = None) -> tuple[str, object]:
    """One call of a Gradio endpoint over HTTP, as a script would make it: ("complete", outputs),
    ("error", message) or ("http <status>", body)."""
    import json

    body = {"data": data, **({"session_hash": session} if session else {})}
    answer = client.post(f"/gradio_api/call/{name}", json=body)
    if answer.status_code != 200:
        return f"http {answer.status_code}", answer.text
    stream = client.get(f"/gradio_api/call/{name}/{answer.json()['event_id']}").text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, re.M)
    event, payload = [e for e in events if e[0] != "heartbeat"][-1]
    payload = json.loads(payload) if payload else None
    if event == "error" and isinstance(payload, dict):
        payload = payload.get("error")
    return event, payload


def new_page(browser, url: str):
    """A fresh browser context on the app; records any request that leaves localhost."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.external_requests = []
    page.on("request", lambda r: page.external_requests.append(r.url)
            if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
            and not r.url.startswith(("data:", "blob:")) else None)
    page.goto(url)
    # demo.load has run once the project list is filled in.
    page.wait_for_function("() => { const i = document.querySelector('#annotate-project input[role=combobox]');"
                           " return i && i.value !== ''; }")
    return page


@contextmanager
def browser_page(url: str):
    """A page on the app in a fresh Chromium; afterwards, checks that nothing left localhost."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        page = new_page(browser, url)
        yield page
        assert page.external_requests == [], f"the page reached outside localhost: {page.external_requests}"
        browser.close()


def fill_number(page, elem_id: str, value) -> None:
    """Type into a gr.Number and leave it, so its change event fires."""
    page.locator(f"#{elem_id} input[type=number]").fill(str(value))
    page.locator(f"#{elem_id} input[type=number]").press("Tab")


def goto_tab(page, tab_id: str) -> None:
    page.click(f"#main-tabs button[role=tab][data-tab-id='{tab_id}']")
    wait_idle(page)


def wait_idle(page, timeout: float = 60_000) -> None:
    """No Gradio event pending: every status tracker is hidden (after a short settle, since a tracker
    appears only once its event is sent)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=status-tracker]:not(.hide)').length === 0",
                           timeout=timeout)


def pick_dropdown(page, elem_id: str, value: str) -> None:
    """Choose `value` and leave the list closed. On a loaded machine the page can redraw the
    dropdown while the option is clicked, leaving its list open over the elements below it:
    Escape closes it, as a person would."""
    from playwright.sync_api import expect

    combo = page.locator(f"#{elem_id} input[role=combobox]")
    options = page.locator(f"#{elem_id} [role=option]")
    combo.click()
    page.locator(f"#{elem_id} [role=option][aria-label='{value}']").click()
    expect(combo).to_have_value(value)
    try:
        expect(options).to_have_count(0, timeout=5_000)  # the list closes a moment after the click
    except AssertionError:
        combo.press("Escape")
        expect(options).to_have_count(0)
        # leave the field as a click elsewhere would: a focused field does not open its list on
        # the next click
        combo.evaluate("input => input.blur()")


def status_text(page, elem_id: str = "status") -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_status(page, pattern: str, elem_id: str = "status", timeout: float = 60_000) -> None:
    from playwright.sync_api import expect

    expect(page.locator(f"#{elem_id}")).to_contain_text(re.compile(pattern), timeout=timeout)


def wait_item(page, timeout: float = 90_000) -> int:
    """Wait until the status names the item on screen and return its id. The id is read from the
    status's textContent, which is what the wait matched (its innerText can lack the words while
    Gradio draws its pending overlay, as after a reload)."""
    wait_status(page, r"Item \d+\.", timeout=timeout)
    return int(re.search(r"Item (\d+)\.", page.locator("#status").text_content()).group(1))


def start_annotating(page, name: str, project: str, key: str = "Tab") -> None:
    """Pick the project, then type the name and leave the field with `key`: with no name yet
    nothing is served, so the first item shown is from `project`."""
    pick_dropdown(page, "annotate-project", project)
    wait_status(page, "Enter your name")
    page.locator("#annotator textarea").fill(name)
    page.locator("#annotator textarea").press(key)


@contextmanager
def serving(db, folder: Path, *args: str):
    """`app.py serve` on `folder`/ui.db without the background generator or the starter project,
    with `db` kept on the process for the test's own queries; stopped afterwards."""
    proc = ServerProcess(["--db", str(folder / "ui.db"), "--no-worker", "--no-seed", *args], folder / "server.log")
    proc.db = db
    try:
        yield proc
    finally:
        proc.stop()
