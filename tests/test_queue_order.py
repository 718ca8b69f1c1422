"""What to label next: the project's queue order (random, reward-model uncertainty, annotator
disagreement) on a real SQLite file, with leases and overlap unchanged, and the generator scoring
new responses with the project's reward model."""
from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

from annotation.generation import GenerationWorker, score_items
from annotation.services import labelling as L
from annotation.services.projects import ProjectSettings, create_project, get_settings, update_project
from annotation.services.prompts import add_text_prompts
from storage.db import transaction
from storage.errors import InputError
from storage.models import Item, Project, QueueOrder, Response
from tests.factories import make_items


def set_scores(db, item_id: int, scores: list[float | None]) -> None:
    with transaction(db) as s:
        for response, score in zip(s.get(Item, item_id).responses, scores):
            response.rm_score = score


def uncertainty_project(db, reward_dir, name="p", mode="pairwise", k=2, overlap=1, model="test-model") -> str:
    create_project(db, ProjectSettings(name=name, mode=mode, k=k, overlap=overlap, model=model, queue_target=0,
                                       queue_order="uncertainty", queue_reward_model=str(reward_dir)))
    return name


def served_order(db, project: str, user: str, n: int) -> list[int]:
    """The items an annotator is served, labelling each (a tie / all tied first) before the next."""
    order = []
    for _ in range(n):
        view = L.next_item(db, project, user, rng=random.Random(0))
        if view is None:
            break
        order.append(view.item_id)
        if view.mode == "pairwise":
            L.submit_pairwise(db, view, "tie")
        else:
            L.submit_ranking(db, view, [[r.id] for r in view.responses])
    return order


# ---------------------------------------------------------------------------------------------
# uncertainty
# ---------------------------------------------------------------------------------------------

def test_uncertainty_serves_the_smallest_reward_gap_first_and_unscored_last(db, tiny_reward_dir):
    uncertainty_project(db, tiny_reward_dir)
    ids = make_items(db, "p", 6)
    scores = [[1.0, 1.5], [0.2, 0.1], None, [-3.0, -1.0], [2.0, 2.3], [0.7, None]]  # gaps .5 .1 - 2 .3 -
    for item_id, pair in zip(ids, scores):
        if pair:
            set_scores(db, item_id, pair)
    assert served_order(db, "p", "ann", 6) == [ids[1], ids[4], ids[0], ids[3], ids[2], ids[5]]


def test_random_order_ignores_the_scores(db):
    create_project(db, ProjectSettings(name="p", model="test-model", queue_target=0))
    ids = make_items(db, "p", 3)
    set_scores(db, ids[2], [0.0, 0.0])
    assert served_order(db, "p", "ann", 3) == ids  # oldest first, as before


def test_uncertainty_for_rankings_uses_the_closest_adjacent_scores(db, tiny_reward_dir):
    uncertainty_project(db, tiny_reward_dir, mode="listwise", k=3)
    ids = make_items(db, "p", 3)
    set_scores(db, ids[0], [0.0, 1.0, 2.0])  # smallest adjacent gap 1.0
    set_scores(db, ids[1], [0.0, 5.2, 5.0])  # 0.2 (between the 2nd and 3rd, not adjacent by position)
    set_scores(db, ids[2], [3.0, 0.0, 1.5])  # 1.5
    assert served_order(db, "p", "ann", 3) == [ids[1], ids[0], ids[2]]


def test_an_item_already_shown_comes_back_before_a_closer_call(db, tiny_reward_dir):
    uncertainty_project(db, tiny_reward_dir)
    ids = make_items(db, "p", 3)
    for item_id, pair in zip(ids, [[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]):
        set_scores(db, item_id, pair)
    first = L.next_item(db, "p", "ann")
    assert first.item_id == ids[0]
    set_scores(db, ids[2], [0.0, 0.01])  # now the closest call, but the annotator has ids[0] on screen
    assert L.next_item(db, "p", "ann").item_id == ids[0]


def test_uncertainty_keeps_leases_safe_under_concurrent_annotators(db, tiny_reward_dir):
    uncertainty_project(db, tiny_reward_dir)
    ids = make_items(db, "p", 8)
    for n, item_id in enumerate(ids):
        set_scores(db, item_id, [0.0, 0.1 * (8 - n)])  # the newest items are the closest calls
    served: dict[str, int | None] = {}
    barrier = threading.Barrier(6)

    def take(user):
        barrier.wait()
        view = L.next_item(db, "p", user)
        served[user] = view.item_id if view else None

    threads = [threading.Thread(target=take, args=(f"ann{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = list(served.values())
    # Overlap 1: six annotators, six different items, and they are the six closest calls.
    assert len(set(taken)) == 6 and set(taken) == set(ids[2:])


def test_overlap_still_caps_labels_per_item_under_uncertainty(db, tiny_reward_dir):
    uncertainty_project(db, tiny_reward_dir, overlap=2)
    ids = make_items(db, "p", 2)
    set_scores(db, ids[0], [0.0, 3.0])
    set_scores(db, ids[1], [0.0, 0.1])
    assert served_order(db, "p", "ann1", 2) == [ids[1], ids[0]]
    assert served_order(db, "p", "ann2", 2) == [ids[1], ids[0]]
    assert L.next_item(db, "p", "ann3") is None  # both items have their two labels


# ---------------------------------------------------------------------------------------------
# disagreement
# ---------------------------------------------------------------------------------------------

def label_item(db, project, user, item_id, preference):
    """Have `user` label `item_id`: prefer item position 0/1, or 'tie' (skipping other items served first)."""
    while True:
        view = L.next_item(db, project, user, rng=random.Random(item_id))
        assert view is not None, f"item {item_id} was never served to {user}"
        if view.item_id != item_id:
            L.skip(db, view)
            continue
        choice = preference if preference == "tie" else ("a" if view.shown_order[0] == preference else "b")
        return L.submit_pairwise(db, view, choice)


def test_disagreement_serves_disputed_items_first(db):
    create_project(db, ProjectSettings(name="p", model="test-model", overlap=3, queue_target=0,
                                       queue_order="disagreement"))
    ids = make_items(db, "p", 5)
    # item 0: both prefer position 0 (agree); item 1: position 0 vs tie; item 2: position 0 vs 1
    # (shown on whatever sides); item 3: one label; item 4: none.
    for item_id, (first, second) in zip(ids, [(0, 0), (0, "tie"), (0, 1)]):
        label_item(db, "p", "ann1", item_id, first)
        label_item(db, "p", "ann2", item_id, second)
    label_item(db, "p", "ann1", ids[3], 1)
    with transaction(db) as s:
        assert L.disputed_item_ids(s, s.scalar(select(Project))) == [ids[1], ids[2]]
    assert served_order(db, "p", "ann3", 5) == [ids[1], ids[2], ids[0], ids[3], ids[4]]


def test_an_item_done_leaves_the_disputed_set(db):
    create_project(db, ProjectSettings(name="p", model="test-model", overlap=2, queue_target=0,
                                       queue_order="disagreement"))
    ids = make_items(db, "p", 2)
    label_item(db, "p", "ann1", ids[1], 0)
    label_item(db, "p", "ann2", ids[1], 1)  # the second label completes the item: done, not served
    with transaction(db) as s:
        assert L.disputed_item_ids(s, s.scalar(select(Project))) == []
    assert served_order(db, "p", "ann3", 2) == [ids[0]]


def test_rankings_disagree_when_some_pair_is_ordered_differently():
    assert not L._rankings_disagree([[1], [2], [3]], [[1], [2], [3]])
    assert L._rankings_disagree([[1], [2], [3]], [[1], [3], [2]])
    assert L._rankings_disagree([[1], [2], [3]], [[1], [2, 3]])  # ordered vs tied
    assert not L._rankings_disagree([[1], [2, 3]], [[1], [3, 2]])  # the same tie written in another order


def test_disagreement_for_rankings_and_ratings(db):
    create_project(db, ProjectSettings(name="r", mode="listwise", k=3, model="m", overlap=3, queue_target=0,
                                       queue_order="disagreement"))
    ids = make_items(db, "r", 2)
    rank = {"ann1": lambda v: [[r.id] for r in sorted(v.responses, key=lambda r: r.position)],
            "ann2": lambda v: [[r.id] for r in sorted(v.responses, key=lambda r: -r.position)]}
    for user, order in rank.items():
        view = L.next_item(db, "r", user)
        assert view.item_id == ids[0]
        L.submit_ranking(db, view, order(view))
    assert L.next_item(db, "r", "ann3").item_id == ids[0]

    create_project(db, ProjectSettings(name="s", mode="pointwise", k=1, model="m", overlap=3, queue_target=0,
                                       queue_order="disagreement"))
    ids = make_items(db, "s", 3)
    for user, scores in {"ann1": [5, 4, 3], "ann2": [4, 4, 1]}.items():  # 1 point apart: noise; 2: disagree
        for score in scores:
            L.submit_ratings(db, L.next_item(db, "s", user), [score])
    with transaction(db) as s:
        assert L.disputed_item_ids(s, s.scalar(select(Project).where(Project.name == "s"))) == [ids[2]]
    assert L.next_item(db, "s", "ann3").item_id == ids[2]


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, match", [
    (dict(queue_order="uncertainty"), "needs a reward model"),
    (dict(queue_order="uncertainty", queue_reward_model="/no/such/rm"), "is not a model this server can use"),
    (dict(queue_order="disagreement"), "overlap >= 2"),
    (dict(queue_order="loudest"), "unknown queue order"),
    (dict(queue_order="uncertainty", queue_reward_model="RM", mode="pointwise", k=1), "K must be >= 2"),
])
def test_queue_settings_are_refused_with_a_clear_message(db, tiny_reward_dir, settings, match):
    if settings.get("queue_reward_model") == "RM":
        settings["queue_reward_model"] = str(tiny_reward_dir)
    with pytest.raises(InputError, match=match):
        create_project(db, ProjectSettings(name="p", **settings))
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Project)) == 0


def test_a_policy_adapter_is_not_a_queue_reward_model(db, tmp_path):
    adapter = tmp_path / "dpo"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"task_type": "CAUSAL_LM"}')
    with pytest.raises(InputError, match="policy adapter, not a reward model"):
        create_project(db, ProjectSettings(name="p", queue_order="uncertainty", queue_reward_model=str(adapter)))


def test_saving_settings_round_trips_and_a_refused_update_changes_nothing(db, tiny_reward_dir):
    uncertainty_project(db, tiny_reward_dir, overlap=2)
    saved = get_settings(db, "p")
    assert (saved.queue_order, saved.queue_reward_model) == ("uncertainty", str(tiny_reward_dir))
    saved.queue_reward_model = None
    with pytest.raises(InputError, match="needs a reward model"):
        update_project(db, saved)
    assert get_settings(db, "p").queue_reward_model == str(tiny_reward_dir)
    saved.queue_order = "disagreement"
    update_project(db, saved)
    with transaction(db) as s:
        assert s.scalar(select(Project.queue_order)) == QueueOrder.disagreement


def test_a_new_queue_reward_model_clears_the_old_scores(db, tiny_reward_dir, tmp_path):
    import shutil

    uncertainty_project(db, tiny_reward_dir)
    (item_id,) = make_items(db, "p", 1)
    set_scores(db, item_id, [0.5, 1.0])
    settings = get_settings(db, "p")
    update_project(db, settings)  # saved unchanged: the scores stay
    with transaction(db) as s:
        assert [r.rm_score for r in s.get(Item, item_id).responses] == [0.5, 1.0]
    other = shutil.copytree(tiny_reward_dir, tmp_path / "rm-copy")
    settings.queue_reward_model = str(other)
    update_project(db, settings)
    with transaction(db) as s:
        assert [r.rm_score for r in s.get(Item, item_id).responses] == [None, None]


# ---------------------------------------------------------------------------------------------
# the generator scores new responses
# ---------------------------------------------------------------------------------------------

def test_generator_scores_new_items_with_the_queue_reward_model(db, tiny_model_dir, tiny_reward_dir):
    from alignment.training.reward import load_reward_model, score

    uncertainty_project(db, tiny_reward_dir, model=str(tiny_model_dir))
    settings = get_settings(db, "p")
    settings.queue_target, settings.max_new_tokens = 3, 6
    update_project(db, settings)
    add_text_prompts(db, "p", "one\ntwo\nthree\nfour")
    worker = GenerationWorker(db, batch_prompts=2)
    while worker.run_once():
        pass
    with transaction(db) as s:
        items = s.scalars(select(Item).order_by(Item.id)).all()
        rows = [(i.prompt.messages, r.text, r.rm_score) for i in items for r in i.responses]
    assert len(items) == 3 and all(score_ is not None for _, _, score_ in rows)
    model, tokenizer = load_reward_model(tiny_reward_dir, device="cpu")
    expected = score(model, tokenizer, [m for m, _, _ in rows], [t for _, t, _ in rows])
    assert [s_ for _, _, s_ in rows] == pytest.approx(expected, abs=1e-4)
    assert worker.status.warnings == {}


def test_scores_from_a_replaced_reward_model_are_dropped(db, tiny_reward_dir, tmp_path):
    import shutil

    from alignment.training.reward import load_reward_model

    uncertainty_project(db, tiny_reward_dir)
    (item_id,) = make_items(db, "p", 1)
    rm = load_reward_model(tiny_reward_dir, device="cpu")
    other = shutil.copytree(tiny_reward_dir, tmp_path / "rm-copy")
    settings = get_settings(db, "p")
    settings.queue_reward_model = str(other)
    update_project(db, settings)
    assert score_items(db, "p", rm, str(tiny_reward_dir)) == 0  # scored by the old one: not stored
    with transaction(db) as s:
        assert all(r.rm_score is None for r in s.get(Item, item_id).responses)
    assert score_items(db, "p", rm, str(other)) == 1


def test_a_broken_reward_model_never_stops_generation(db, tiny_model_dir, tiny_reward_dir):
    uncertainty_project(db, tiny_reward_dir, model=str(tiny_model_dir))
    settings = get_settings(db, "p")
    settings.queue_target, settings.max_new_tokens = 2, 4
    update_project(db, settings)
    add_text_prompts(db, "p", "one\ntwo")

    def broken(path):
        raise RuntimeError(f"cannot load {path}")

    worker = GenerationWorker(db, reward_loader=broken, retry_seconds=3600)
    worker.run_once()
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 2
        assert s.scalar(select(func.count()).select_from(Response).where(Response.rm_score.is_not(None))) == 0
    assert "cannot load" in worker.status.warnings["p"] and worker.status.errors == {}
    # Unscored items are still served, in the default order.
    assert L.next_item(db, "p", "ann") is not None


def test_a_relative_reward_model_folder_is_stored_absolute(db, tiny_reward_dir, monkeypatch):
    monkeypatch.chdir(tiny_reward_dir.parent)
    create_project(db, ProjectSettings(name="p", queue_order="uncertainty", queue_reward_model=tiny_reward_dir.name))
    assert get_settings(db, "p").queue_reward_model == str(tiny_reward_dir)  # the generator runs elsewhere
