"""Issue 11 item 6, labelling integrity: an item at its overlap refuses more labels, and the annotator
keeps what they typed; a closed browser session gives its lease back at once; a session cannot label
items faster than anyone reads them, nor run parallel submits on into the next items. Real SQLite,
the real server, real Chromium."""
from __future__ import annotations

import random
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from annotation.services import labelling as L
from storage.db import open_database, transaction
from storage.models import Item, ItemStatus, PairwiseLabel, Ranking, Rating
from tests.browser_support import browser_page, launch_browser, new_page, serving, start_annotating, wait_item, \
    wait_status
from tests.factories import make_items, make_project


def label_count(db, model) -> int:
    with transaction(db) as s:
        return s.scalar(select(func.count(func.distinct(model.user_id))).select_from(model))


def answer(db, view):
    return {"pairwise": lambda: L.submit_pairwise(db, view, "a", rationale="my reasons"),
            "listwise": lambda: L.submit_ranking(db, view, [[r.id] for r in view.responses], rationale="my reasons"),
            "pointwise": lambda: L.submit_ratings(db, view, [3] * len(view.responses), rationale="my reasons")
            }[view.mode]()


@pytest.mark.parametrize("mode, k, model", [("pairwise", 2, PairwiseLabel), ("listwise", 3, Ranking),
                                            ("pointwise", 2, Rating)])
def test_an_item_at_its_overlap_refuses_a_further_label(db, mode, k, model):
    make_project(db, "p", mode=mode, k=k, overlap=2)
    make_items(db, "p", 1)
    views = [L.next_item(db, "p", name, rng=random.Random(0)) for name in ("ann", "bob", "cat")]
    assert len({v.item_id for v in views}) == 1  # with overlap 2 all three are shown the item
    answer(db, views[0])
    answer(db, views[1])
    with pytest.raises(L.ItemClosed, match=r"already has all the labels it needs \(2 of 2\), so yours was not saved"):
        answer(db, views[2])
    assert label_count(db, model) == 2
    assert answer(db, views[1]).duplicate  # a retry of a label that was saved still says so


def test_a_label_sooner_than_anyone_reads_is_refused():
    view = L.ItemView(item_id=1, project="p", mode="pairwise", user="u", prompt_messages=[], is_chat=False,
                      responses=[])
    with pytest.raises(L.TooFast, match="was on screen for only"):
        L.check_dwell(view, L.DEFAULT_MIN_DWELL_MS)
    view.shown_at -= L.DEFAULT_MIN_DWELL_MS / 1000
    L.check_dwell(view, L.DEFAULT_MIN_DWELL_MS)


# --------------------------------------------------------------------------------------------------
# In the browser
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("integrity-ui")
    db = open_database(folder / "ui.db")
    make_project(db, "shared", overlap=2)
    make_items(db, "shared", 1)
    make_project(db, "solo")
    make_items(db, "solo", 3)
    with serving(db, folder, "--min-label-seconds", "1.5") as proc:
        yield proc


@pytest.fixture(scope="module")
def slow_reader_server(tmp_path_factory):
    # A minimum far above what five scripted clicks take even on a loaded machine (1.5 s was not,
    # at load average 14), so the refusals below are certain, not a race against the clock.
    folder = tmp_path_factory.mktemp("dwell-ui")
    db = open_database(folder / "ui.db")
    make_project(db, "quick")
    make_items(db, "quick", 3)
    with serving(db, folder, "--min-label-seconds", "6") as proc:
        yield proc


@pytest.mark.browser
def test_overlap_reached_is_said_and_the_rationale_is_kept(server):
    db = server.db
    with browser_page(server.url) as page:
        start_annotating(page, "zoe", "shared")
        item_id = wait_item(page)
        # Meanwhile two others finish the item.
        for name in ("x1", "x2"):
            L.submit_pairwise(db, L.next_item(db, "shared", name), "b")
        page.wait_for_timeout(1600)  # past the server's minimum time on screen
        page.locator("#choice label", has_text="A is better").click()
        page.locator("#rationale textarea").fill("A cites its source; B guesses.")
        page.click("#submit-pair")
        expect(page.locator("#submit-notice")).to_contain_text(
            f"item {item_id} already has all the labels it needs (2 of 2), so yours was not saved")
        expect(page.locator("#rationale textarea")).to_have_value("A cites its source; B guesses.")
        expect(page.locator("#choice input[value=a]")).to_be_checked()
        page.screenshot(path=str(server.log_path.parent / "overlap-reached.png"))
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(PairwiseLabel)) == 2
        assert s.get(Item, item_id).status == ItemStatus.done


@pytest.mark.browser
def test_a_closed_session_gives_its_lease_back_at_once(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        page = new_page(browser, server.url)
        start_annotating(page, "yan", "solo")
        held = wait_item(page)
        with transaction(server.db) as s:
            assert s.get(Item, held).leased_by is not None
        page.context.close()  # the annotator closes the tab
        deadline = time.time() + 10
        while time.time() < deadline:
            with transaction(server.db) as s:
                if s.get(Item, held).leased_by is None:
                    break
            time.sleep(0.2)
        browser.close()
    with transaction(server.db) as s:
        assert s.get(Item, held).leased_by is None, "the lease outlived the closed session"
    # Another annotator is served the item now, not in ten minutes.
    assert L.next_item(server.db, "solo", "someone else").item_id == held


@pytest.mark.browser
def test_a_submit_sooner_than_anyone_reads_is_refused_and_submitting_again_saves(slow_reader_server):
    server = slow_reader_server
    with browser_page(server.url) as page:
        start_annotating(page, "quinn", "quick")
        item_id = wait_item(page)
        page.locator("#choice label", has_text="A is better").click()
        for _ in range(5):  # Enter, as fast as a script: every one refused, nothing labelled
            page.click("#submit-pair")
        expect(page.locator("#submit-notice")).to_contain_text(f"item {item_id} was on screen for only")
        assert _labelled_by(server.db, "quinn") == []
        page.wait_for_timeout(6_100)
        page.click("#submit-pair")
        wait_status(page, f"saved \\(item {item_id}\\)")
    assert _labelled_by(server.db, "quinn") == [item_id]


def _labelled_by(db, name: str) -> list[int]:
    from storage.models import User

    with transaction(db) as s:
        return list(s.scalars(select(PairwiseLabel.item_id).join(User, PairwiseLabel.user_id == User.id)
                              .where(User.name == name)))
