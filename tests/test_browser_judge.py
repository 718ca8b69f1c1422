"""The LLM judge in the real UI: "Judge existing items" runs in the background with progress, and
the suggestion appears under the pair only once the project turns suggestions on, in the sides the
annotator is shown."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from annotation.services.projects import ProjectSettings, create_project
from storage.db import open_database, transaction
from storage.models import JudgeVerdict, PairwiseLabel, Response
from tests.browser_support import ServerProcess, browser_page, goto_tab, pick_dropdown, start_annotating
from tests.browser_support import wait_status
from tests.factories import make_items

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("browser-judge")
    db = open_database(folder / "ui.db")
    create_project(db, ProjectSettings(name="judged", model="test-model", queue_target=0,
                                       judge_model=str(tiny_model_dir)))
    make_items(db, "judged", 2)
    proc = ServerProcess(["--db", str(folder / "ui.db")], folder / "server.log")
    proc.db = db
    yield proc
    proc.stop()


@pytest.fixture
def page(server):
    with browser_page(server.url) as page:
        yield page


def item_on_screen(page) -> int:
    wait_status(page, r"Item \d+\.", timeout=30_000)
    return int(re.search(r"Item (\d+)\.", page.locator("#status").inner_text()).group(1))


def test_judge_existing_items_then_suggestions_only_when_turned_on(page, server):
    db = server.db
    goto_tab(page, "projects")
    pick_dropdown(page, "setup-project", "judged")
    wait_status(page, "0 items judged", elem_id="judge-report")
    page.click("#judge-existing")
    wait_status(page, "2 items judged by", elem_id="judge-report", timeout=120_000)
    with transaction(db) as s:
        verdicts = {v.item_id: v.choice.value for v in s.scalars(select(JudgeVerdict))}
    assert len(verdicts) == 2

    goto_tab(page, "annotate")
    start_annotating(page, "carol", "judged")
    first = item_on_screen(page)
    assert page.locator("#judge-suggestion").inner_text().strip() == ""  # off by default: blind work

    goto_tab(page, "projects")
    page.locator("#setting-judge_suggestions input[type=checkbox]").check()
    page.click("#save-project")
    wait_status(page, "Settings of judged saved", elem_id="settings-report")

    goto_tab(page, "annotate")
    page.locator("#choice input[value=tie]").check()
    page.click("#submit-pair")
    wait_status(page, f"saved \\(item {first}\\)")
    second = item_on_screen(page)
    shown = page.locator("#judge-suggestion").inner_text()
    assert "Judge suggests" in shown
    page.locator("#choice input[value=a]").check()
    page.click("#submit-pair")
    wait_status(page, f"saved \\(item {second}\\)")

    # What was suggested is the stored verdict (item order) seen through this annotator's sides.
    with transaction(db) as s:
        label = s.scalar(select(PairwiseLabel).where(PairwiseLabel.item_id == second))
        a_position = s.get(Response, label.response_a_id).position
    verdict = verdicts[second]
    if verdict == "tie":
        assert "a tie" in shown
    else:
        expected = "A" if (verdict == "a") == (a_position == 0) else "B"
        assert re.search(rf"Judge suggests: {expected}\b", shown), shown
