"""The Compare tab in the browser, on a tiny model and a LoRA adapter made here: two models side by
side on one prompt, a blind arena match whose names appear only after the vote, the vote in the
database with the order it was shown in, and the leaderboard showing it."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from storage.db import open_database, transaction
from storage.models import PairwiseLabel, Response, TrainedModel
from tests.browser_support import ServerProcess, browser_page, fill_number, goto_tab, pick_dropdown, wait_status
from tests.factories import make_project
from tests.test_arena import save_adapter

pytestmark = pytest.mark.browser

TUNED = "tiny-tuned"
ARENA_PARTS = ["#arena-status", "#arena-prompt-view", "#arena-card-a", "#arena-card-b", "#arena-reveal"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("compare-ui")
    db = open_database(folder / "ui.db")
    make_project(db, "arena", prompts=3)
    adapter = save_adapter(tiny_model_dir, folder / "tuned-adapter")
    with transaction(db) as s:
        s.add(TrainedModel(name=TUNED, kind="policy-adapter", path=str(adapter), base_model=str(tiny_model_dir),
                           metrics={}))
    proc = ServerProcess(["--db", str(folder / "ui.db"), "--no-worker", "--no-seed", "--model", str(tiny_model_dir),
                          "--runs", str(folder / "runs")], folder / "server.log")
    proc.db = db
    yield proc
    proc.stop()


@pytest.fixture
def page(server):
    with browser_page(server.url) as page:
        yield page


def arena_text(page) -> str:
    return "\n".join(page.locator(selector).inner_text() for selector in ARENA_PARTS)


def test_side_by_side_then_a_blind_vote_lands_and_ranks(page, server, tiny_model_dir, tmp_path):
    db = server.db
    base = tiny_model_dir.name
    goto_tab(page, "compare")
    fill_number(page, "cmp-max-new-tokens", 8)
    fill_number(page, "cmp-temperature", 1.0)

    # 1. Side by side: the base model and the adapter (both picked when the tab opens).
    expect(page.locator("#cmp-models")).to_contain_text(TUNED)
    page.locator("#cmp-prompt textarea").fill("Name a fruit.")
    page.click("#cmp-run")
    wait_status(page, "2 answers, seed 0", elem_id="cmp-status", timeout=120_000)
    columns = page.locator("#cmp-col-0").inner_text() + "\n" + page.locator("#cmp-col-1").inner_text()
    assert base in columns and TUNED in columns and "tokens" in columns
    # The tuned column's KL says it is an estimate from this sampled answer, and under which settings.
    tuned_column = page.locator("#cmp-col-0, #cmp-col-1").filter(has_text=TUNED)
    expect(tuned_column).to_contain_text(re.compile(
        r"KL to base ≈ \d+\.\d{4} nats/token, a k3 estimate from 1 sampled answer at temperature 1, top-p 0\.95, "
        r"at most 8 new tokens"))
    expect(page.locator("#cmp-col-0, #cmp-col-1").filter(has_text=base).filter(has_not_text=TUNED)) \
        .not_to_contain_text("KL to base")
    tuned_column.screenshot(path=str(tmp_path / "compare-kl-label.png"))

    # 2. Blind arena on a random pair and a held-out prompt of the project (the prompt box left empty).
    for selector in ("#arena-vote-a", "#arena-vote-b", "#arena-vote-tie", "#arena-vote-both-bad"):
        expect(page.locator(selector)).to_be_disabled()
    page.locator("#arena-annotator textarea").fill("voter")
    page.click("#arena-new")
    wait_status(page, "Which answer is better", elem_id="arena-status", timeout=120_000)
    expect(page.locator("#arena-vote-a")).to_be_enabled()
    assert page.locator("#arena-prompt textarea").input_value().startswith("prompt number")
    shown = arena_text(page)
    assert base not in shown and TUNED not in shown  # blind: no names before the vote
    answer_a = page.locator("#arena-card-a").inner_text()

    page.click("#arena-vote-a")
    wait_status(page, "Vote saved", elem_id="arena-status")
    expect(page.locator("#arena-reveal")).to_contain_text(TUNED)
    revealed_a = page.locator("#arena-reveal .arena-name-a").inner_text()
    revealed_b = page.locator("#arena-reveal .arena-name-b").inner_text()
    assert {revealed_a, revealed_b} == {base, TUNED}
    assert revealed_a in page.locator("#arena-card-a").inner_text()
    expect(page.locator("#arena-vote-a")).to_be_disabled()

    # The vote is a pairwise label: A = the left answer, shown_order = the item positions shown.
    with transaction(db) as s:
        label = s.scalars(select(PairwiseLabel)).one()
        a, b = s.get(Response, label.response_a_id), s.get(Response, label.response_b_id)
        assert label.choice.value == "a" and label.user.name == "voter" and label.time_taken_ms > 0
        assert label.shown_order == [a.position, b.position] and sorted(label.shown_order) == [0, 1]
        assert a.source == b.source == "arena" and a.text.strip()[:10] in answer_a
        assert (a.adapter is not None) == (revealed_a == TUNED)

    # 3. The leaderboard shows the vote: the winner ranked first with one win.
    board = page.locator("#board-table")
    expect(board).to_contain_text(TUNED)
    table = board.inner_text()
    assert table.index(revealed_a) < table.index(revealed_b)  # the winner is ranked first
    expect(page.locator("#board-note")).to_contain_text("1 vote")

    # Clear messages for bad picks, before anything is generated.
    pick_dropdown(page, "arena-model-1", TUNED)
    pick_dropdown(page, "arena-model-2", TUNED)
    page.click("#arena-new")
    wait_status(page, "same model is picked twice", elem_id="arena-status")
    expect(page.locator("#arena-vote-a")).to_be_disabled()
    page.locator("#cmp-models .token-remove").first.click()
    page.click("#cmp-run")
    wait_status(page, "pick at least two models", elem_id="cmp-status")
