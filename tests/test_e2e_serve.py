"""The README's first command, end to end: `app.py serve` on the embedded SmolLM2 with a fresh
database; the starter project is seeded, the background generator samples real responses, and an
annotator labels one in the browser with the keyboard."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from storage.db import open_database, transaction
from storage.models import Choice, PairwiseLabel, Response
from tests.browser_support import ServerProcess, launch_browser, new_page, start_annotating, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


# Loaded by every Python process of the server (web server and generator) through PYTHONPATH:
# records the address of every outgoing socket connection, so the test can assert that the app
# talks to nothing but this machine.
RECORD_CONNECTIONS = """
import os, socket
_log = os.environ["PREFSTUDIO_CONNECT_LOG"]
_connect = socket.socket.connect
def connect(self, address):
    with open(_log, "a") as f:
        f.write(repr(address) + "\\n")
    return _connect(self, address)
socket.socket.connect = connect
"""


def test_serve_on_the_embedded_model_and_label_in_the_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORD_CONNECTIONS)
    connections = tmp_path / "connections.log"
    env = {"PYTHONPATH": str(hook), "PREFSTUDIO_CONNECT_LOG": str(connections)}
    db_path = tmp_path / "fresh.db"
    server = ServerProcess(["--db", str(db_path)], tmp_path / "server.log", timeout=240, env=env)
    try:
        assert "127.0.0.1" in server.url
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = new_page(browser, server.url)
            start_annotating(page, "erin", "starter")
            wait_status(page, r"Item \d+\.", timeout=300_000)  # model load (or first conversion) + sampling
            assert page.locator("#resp-a").inner_text().strip() != "A"
            page.locator("#prompt").click()
            page.keyboard.press("2")
            page.keyboard.press("Enter")
            wait_status(page, "B is better saved")
            assert page.external_requests == []
            browser.close()
    finally:
        server.stop()
    # No telemetry, no hub: every connection the app opened went to this machine.
    addresses = connections.read_text().splitlines() if connections.exists() else []
    outside = [a for a in addresses if not a.startswith(("('127.", "('::1'", "'/", '"/', "('localhost'"))]
    assert outside == []
    db = open_database(db_path)
    with transaction(db) as s:
        label = s.scalars(select(PairwiseLabel)).one()
        assert label.choice == Choice.b and label.user.name == "erin"
        shown_b = s.get(Response, label.response_b_id)
        assert shown_b.model == "default" and shown_b.text.strip() and shown_b.seed is not None
