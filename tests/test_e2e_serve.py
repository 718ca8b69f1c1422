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


def test_serve_on_the_embedded_model_and_label_in_the_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    db_path = tmp_path / "fresh.db"
    server = ServerProcess(["--db", str(db_path)], tmp_path / "server.log", timeout=240)
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
    db = open_database(db_path)
    with transaction(db) as s:
        label = s.scalars(select(PairwiseLabel)).one()
        assert label.choice == Choice.b and label.user.name == "erin"
        shown_b = s.get(Response, label.response_b_id)
        assert shown_b.model == "default" and shown_b.text.strip() and shown_b.seed is not None
