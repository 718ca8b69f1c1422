"""Projects, Data, Compare, Models and Best-of-N tabs in Chromium (issue 12, items 8, 9, 12):
messages under the control that caused them, figures shown with their n, buttons enabled only with
something to act on, per-annotator progress and a progress bar per project."""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from annotation.services import arena, labelling
from storage.db import open_database, transaction
from storage.models import TrainedModel
from tests.browser_support import browser_page, goto_tab, pick_dropdown, serving, wait_status
from tests.factories import make_items, make_project

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data-ui")
    db = open_database(folder / "ui.db")
    make_project(db, "team")
    make_items(db, "team", 4)
    for _ in range(3):
        labelling.submit_pairwise(db, labelling.next_item(db, "team", "ann"), "a")
    labelling.skip(db, labelling.next_item(db, "team", "ben"))
    make_project(db, "votes")
    match = arena.new_match("votes", [{"role": "user", "content": "hi"}],
                            [arena.ArenaAnswer("base-one", None, "hello"), arena.ArenaAnswer("base-two", None, "hey")])
    arena.record_arena_vote(db, match, "voter", "a")
    run = folder / "rm-run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"method": "reward", "n_eval": 1, "n_train": 9}))
    with transaction(db) as s:
        s.add(TrainedModel(name="rm-small", kind="reward-model", path=str(run), base_model="tiny",
                           metrics={"eval/accuracy": 0.0}))
    with serving(db, folder) as proc:
        yield proc


@pytest.fixture
def page(server):
    with browser_page(server.url) as page:
        yield page


def gap_below(page, button: str, message: str) -> float:
    """Pixels from the bottom of `button` to the top of `message`."""
    b, m = page.locator(button).bounding_box(), page.locator(message).bounding_box()
    return m["y"] - (b["y"] + b["height"])


def table_rows(table) -> dict[tuple[str, str], list[str]]:
    """A gr.Dataframe's body as {(first cell, second cell): the rest}, read from its cells."""
    cells = table.evaluate("el => Array.from(el.querySelectorAll('[data-testid^=cell-]')).map("
                           "c => [c.dataset.testid, c.innerText.trim()])")
    grid: dict[int, dict[int, str]] = {}
    for testid, text in cells:
        _, row, col = testid.split("-")
        grid.setdefault(int(row), {})[int(col)] = text
    rows = [[r[c] for c in sorted(r)] for _, r in sorted(grid.items())]
    return {(r[0], r[1]): r[2:] for r in rows}


def test_project_messages_appear_under_their_buttons(page, server):
    goto_tab(page, "projects")
    page.locator("#setting-name textarea").fill("")
    page.click("#create-project")
    wait_status(page, "⚠️", elem_id="settings-report")
    assert 0 <= gap_below(page, "#create-project", "#settings-report") < 80
    page.locator("#setting-name textarea").fill("fresh")
    page.click("#create-project")
    wait_status(page, "Project fresh created", elem_id="settings-report")
    assert 0 <= gap_below(page, "#create-project", "#settings-report") < 80
    page.locator("#prompt-text textarea").fill("One prompt.")
    page.click("#add-prompts")
    wait_status(page, "Added 1 prompts", elem_id="prompts-report")
    assert 0 <= gap_below(page, "#add-prompts", "#prompts-report") < 80
    assert page.locator("#setup-report").inner_text().strip() == ""


def test_data_tab_shows_each_annotator_and_a_bar_per_project(page, server):
    goto_tab(page, "data")
    table = page.locator("#annotator-stats")
    expect(table).to_contain_text("100%")  # the rows are in (the header alone says "annotator")
    rows = table_rows(table)
    labels, seconds, skips, rate = rows[("team", "ann")]
    assert (labels, skips, rate) == ("3", "0", "0%") and float(seconds) >= 0
    assert rows[("team", "ben")] == ["0", "–", "1", "100%"]

    bar = page.locator(".ps-project-progress[data-project=team]")
    expect(bar).to_contain_text("team: 3 of 4 done (75%)")
    track, fill = bar.locator(".ps-bar").bounding_box(), bar.locator(".ps-bar-fill").bounding_box()
    assert fill["width"] == pytest.approx(0.75 * track["width"], abs=2)


def test_leaderboard_interval_and_held_out_accuracy_come_with_their_n(page, server):
    goto_tab(page, "compare")
    board = page.locator("#board-table")
    expect(board).to_contain_text("(n=1)")
    goto_tab(page, "models")
    expect(page.locator("#models-table")).to_contain_text("0% (n=1)")


def test_best_of_n_verdict_is_disabled_with_nothing_to_judge(page, server):
    goto_tab(page, "bon")
    expect(page.locator("#bon-verdict")).to_be_disabled()
    pick_dropdown(page, "bon-project", "team")
    expect(page.locator("#bon-verdict")).to_be_disabled()
