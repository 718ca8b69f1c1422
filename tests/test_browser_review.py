"""Review and Team tabs in Chromium: a reviewer accepts one label and rejects another, and a snapshot
(and an export) restricted to accepted labels holds the accepted one and not the rejected one. Once in
single-user local mode (the reviewer is the name typed in the Annotate tab, every tab shown), once in
accounts mode: an annotator and a reviewer log in, each in a fresh private context, the annotator
labels in the page and the reviewer reviews what they labelled."""
from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import select

from annotation.services import labelling
from storage.db import open_database, reading, transaction
from storage.models import PairwiseLabel, ReviewStatus, User
from storage.snapshots import SnapshotFilters, create_snapshot
from annotation.services.projects import find_project
from annotation.services.team import project_agreement
from tests.browser_support import (
    ServerProcess,
    browser_page,
    call_endpoint as call,
    goto_tab,
    launch_browser,
    pick_dropdown,
    serving,
    sign_in,
    wait_idle,
    wait_item,
    wait_status,
)
from tests.factories import make_items, make_project
from tests.test_browser_data import table_rows

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review-ui")
    db = open_database(folder / "ui.db")
    make_project(db, "rv", overlap=2)
    make_items(db, "rv", 3)
    rng = random.Random(0)
    for n in range(3):
        view = labelling.next_item(db, "rv", "ann", rng=rng)
        labelling.submit_pairwise(db, view, "a", rationale=f"reason number {n}")
    # A second annotator, for agreement: the same response as ann on two items, the other one on one.
    for n in range(3):
        view = labelling.next_item(db, "rv", "bob", rng=rng)
        first = "a" if view.responses[0].position == 0 else "b"
        labelling.submit_pairwise(db, view, first if n < 2 else "tie")
    with serving(db, folder) as proc:
        yield proc


def chosen_text(db, label_id: int) -> str:
    with reading(db) as s:
        label = s.get(PairwiseLabel, label_id)
        return (label.response_a if label.choice.value == "a" else label.response_b).text


def shown_label(page) -> int:
    return int(page.locator("#review-detail .ps-review").get_attribute("data-label"))


def test_reviewer_accepts_and_rejects_and_accepted_only_data_follows(server, tmp_path):
    with browser_page(server.url) as page:
        page.locator("#annotator textarea").fill("rev")
        page.locator("#annotator textarea").press("Tab")
        wait_idle(page)
        goto_tab(page, "review")
        page.wait_for_selector("#review-detail .ps-review")
        queue = table_rows(page.locator("#review-queue"))
        assert len(queue) == 6 and {row[0] for row in queue.values()} == {"ann", "bob"}
        page.wait_for_function("() => document.querySelector('#review-detail')?.innerText.includes('ann answered')")
        accepted = shown_label(page)
        detail = page.locator("#review-detail").inner_text()
        assert "ann answered A" in detail and "reason number" in detail and "Response B" in detail

        page.click("#review-accept")
        wait_status(page, f"Label {accepted} accepted", elem_id="review-status")
        page.wait_for_function(
            f"() => document.querySelector('#review-detail .ps-review')?.dataset.label !== '{accepted}'")
        rejected = shown_label(page)
        page.locator("#review-correction textarea").fill("left")
        page.click("#review-correct")
        wait_status(page, "a pairwise correction is one of a, b, tie or both_bad", elem_id="review-status")
        page.click("#review-reject")
        wait_status(page, f"Label {rejected} rejected", elem_id="review-status")
        assert len(table_rows(page.locator("#review-queue"))) == 4
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

        # The Data tab's export restricted to accepted labels: the accepted pair only, and its datasheet.
        goto_tab(page, "data")
        pick_dropdown(page, "export-project", "rv")
        page.locator("#export-accepted input[type=checkbox]").check()
        page.click("#export-button")
        wait_status(page, "1 rows exported", elem_id="export-status")
        links = page.locator("#export-file a[download]")
        assert links.count() == 3
        with page.expect_download() as download:
            links.first.click()
        path = tmp_path / "export.jsonl"
        download.value.save_as(path)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["chosen"] for r in rows] == [chosen_text(server.db, accepted)]

        # The Team tab: the annotator's figures, review outcomes, and a gold item marked there.
        goto_tab(page, "team")
        page.wait_for_function("() => document.querySelectorAll('#team-annotators [data-testid^=cell-]').length > 0")
        team = table_rows(page.locator("#team-annotators"))
        (ann,) = [row for key, row in team.items() if key[0] == "ann"]
        assert key_cells(ann) == {"accepted": "1", "rejected": "1", "not reviewed": "1"}
        alpha = project_agreement(server.db, "rv").alpha
        assert alpha.estimate is not None
        figures = page.locator("#team-agreement-figures").inner_text()
        assert f"Krippendorff's alpha: {alpha}" in figures and "Cohen's kappa" in figures
        page.locator("#gold-item textarea").fill(str(_item_of(server.db, accepted)))
        page.locator("#gold-answer textarea").fill("b")
        page.click("#gold-mark")
        wait_status(page, "is a gold item", elem_id="team-status")
        expect_gold = table_rows(page.locator("#gold-items"))
        assert [key[0] for key in expect_gold] == [str(_item_of(server.db, accepted))]
        page.screenshot(path=str(tmp_path / "team.png"), full_page=True)

    with reading(server.db) as s:
        statuses = {lab.id: lab.review_status for lab in s.scalars(select(PairwiseLabel))}
    assert statuses[accepted] == ReviewStatus.accepted and statuses[rejected] == ReviewStatus.rejected
    # A training snapshot restricted to accepted labels holds the accepted label, not the rejected one.
    with transaction(server.db) as s:
        snapshot = create_snapshot(s, find_project(s, "rv"), "pairs", tmp_path / "snap",
                                   SnapshotFilters(accepted_only=True))
    chosen = [json.loads(line)["chosen"][-1]["content"] for line in open(snapshot.path)]
    assert chosen == [chosen_text(server.db, accepted)]
    assert chosen_text(server.db, rejected) not in chosen


def key_cells(row: list[str]) -> dict[str, str]:
    """The review columns of a Team annotators row (row starts after the first two cells)."""
    from annotation.ui.team import ANNOTATOR_COLUMNS

    named = dict(zip(ANNOTATOR_COLUMNS[2:], row))
    return {k: named[k] for k in ("accepted", "rejected", "not reviewed")}


def _item_of(db, label_id: int) -> int:
    with reading(db) as s:
        return s.get(PairwiseLabel, label_id).item_id


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """Accounts mode: annotator ann and reviewer rev, both members of project p."""
    from annotation.auth.accounts import add_user

    folder = tmp_path_factory.mktemp("review-accounts")
    db = open_database(folder / "ui.db")
    make_project(db, "p")
    make_items(db, "p", 4)
    add_user(db, "ann", "annotator", "annotator password 1", projects=("p",))
    add_user(db, "rev", "reviewer", "reviewer password 1", projects=("p",))
    server = ServerProcess(["--db", str(folder / "ui.db"), "--no-worker", "--no-seed"], folder / "server.log",
                           ready_path="login")
    server.db = db
    yield server
    server.stop()


def test_logged_in_reviewer_accepts_what_a_logged_in_annotator_labelled(team_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p, block_third_party_cookies=True)
        # Each in a fresh context: no cookie shared with the other user's.
        annotator = sign_in(browser, team_server.url, "ann", "annotator password 1")
        labelled = []
        for _ in range(2):
            item_id = wait_item(annotator)
            annotator.wait_for_timeout(400)  # an item must be on screen 300 ms before its label (labelling)
            annotator.locator("#choice label").filter(has_text="A is better").click()
            annotator.click("#submit-pair")
            wait_status(annotator, f"saved \\(item {item_id}\\)")
            labelled.append(item_id)
        # An annotator is shown no Review tab and no review controls (the server refuses their calls all the same).
        expect(annotator.locator("#main-tabs button[role=tab][data-tab-id='review']")).to_have_count(0)
        expect(annotator.locator("#review-accept")).to_be_hidden()
        expect(annotator.locator("#review-queue")).to_be_hidden()

        reviewer = sign_in(browser, team_server.url, "rev", "reviewer password 1")
        goto_tab(reviewer, "review")
        reviewer.wait_for_selector("#review-detail .ps-review")
        assert "ann answered A" in reviewer.locator("#review-detail").inner_text()
        accepted = shown_label(reviewer)
        reviewer.click("#review-accept")
        wait_status(reviewer, f"Label {accepted} accepted", elem_id="review-status")
        reviewer.wait_for_function(
            f"() => document.querySelector('#review-detail .ps-review')?.dataset.label !== '{accepted}'")
        rejected = shown_label(reviewer)
        reviewer.click("#review-reject")
        wait_status(reviewer, f"Label {rejected} rejected", elem_id="review-status")
        reviewer.screenshot(path=str(tmp_path / "review-accounts.png"), full_page=True)
        browser.close()

    with reading(team_server.db) as s:
        labels = {lab.id: lab for lab in s.scalars(select(PairwiseLabel))}
        assert {lab.item_id for lab in labels.values()} == set(labelled)
        assert labels[accepted].review_status == ReviewStatus.accepted
        assert labels[rejected].review_status == ReviewStatus.rejected
        assert {s.get(User, lab.reviewer_id).name for lab in labels.values() if lab.reviewer_id} == {"rev"}
    with transaction(team_server.db) as s:
        snapshot = create_snapshot(s, find_project(s, "p"), "pairs", tmp_path / "snap",
                                   SnapshotFilters(accepted_only=True))
    chosen = [json.loads(line)["chosen"][-1]["content"] for line in open(snapshot.path)]
    assert chosen == [chosen_text(team_server.db, accepted)]


def test_review_and_team_endpoints_refuse_who_may_not_use_them(team_server):
    """Over HTTP, as a script would call them: the server decides, whatever the page shows."""
    import httpx

    with reading(team_server.db) as s:
        label_id = s.scalars(select(PairwiseLabel.id).order_by(PairwiseLabel.id)).first()
        before = {lab.id: (lab.review_status, lab.reviewer_id) for lab in s.scalars(select(PairwiseLabel))}
    assert label_id is not None, "runs after the browser test, which labels and reviews"
    url = team_server.url.rstrip("/")
    with httpx.Client(base_url=url, timeout=60) as anonymous:
        assert call(anonymous, "review_accept", ["x", "p", "all", label_id, ""])[0] == "http 401"
    clients = {}
    for name, password in (("ann", "annotator password 1"), ("rev", "reviewer password 1")):
        clients[name] = httpx.Client(base_url=url, timeout=60)
        assert clients[name].post("/login", data={"name": name, "password": password}).status_code == 303
    try:
        # The typed name ("rev") is ignored with accounts: ann is ann.
        assert call(clients["ann"], "review_accept", ["rev", "p", "all", label_id, ""]) == (
            "error", "your role (annotator) may not review labels")
        assert call(clients["ann"], "team_project", ["rev", "p"]) == (
            "error", "your role (annotator) may not see the team's statistics")
        assert call(clients["rev"], "mark_gold", ["rev", "p", "1", "a"]) == (
            "error", "your role (reviewer) may not create or change projects")
        event, outputs = call(clients["rev"], "review_reject", ["", "p", "all", label_id, ""])
        assert event == "complete" and "already reviewed" in json.dumps(outputs)
    finally:
        for client in clients.values():
            client.close()
    with reading(team_server.db) as s:
        assert {lab.id: (lab.review_status, lab.reviewer_id) for lab in s.scalars(select(PairwiseLabel))} == before
