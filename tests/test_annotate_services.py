"""The services behind the Annotate and Data tabs' rough edges (issue 12, items 6, 9, 11, 12),
against a real SQLite file: rank range, lease release, what undo gives back, the empty-queue
message and its counts, per-annotator statistics."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from annotation.services import labelling as L
from annotation.services.annotators import annotator_stats
from storage.db import transaction
from storage.errors import InputError
from storage.models import Item, Ranking, Response
from tests.factories import make_items, make_project


def test_a_rank_above_the_number_of_responses_is_refused(db):
    make_project(db, "r", mode="listwise", k=3)
    make_items(db, "r", 1)
    view = L.next_item(db, "r", "alice")
    for ranks in ([1, 2, 5], [0, 1, 2], [1, 4, 2]):
        with pytest.raises(InputError, match="rank from 1 to 3"):
            L.groups_from_ranks(view, ranks)
    assert L.groups_from_ranks(view, [3, 1, 1]) == [[view.responses[1].id, view.responses[2].id],
                                                   [view.responses[0].id]]
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Ranking)) == 0


def test_release_frees_the_item_the_old_name_held(db):
    make_project(db, "p")
    make_items(db, "p", 1)
    held = L.next_item(db, "p", "dave")
    assert L.next_item(db, "p", "dave1") is None  # leased to dave
    L.release(db, held)
    with transaction(db) as s:
        assert s.get(Item, held.item_id).leased_by is None
    assert L.next_item(db, "p", "dave1").item_id == held.item_id
    L.release(db, held)  # dave no longer holds it: dave1's lease stays
    with transaction(db) as s:
        assert s.get(Item, held.item_id).leased_by is not None


def test_undo_gives_back_the_choice_rationale_and_rewrite_in_the_new_sides(db):
    make_project(db, "p")
    make_items(db, "p", 2)
    view = L.next_item(db, "p", "alice")
    L.submit_pairwise(db, view, "b", strength=3, rationale="B is precise")
    undone = L.undo_last(db, "p", "alice")
    again = L.next_item(db, "p", "alice")
    assert again.item_id == view.item_id
    preferred = view.responses[1].id
    side = "a" if again.responses[0].id == preferred else "b"
    assert undone.choice_as_shown(again) == side
    assert (undone.strength, undone.rationale, undone.rewrite) == (3, "B is precise", None)

    L.submit_pairwise(db, again, "both_bad", rewrite="a better answer", rationale="both wrong")
    undone = L.undo_last(db, "p", "alice")
    assert (undone.choice_as_shown(again), undone.rewrite, undone.rationale) == ("both_bad", "a better answer",
                                                                                  "both wrong")


def test_undo_gives_back_ranks_and_ratings_per_card(db):
    make_project(db, "r", mode="listwise", k=3)
    make_items(db, "r", 1)
    view = L.next_item(db, "r", "alice")
    L.submit_ranking(db, view, L.groups_from_ranks(view, [2, 1, 2]), rationale="why")
    undone = L.undo_last(db, "r", "alice")
    assert undone.ranks_as_shown(view) == [2, 1, 2] and undone.rationale == "why"

    make_project(db, "pt", mode="pointwise", k=3)
    make_items(db, "pt", 1)
    view = L.next_item(db, "pt", "alice")
    L.submit_ratings(db, view, [4, 1, 5])
    assert L.undo_last(db, "pt", "alice").scores_as_shown(view) == [4, 1, 5]


def test_truncated_responses_are_marked(db):
    make_project(db, "p")
    (item_id,) = make_items(db, "p", 1)
    with transaction(db) as s:
        first = s.scalars(select(Response).where(Response.item_id == item_id, Response.position == 0)).one()
        first.finish_reason = "length"
    view = L.next_item(db, "p", "alice")
    assert {r.position: r.truncated for r in view.responses} == {0: True, 1: False}


def test_an_all_labelled_project_does_not_promise_more(db):
    make_project(db, "p")
    make_items(db, "p", 1)
    L.submit_pairwise(db, L.next_item(db, "p", "alice"), "a")
    progress = L.progress(db, "p", "alice")
    assert not progress.generating and progress.prompts_without_items == 0
    message = progress.nothing_for_you()
    assert "generator" not in message and "Every item of this project is labelled" in message


def test_a_skipped_item_is_counted_as_skipped_not_as_ready_for_you(db):
    make_project(db, "p")
    make_items(db, "p", 1)
    L.skip(db, L.next_item(db, "p", "alice"))
    progress = L.progress(db, "p", "alice")
    assert (progress.ready, progress.for_you, progress.skipped) == (1, 0, 1)
    assert "1 item(s) left are ones you skipped" in progress.nothing_for_you()
    assert L.progress(db, "p", "bob").for_you == 1


def test_prompts_waiting_with_room_in_the_queue_mean_the_generator_is_working(db):
    make_project(db, "p", prompts=2)
    progress = L.progress(db, "p", "alice")
    assert progress.generating and "generator is working on more" in progress.nothing_for_you()


def test_annotator_stats_count_labels_time_and_skips(db):
    make_project(db, "p")
    make_items(db, "p", 4)
    for _ in range(2):
        L.submit_pairwise(db, L.next_item(db, "p", "alice"), "a")
    L.skip(db, L.next_item(db, "p", "alice"))
    L.skip(db, L.next_item(db, "p", "bob"))
    make_project(db, "pt", mode="pointwise", k=3)
    make_items(db, "pt", 1)
    L.submit_ratings(db, L.next_item(db, "pt", "carol"), [1, 2, 3])

    alice, bob = annotator_stats(db, "p")
    assert (alice.annotator, alice.labels, alice.skips) == ("alice", 2, 1)
    assert alice.skip_rate == pytest.approx(1 / 3) and alice.median_seconds is not None and alice.median_seconds >= 0
    assert (bob.annotator, bob.labels, bob.skips, bob.skip_rate, bob.median_seconds) == ("bob", 0, 1, 1.0, None)
    (carol,) = annotator_stats(db, "pt")
    assert (carol.labels, carol.skips) == (1, 0)  # three ratings, one label
