"""The whole remote path in a real browser: `app.py serve` whose background generator samples from a
real `transformers serve` on a loopback port, and an annotator labelling an item it generated."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from annotation.services.projects import get_settings, update_project
from annotation.services.prompts import seed_starter_project
from storage.db import open_database, transaction
from storage.models import Choice, Item, PairwiseLabel
from tests.browser_support import ServerProcess, browser_page, start_annotating, wait_status
from tests.openai_server import OpenAIServer, require_transformers_serve, sampling_copy

pytestmark = pytest.mark.browser


def test_an_item_generated_by_the_remote_server_is_labelled_in_the_browser(tiny_model_dir, tmp_path):
    require_transformers_serve()
    remote = OpenAIServer(sampling_copy(tiny_model_dir, tmp_path / "tiny-sampling"), tmp_path / "remote.log")
    try:
        db_path = tmp_path / "ui.db"
        db = open_database(db_path)
        seed_starter_project(db, model=remote.spec())
        starter = get_settings(db, "starter")
        starter.max_new_tokens, starter.queue_target = 8, 2
        update_project(db, starter)
        app = ServerProcess(["--db", str(db_path)], tmp_path / "server.log")  # with the background generator
        try:
            with browser_page(app.url) as page:
                start_annotating(page, "alice", "starter")
                wait_status(page, r"Item \d+\.", timeout=180_000)
                item_id = int(re.search(r"Item (\d+)\.", page.locator("#status").inner_text()).group(1))
                with transaction(db) as s:
                    responses = s.get(Item, item_id).responses
                    assert [r.model for r in responses] == [remote.spec()] * 2
                    words = {w for r in responses for w in re.findall(r"[A-Za-z]{3,}", r.text)}
                assert words, "the remote model's answers hold no word to look for"
                shown = page.locator("#resp-a").inner_text() + page.locator("#resp-b").inner_text()
                assert any(word in shown for word in words)  # the page shows the server's text
                page.screenshot(path=str(tmp_path / "remote-item.png"))

                page.locator("#prompt").click()  # out of the text fields, so the shortcut applies
                page.keyboard.press("2")
                page.keyboard.press("Enter")
                wait_status(page, f"saved \\(item {item_id}\\)")
            with transaction(db) as s:
                (label,) = s.scalars(select(PairwiseLabel)).all()
                assert (label.item_id, label.choice) == (item_id, Choice.b)
                assert label.user.name == "alice"
        finally:
            app.stop()
    finally:
        remote.stop()
