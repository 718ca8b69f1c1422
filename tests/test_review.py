"""Review, accepted-only snapshots and exports, and gold items, against a real database."""
from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import func, select

from annotation.services import gold, review
from annotation.services import labelling as L
from annotation.services.data import export_labels
from annotation.services.projects import find_project
from storage.db import reading, transaction
from storage.errors import InputError
from storage.models import Item, PairwiseLabel, Rating, ReviewStatus
from storage.snapshots import SnapshotFilters, create_snapshot
from tests.factories import make_items, make_project

pytestmark = pytest.mark.databases


def label_pairs(db, project: str, annotator: str, choices: list[str], seed: int = 0) -> list[int]:
    """Label the next items as `annotator`, one choice each (sides as shown); returns the label ids."""
    rng = random.Random(seed)
    ids = []
    for choice in choices:
        view = L.next_item(db, project, annotator, rng=rng)
        ids.append(L.submit_pairwise(db, view, choice, rationale=f"{annotator} says {choice}").label_ids[0])
    return ids


def chosen_texts(db, project: str, tmp_path, **filters) -> list[str]:
    out = tmp_path / f"snap-{len(list(tmp_path.iterdir()))}"
    with transaction(db) as s:
        create_snapshot(s, find_project(s, project), "pairs", out, SnapshotFilters(**filters), min_rows=0)
    return [row["chosen"][-1]["content"] for row in map(json.loads, (out / "pairs.jsonl").read_text().splitlines())]


def test_review_queue_shows_labels_with_rationale_and_time(db):
    make_project(db, "p")
    make_items(db, "p", 3)
    label_pairs(db, "p", "ann", ["a", "b"])
    rows = review.review_queue(db, "p")
    assert [r.annotator for r in rows] == ["ann", "ann"]
    assert rows[0].answer == "A" and rows[0].rationale == "ann says a" and rows[0].seconds is not None
    assert rows[0].status == "submitted" and len(rows[0].responses) == 2
    assert review.review_queue(db, "p", reviewer="ann") == []  # nobody reviews their own labels


def test_accept_reject_correct_and_accepted_only_snapshot(db, tmp_path):
    make_project(db, "p")
    make_items(db, "p", 4)
    accepted, rejected, corrected, pending = label_pairs(db, "p", "ann", ["a", "a", "a", "a"])
    review.accept(db, "p", accepted, "rev")
    review.reject(db, "p", rejected, "rev")
    row = review.correct(db, "p", corrected, "rev", "b")
    assert row.status == "corrected" and row.correction == "B" and row.answer == "A" and row.reviewer == "rev"

    with reading(db) as s:
        labels = {label.id: label for label in s.scalars(select(PairwiseLabel))}
        texts = {lid: {"a": labels[lid].response_a.text, "b": labels[lid].response_b.text} for lid in labels}
        assert labels[corrected].choice.value == "a"  # the annotator's answer is kept
        assert labels[accepted].reviewed_at is not None and labels[pending].review_status == ReviewStatus.submitted

    everything = chosen_texts(db, "p", tmp_path)
    assert len(everything) == 4 and texts[corrected]["b"] in everything  # the correction counts
    only = chosen_texts(db, "p", tmp_path, accepted_only=True)
    assert sorted(only) == sorted([texts[accepted]["a"], texts[corrected]["b"]])
    assert texts[rejected]["a"] not in only and texts[pending]["a"] not in only


def test_verdicts_are_final_and_refused_with_clear_messages(db):
    make_project(db, "p")
    make_items(db, "p", 2)
    first, second = label_pairs(db, "p", "ann", ["a", "tie"])
    review.accept(db, "p", first, "rev")
    with pytest.raises(InputError, match="already reviewed \\(accepted by rev\\)"):
        review.reject(db, "p", first, "other")
    with pytest.raises(InputError, match="has no label 999"):
        review.accept(db, "p", 999, "rev")
    with pytest.raises(InputError, match="your own"):
        review.accept(db, "p", second, "ann")
    with pytest.raises(InputError, match="already said tie"):
        review.correct(db, "p", second, "rev", "tie")
    with pytest.raises(InputError, match="a, b, tie or both_bad"):
        review.correct(db, "p", second, "rev", "c")
    make_project(db, "q")
    with pytest.raises(InputError, match="project 'q' has no label"):
        review.accept(db, "q", second, "rev")  # a label of another project
    with reading(db) as s:
        assert s.get(PairwiseLabel, second).review_status == ReviewStatus.submitted


def test_undo_refuses_a_reviewed_label(db):
    make_project(db, "p")
    make_items(db, "p", 1)
    (label,) = label_pairs(db, "p", "ann", ["b"])
    review.accept(db, "p", label, "rev")
    with pytest.raises(InputError, match="already reviewed"):
        L.undo_last(db, "p", "ann")
    with reading(db) as s:
        assert s.get(PairwiseLabel, label) is not None


def test_listwise_correction_is_in_the_order_the_annotator_saw(db, tmp_path):
    make_project(db, "l", mode="listwise", k=3)
    make_items(db, "l", 1)
    view = L.next_item(db, "l", "ann", rng=random.Random(3))
    receipt = L.submit_ranking(db, view, L.groups_from_ranks(view, [1, 2, 3]))
    row = review.correct(db, "l", receipt.label_ids[0], "rev", "3, 2, 1")
    assert row.answer == "ranks 1, 2, 3" and row.correction == "3, 2, 1"
    assert row.responses == [r.text for r in view.responses]
    out = tmp_path / "listwise.jsonl"
    export_labels(db, "l", "listwise", out, accepted_only=True)
    exported = json.loads(out.read_text().splitlines()[0])
    assert exported["completions"] == [r.text for r in reversed(view.responses)]  # best first, corrected


def test_pointwise_submission_is_reviewed_as_one(db, tmp_path):
    make_project(db, "r", mode="pointwise", k=2)
    make_items(db, "r", 1)
    view = L.next_item(db, "r", "ann", rng=random.Random(0))
    L.submit_ratings(db, view, [4, 2])
    (row,) = review.review_queue(db, "r")
    by_position = sorted(view.responses, key=lambda r: r.position)
    scores = {r.id: s for r, s in zip(view.responses, [4, 2])}
    assert row.ranks == [scores[r.id] for r in by_position]
    with pytest.raises(InputError, match="score for each of the 2"):
        review.correct(db, "r", row.label_id, "rev", "5")
    review.correct(db, "r", row.label_id, "rev", "5, 5")
    with reading(db) as s:
        ratings = s.scalars(select(Rating)).all()
        assert {r.review_status for r in ratings} == {ReviewStatus.corrected}
        assert sorted(r.effective_score for r in ratings) == [5, 5] and sorted(r.score for r in ratings) == [2, 4]
    out = tmp_path / "ratings.jsonl"
    assert export_labels(db, "r", "ratings", out, accepted_only=True).rows == 2
    assert {json.loads(line)["rating"] for line in out.read_text().splitlines()} == {5}


def test_nothing_accepted_yet_refuses_an_accepted_only_export(db, tmp_path):
    make_project(db, "p")
    make_items(db, "p", 1)
    label_pairs(db, "p", "ann", ["a"])
    with pytest.raises(InputError, match="no accepted labels to export"):
        export_labels(db, "p", "trl", tmp_path / "x.jsonl", accepted_only=True)
    assert not (tmp_path / "x.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# Gold items
# ---------------------------------------------------------------------------------------------

def test_gold_items_are_served_to_everyone_and_accuracy_is_counted(db):
    make_project(db, "g")  # overlap 1: a regular item goes to one annotator only
    ids = make_items(db, "g", 4)
    gold.mark_gold(db, "g", ids[0], "a")  # the first response (position 0) is better
    with pytest.raises(InputError, match="a \\(the first response\\), b, tie or both_bad"):
        gold.mark_gold(db, "g", ids[1], "left")
    with pytest.raises(InputError, match="has no item 999"):
        gold.mark_gold(db, "g", 999, "a")

    served = {}
    for name in ("ann", "bob", "cy"):
        view = L.next_item(db, "g", name, rng=random.Random(0))
        while view is not None and view.item_id != ids[0]:
            L.submit_pairwise(db, view, "tie")
            view = L.next_item(db, "g", name, rng=random.Random(0))
        served[name] = view is not None
        if view is not None:
            # ann answers right, bob wrong, cy says tie: sides as shown, so pick by response position.
            side_of_first = "a" if view.responses[0].position == 0 else "b"
            answer = {"ann": side_of_first, "bob": "b" if side_of_first == "a" else "a", "cy": "tie"}[name]
            L.submit_pairwise(db, view, answer)
    assert served == {"ann": True, "bob": True, "cy": True}  # the gold item despite overlap 1
    accuracy = gold.gold_accuracy(db, "g")
    assert {n: (a.items, a.units, a.accuracy) for n, a in accuracy.items()} == {
        "ann": (1, 1, 1.0), "bob": (1, 1, 0.0), "cy": (1, 1, 0.0)}
    assert [g.item_id for g in gold.gold_items(db, "g")] == [ids[0]]


def test_gold_share_mixes_gold_items_into_the_queue(db):
    make_project(db, "g")
    ids = make_items(db, "g", 40)
    gold_ids = set(ids[:20])
    for item_id in gold_ids:
        gold.mark_gold(db, "g", item_id, "b")
    with transaction(db) as s:
        find_project(s, "g").gold_share = 0.25
    rng = random.Random(5)
    first_twenty = []
    for _ in range(20):
        view = L.next_item(db, "g", "ann", rng=rng)
        first_twenty.append(view.item_id in gold_ids)
        L.submit_pairwise(db, view, "a")
    # About a quarter gold while both kinds are left (binomial(20, 0.25): 1..11 holds with p > 0.99).
    assert 1 <= sum(first_twenty) <= 11


def test_listwise_and_pointwise_gold_answers_are_checked_and_compared_per_response(db):
    make_project(db, "l", mode="listwise", k=3)
    (item,) = make_items(db, "l", 1)
    with pytest.raises(InputError, match="rank from 1 to 3"):
        gold.mark_gold(db, "l", item, "1, 2, 4")
    gold.mark_gold(db, "l", item, "1 2 3")
    view = L.next_item(db, "l", "ann", rng=random.Random(2))
    # ann swaps the last two: positions 0 right, 1 and 2 wrong -> 1/3.
    rank_of_position = {0: 1, 1: 3, 2: 2}
    L.submit_ranking(db, view, L.groups_from_ranks(view, [rank_of_position[r.position] for r in view.responses]))
    acc = gold.gold_accuracy(db, "l")["ann"]
    assert (acc.units, acc.correct) == (3, 1)

    make_project(db, "r", mode="pointwise", k=2)
    (item,) = make_items(db, "r", 1)
    with pytest.raises(InputError, match="whole number from 1 to 5"):
        gold.mark_gold(db, "r", item, "6, 1")
    gold.mark_gold(db, "r", item, [5, 1])
    view = L.next_item(db, "r", "ann", rng=random.Random(2))
    L.submit_ratings(db, view, [{0: 5, 1: 2}[r.position] for r in view.responses])
    acc = gold.gold_accuracy(db, "r")["ann"]
    assert (acc.units, acc.correct) == (2, 1)
    gold.unmark_gold(db, "r", item)
    with reading(db) as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.gold_answer.is_not(None))) == 1


# ---------------------------------------------------------------------------------------------
# Team figures and the datasheet
# ---------------------------------------------------------------------------------------------

def test_team_report_and_datasheet_beside_an_export(db, tmp_path):
    from annotation.services.team import team_report

    make_project(db, "t", overlap=2)
    ids = make_items(db, "t", 3)
    gold.mark_gold(db, "t", ids[2], "a")
    # Both annotators label every item, always the response at position 0: they agree throughout.
    for name in ("ann", "bob"):
        rng = random.Random(1)
        view = L.next_item(db, "t", name, rng=rng)
        while view is not None:
            L.submit_pairwise(db, view, "a" if view.responses[0].position == 0 else "b")
            view = L.next_item(db, "t", name, rng=rng)
    first = review.review_queue(db, "t", reviewer="rev")[0]
    review.accept(db, "t", first.label_id, "rev")

    report = team_report(db, "t", samples=50)
    rows = {r.annotator: r for r in report.annotators}
    assert rows["ann"].labels == 3 and rows["ann"].with_majority == 1.0 and rows["ann"].gold_accuracy == 1.0
    assert report.agreement.units == 3 and report.agreement.pairs[0].agreement == 1.0
    assert sum(r.reviews["accepted"] for r in rows.values()) == 1

    out = tmp_path / "t.jsonl"
    result = export_labels(db, "t", "trl", out, accepted_only=True)
    assert result.rows == 1
    sheet = json.loads((tmp_path / "t.datasheet.json").read_text())
    assert sheet["filters"] == {"accepted_only": True} and sheet["rows"] == 1 and sheet["gold_items"] == 1
    assert {a["annotator"]: a["labels"] for a in sheet["annotators"]} == {"ann": 3, "bob": 3}
    markdown = (tmp_path / "t.DATASHEET.md").read_text()
    assert "| ann | 3 |" in markdown and "Krippendorff's alpha" in markdown and "accepted_only: True" in markdown
    assert result.datasheet == [tmp_path / "t.DATASHEET.md", tmp_path / "t.datasheet.json"]


def test_cli_export_accepted_only_writes_the_datasheet(tmp_path):
    from storage.db import open_database
    from tests.test_cli import app

    path = tmp_path / "cli.db"
    db = open_database(path)
    make_project(db, "p")
    make_items(db, "p", 2)
    keep, drop = label_pairs(db, "p", "ann", ["a", "b"])
    review.accept(db, "p", keep, "rev")
    review.reject(db, "p", drop, "rev")
    db.engine.dispose()
    out = tmp_path / "accepted.jsonl"
    done = app("export", out, "--db", path, "--project", "p", "--accepted-only")
    assert done.returncode == 0, done.stderr
    assert "wrote 1 trl rows" in done.stdout and "accepted.DATASHEET.md" in done.stdout
    assert len(out.read_text().splitlines()) == 1
    sheet = json.loads((tmp_path / "accepted.datasheet.json").read_text())
    (ann,) = sheet["annotators"]
    assert ann["reviews"] == {"submitted": 0, "accepted": 1, "rejected": 1, "corrected": 0}


def test_two_reviewers_at_once_one_verdict_wins(db):
    import threading

    make_project(db, "p")
    make_items(db, "p", 1)
    (label,) = label_pairs(db, "p", "ann", ["a"])
    outcomes: dict[str, str] = {}
    start = threading.Barrier(2)

    def act(reviewer: str, verdict) -> None:
        start.wait()
        try:
            verdict(db, "p", label, reviewer)
            outcomes[reviewer] = "done"
        except InputError as exc:
            outcomes[reviewer] = str(exc)

    threads = [threading.Thread(target=act, args=("rev1", review.accept)),
               threading.Thread(target=act, args=("rev2", review.reject))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o == "done" for o in outcomes.values()) == [False, True]
    winner = next(name for name, o in outcomes.items() if o == "done")
    loser = next(o for o in outcomes.values() if o != "done")
    assert "already reviewed" in loser and f"by {winner}" in loser
    with reading(db) as s:
        stored = s.get(PairwiseLabel, label)
        assert stored.review_status == (ReviewStatus.accepted if winner == "rev1" else ReviewStatus.rejected)


def test_a_datasets_export_holds_its_datasheet_and_still_loads(db, tmp_path):
    from datasets import load_from_disk

    make_project(db, "p")
    make_items(db, "p", 2)
    keep, _ = label_pairs(db, "p", "ann", ["a", "b"])
    review.accept(db, "p", keep, "rev")
    folder = tmp_path / "pairs"
    result = export_labels(db, "p", "trl", folder, as_datasets=True, accepted_only=True)
    assert result.datasheet == [folder / "DATASHEET.md", folder / "datasheet.json"]
    assert json.loads((folder / "datasheet.json").read_text())["rows"] == 1
    assert len(load_from_disk(str(folder))) == 1
