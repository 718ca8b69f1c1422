"""Blind arena votes against a real SQLite file: provenance, shown order, idempotent retries, bad input
that writes nothing, the leaderboard, and arena labels in training snapshots and exports."""
from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

from annotation.services import arena, catalogue, labelling
from annotation.services.prompts import add_text_prompts
from storage.db import transaction
from storage.errors import InputError
from storage.exporting import export_rows
from storage.models import (
    Choice,
    Item,
    ItemStatus,
    PairwiseLabel,
    Project,
    Prompt,
    Response,
    TrainedModel,
    User,
)
from storage.snapshots import create_snapshot
from tests.factories import make_items, make_project

BASE = "tiny-base"
ADAPTER = "/runs/job2/adapter"
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32}


def table_counts(db) -> dict[str, int]:
    with transaction(db) as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                for m in (Prompt, Item, Response, PairwiseLabel, User)}


def answer(adapter=None, text=None, label=None, model=BASE) -> arena.ArenaAnswer:
    return arena.ArenaAnswer(model=model, adapter=adapter, text=text or f"answer of {adapter or model}",
                             num_tokens=7, finish_reason="stop", label=label)


def match(project="p", prompt="What is a llama?", sides=None, shown_order=(1, 0)) -> arena.ArenaMatch:
    sides = sides or [answer(None, "base says hi", "base"), answer(ADAPTER, "tuned says hi", "dpo-job2")]
    return arena.ArenaMatch(project=project, prompt_messages=arena.typed_prompt(prompt), answers=sides,
                            shown_order=list(shown_order), sampling=dict(SAMPLING), seed=11)


def test_a_vote_lands_with_provenance_and_the_shown_order(db):
    make_project(db, "p")
    m = match(shown_order=(1, 0))  # the tuned answer (position 1) was on the left, as "A"
    receipt = arena.record_arena_vote(db, m, "alice", "a", time_taken_ms=4200)
    assert not receipt.duplicate
    with transaction(db) as s:
        label = s.get(PairwiseLabel, receipt.label_ids[0])
        item = s.get(Item, receipt.item_id)
        assert item.status == ItemStatus.done and item.prompt.source == "arena"
        assert item.prompt.messages == [{"role": "user", "content": "What is a llama?"}]
        base, tuned = item.responses
        assert (base.position, base.model, base.adapter, base.text) == (0, BASE, None, "base says hi")
        assert (tuned.position, tuned.model, tuned.adapter, tuned.text) == (1, BASE, ADAPTER, "tuned says hi")
        for r in (base, tuned):
            assert r.source == "arena" and r.seed == 11 and r.num_tokens == 7 and r.finish_reason == "stop"
            assert r.sampling["temperature"] == 0.7 and r.sampling["max_new_tokens"] == 32 and r.sampling["seed"] == 11
        assert tuned.sampling["shown_as"] == "dpo-job2"
        # A is the answer shown on the left; the choice is relative to it; shown_order = item positions.
        assert label.response_a_id == tuned.id and label.response_b_id == base.id
        assert label.shown_order == [1, 0] and label.choice == Choice.a
        assert label.user.name == "alice" and label.time_taken_ms == 4200 and label.client_token == m.token
        assert label.source.value == "human" and label.prompt_id == item.prompt_id
    # Done at birth: the annotation queue never serves an arena item.
    assert labelling.next_item(db, "p", "bob") is None


def test_an_existing_project_prompt_is_reused_and_a_typed_one_added_once(db):
    make_project(db, "p")
    add_text_prompts(db, "p", "Known prompt")
    arena.record_arena_vote(db, match(prompt="Known prompt"), "alice", "b")
    arena.record_arena_vote(db, match(prompt="New prompt"), "alice", "tie")
    arena.record_arena_vote(db, match(prompt="New prompt"), "alice", "both_bad")
    with transaction(db) as s:
        prompts = {p.messages[0]["content"]: p for p in s.scalars(select(Prompt))}
        assert set(prompts) == {"Known prompt", "New prompt"}
        assert prompts["Known prompt"].source == "typed" and prompts["New prompt"].source == "arena"
        assert s.scalar(select(func.count()).select_from(Item).where(Item.prompt_id == prompts["New prompt"].id)) == 2


def test_a_retry_with_the_same_client_token_is_a_no_op(db):
    make_project(db, "p")
    m = match()
    first = arena.record_arena_vote(db, m, "alice", "a")
    before = table_counts(db)
    again = arena.record_arena_vote(db, m, "alice", "a")
    assert again.duplicate and again.label_ids == first.label_ids and again.item_id == first.item_id
    assert table_counts(db) == before


def test_concurrent_double_submission_lands_once(db):
    make_project(db, "p")
    m = match()
    receipts, errors = [], []
    start = threading.Barrier(4)

    def vote():
        try:
            start.wait()
            receipts.append(arena.record_arena_vote(db, m, "alice", "b"))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=vote) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(not r.duplicate for r in receipts) == 1 and len({r.label_ids[0] for r in receipts}) == 1
    assert table_counts(db)["pairwise_labels"] == 1 and table_counts(db)["items"] == 1


@pytest.mark.parametrize("build, user, choice, message", [
    (lambda: match(project="nope"), "alice", "a", "unknown project 'nope'"),
    (lambda: match(sides=[answer(ADAPTER), answer(ADAPTER + "/")]), "alice", "a", "same model"),
    (lambda: match(sides=[answer(None), answer("")]), "alice", "a", "same model"),
    (lambda: match(), "alice", "left", "unknown vote 'left'"),
    (lambda: match(), "alice", "A", "unknown vote"),
    (lambda: match(shown_order=(0, 0)), "alice", "a", "shown order"),
    (lambda: match(sides=[answer(None)]), "alice", "a", "exactly two answers"),
    (lambda: match(), "  ", "a", "annotator name"),
    (lambda: match(project="ranks"), "alice", "a", "pick a pairwise project"),
])
def test_bad_input_leaves_the_database_unchanged(db, build, user, choice, message):
    make_project(db, "p", prompts=2)
    make_project(db, "ranks", mode="listwise", k=3)
    before = table_counts(db)
    with pytest.raises(InputError, match=message):
        arena.record_arena_vote(db, build(), user, choice)
    assert table_counts(db) == before


def test_bad_prompt_or_time_is_refused(db):
    make_project(db, "p")
    with pytest.raises(InputError, match="type a prompt"):
        arena.typed_prompt("   ")
    bad = match()
    bad.prompt_messages = [{"role": "assistant", "content": "hi"}]
    with pytest.raises(InputError, match="end with a user message"):
        arena.record_arena_vote(db, bad, "alice", "a")
    with pytest.raises(InputError, match="milliseconds"):
        arena.record_arena_vote(db, match(), "alice", "a", time_taken_ms=-5)
    assert table_counts(db)["pairwise_labels"] == 0


def test_votes_and_leaderboard_name_models_and_reflect_every_vote(db):
    make_project(db, "p")
    make_project(db, "q")
    with transaction(db) as s:
        s.add(TrainedModel(name="dpo-job2", kind="policy-adapter", path=ADAPTER, base_model=BASE, metrics={}))
    # Annotate-tab labels are not arena votes.
    make_items(db, "p", 1)
    labelling.submit_pairwise(db, labelling.next_item(db, "p", "alice"), "a")

    rng = random.Random(0)
    other = "/tmp/unknown-adapter"
    for i in range(6):  # the tuned model wins every time, whichever side it is shown on
        m = arena.new_match("p", arena.typed_prompt(f"prompt {i}"), [answer(None), answer(ADAPTER)], rng=rng)
        arena.record_arena_vote(db, m, "alice", "a" if m.shown_order[0] == 1 else "b")
    arena.record_arena_vote(db, match(project="q", sides=[answer(None), answer(other)]), "bob", "tie")
    arena.record_arena_vote(db, match(project="q"), "bob", "both_bad")

    votes = arena.arena_votes(db, "p")
    assert len(votes) == 6 and {v.model_a for v in votes} | {v.model_b for v in votes} == {BASE, "dpo-job2"}
    assert all((v.model_a if v.outcome == "a" else v.model_b) == "dpo-job2" for v in votes)
    assert len(arena.arena_votes(db)) == 8

    board = arena.arena_leaderboard(db, n_bootstrap=200)
    assert board.total_votes == 8
    assert board.models[0] == "dpo-job2" and set(board.models) == {"dpo-job2", BASE, f"{BASE} + unknown-adapter"}
    tuned, base = board.rating_of("dpo-job2"), board.rating_of(BASE)
    assert (tuned.wins, tuned.losses, tuned.both_bad, tuned.votes) == (6, 0, 1, 7)
    assert (base.wins, base.losses, base.ties, base.votes) == (0, 6, 1, 8)
    assert tuned.rating > base.rating and tuned.ci_low <= tuned.rating <= tuned.ci_high
    only_q = arena.arena_leaderboard(db, "q", n_bootstrap=0)
    assert only_q.total_votes == 2 and only_q.rating_of("dpo-job2").rating is None
    with pytest.raises(InputError, match="unknown project"):
        arena.arena_votes(db, "nope")


def test_the_same_adapter_name_on_two_bases_stays_two_models(db):
    make_project(db, "p")
    with transaction(db) as s:
        s.add(TrainedModel(name="dpo-job2", kind="policy-adapter", path=ADAPTER, base_model="base-1", metrics={}))
    arena.record_arena_vote(db, match(sides=[answer(ADAPTER, model="base-1"), answer(ADAPTER, model="base-2")]),
                            "alice", "a")
    names = {arena.arena_votes(db)[0].model_a, arena.arena_votes(db)[0].model_b}
    assert names == {"dpo-job2 (on base-1)", "dpo-job2 (on base-2)"}


def test_arena_labels_go_into_training_snapshots_and_exports(db, tmp_path):
    make_project(db, "p")
    arena.record_arena_vote(db, match(shown_order=(1, 0)), "alice", "b")  # B = the base answer wins
    arena.record_arena_vote(db, match(prompt="another"), "alice", "tie")  # no preference: left out
    with transaction(db) as s:
        project = s.scalar(select(Project).where(Project.name == "p"))
        rows = export_rows(s, project, "trl")
        assert rows == [{"prompt": "What is a llama?", "chosen": "base says hi", "rejected": "tuned says hi"}]
        snapshot = create_snapshot(s, project, "pairs", tmp_path / "snap")
        assert snapshot.counts["trl-chat"] == 1 and snapshot.counts["rows"] == 1
    assert "base says hi" in (tmp_path / "snap" / "pairs.jsonl").read_text()


def test_held_out_prompts_are_the_unlabelled_ones(db):
    make_project(db, "p", prompts=3)
    drawn = {arena.draw_heldout_prompt(db, "p", random.Random(seed)).text for seed in range(20)}
    assert drawn == {"prompt number 0", "prompt number 1", "prompt number 2"}
    arena.record_arena_vote(db, match(prompt="prompt number 1"), "alice", "a")
    assert [p.text for p in arena.heldout_prompts(db, "p")] == ["prompt number 0", "prompt number 2"]
    make_project(db, "empty")
    with pytest.raises(InputError, match="no prompt without labels"):
        arena.draw_heldout_prompt(db, "empty")


def test_new_match_randomises_sides():
    orders = {tuple(arena.new_match("p", arena.typed_prompt("x"), [answer(None), answer(ADAPTER)],
                                    rng=random.Random(seed)).shown_order) for seed in range(20)}
    assert orders == {(0, 1), (1, 0)}


# --------------------------------------------------------------------------------------------
# Matches with real (tiny) models: the base model and a LoRA adapter on it
# --------------------------------------------------------------------------------------------

def save_adapter(base_dir, out):
    """A LoRA adapter on ``base_dir`` with random B, so its answers differ from the base's."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base_dir)),
                           LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                                      task_type=TaskType.CAUSAL_LM, init_lora_weights=False))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory):
    return save_adapter(tiny_model_dir, tmp_path_factory.mktemp("arena-adapter") / "tuned")


@pytest.fixture
def with_models(db, tiny_model_dir, tiny_adapter):
    make_project(db, "p", prompts=2)
    with transaction(db) as s:
        s.add(TrainedModel(name="tuned-job7", kind="policy-adapter", path=str(tiny_adapter),
                           base_model=str(tiny_model_dir), metrics={}))
        s.add(TrainedModel(name="rm-job8", kind="reward-model", path="/nowhere/rm", base_model=str(tiny_model_dir),
                           metrics={}))
    return db


def test_model_options_are_the_base_and_the_trained_policy_adapters(with_models, tiny_model_dir, tiny_adapter):
    options = catalogue.model_options(with_models, str(tiny_model_dir))
    assert [(o.key, o.name, o.adapter) for o in options] == [
        (f"base:{tiny_model_dir}", tiny_model_dir.name, None), ("trained:1", "tuned-job7", str(tiny_adapter))]
    assert catalogue.reward_options(with_models) == [("rm-job8 (job None)", "/nowhere/rm")]
    with pytest.raises(InputError, match="pick the models"):
        catalogue.resolve_models(with_models, [], str(tiny_model_dir))
    with pytest.raises(InputError, match="unknown model 'trained:99'"):
        catalogue.resolve_models(with_models, ["trained:99"], str(tiny_model_dir))
    with pytest.raises(InputError, match="picked twice"):
        catalogue.resolve_models(with_models, ["trained:1", "trained:1"], str(tiny_model_dir))


def test_side_by_side_answers_with_one_seed(with_models, tiny_model_dir):
    from annotation.services import compare

    options = catalogue.resolve_models(with_models, [f"base:{tiny_model_dir}", "trained:1"], str(tiny_model_dir))
    params = compare.sampling_params(1.0, 0.9, 6, 5)
    base, tuned = compare.answer(options, arena.typed_prompt("Name a colour."), params, seed=5)
    assert (base.label, tuned.label) == (tiny_model_dir.name, "tuned-job7")
    assert base.seed == tuned.seed == 5 and base.kl_to_base == 0.0 and tuned.kl_to_base > 0
    assert 0 < base.num_tokens <= 6 and base.rm_score is None
    again = compare.answer(options, arena.typed_prompt("Name a colour."), params, seed=5)
    assert [a.text for a in again] == [base.text, tuned.text]
    with pytest.raises(InputError, match="temperature"):
        compare.sampling_params(-1, 0.9, 6, None)
    with pytest.raises(InputError, match="reward model .*/nowhere/rm.* is not a model this server can use"):
        compare.answer(options, arena.typed_prompt("x"), params, reward="/nowhere/rm")


def test_a_match_generates_blind_sides_and_its_vote_names_the_models(with_models, tiny_model_dir):
    from annotation.services import compare

    params = compare.sampling_params(1.0, 0.9, 6, None)
    keys = [f"base:{tiny_model_dir}", "trained:1"]
    m = arena.start_match(with_models, "p", keys, arena.typed_prompt("Say hi."), params,
                          default_model=str(tiny_model_dir), rng=random.Random(1))
    assert [a.label for a in m.answers] == [tiny_model_dir.name, "tuned-job7"]
    assert sorted(m.shown_order) == [0, 1] and m.seed is not None and m.sampling["max_new_tokens"] == 6
    arena.record_arena_vote(with_models, m, "alice", "a")
    vote = arena.arena_votes(with_models)[0]
    assert (vote.model_a, vote.outcome) == (m.shown[0].label, "a")
    with transaction(with_models) as s:
        responses = s.scalars(select(Response).where(Response.source == "arena").order_by(Response.position)).all()
        assert [r.adapter for r in responses] == [None, m.answers[1].adapter]
        assert all(r.seed == m.seed and r.sampling["temperature"] == 1.0 for r in responses)

    pair = arena.start_match(with_models, "p", [], arena.typed_prompt("Say hi."), params,
                             default_model=str(tiny_model_dir))
    assert {a.label for a in pair.answers} == {tiny_model_dir.name, "tuned-job7"}


def test_a_match_is_refused_before_any_model_loads(db, tiny_model_dir):
    from annotation.services import compare

    make_project(db, "p")
    make_project(db, "ranks", mode="listwise", k=3)
    params = compare.sampling_params(1.0, 0.9, 6, None)
    prompt = arena.typed_prompt("Say hi.")
    with pytest.raises(InputError, match="pick a pairwise project"):
        arena.start_match(db, "ranks", [], prompt, params, default_model=str(tiny_model_dir))
    with pytest.raises(InputError, match="random pair needs two models"):
        arena.start_match(db, "p", [], prompt, params, default_model=str(tiny_model_dir))
    with pytest.raises(InputError, match="pick two models"):
        arena.start_match(db, "p", [f"base:{tiny_model_dir}"], prompt, params, default_model=str(tiny_model_dir))


def test_side_by_side_scores_every_answer_with_a_reward_model(with_models, tiny_model_dir, tiny_reward_dir):
    from annotation.services import compare

    options = catalogue.resolve_models(with_models, [f"base:{tiny_model_dir}", "trained:1"], str(tiny_model_dir))
    answers = compare.answer(options, arena.typed_prompt("Name a colour."), compare.sampling_params(1.0, 0.9, 6, 1),
                             seed=1, reward=str(tiny_reward_dir))
    assert all(isinstance(a.rm_score, float) for a in answers)


def test_undo_in_the_annotate_tab_leaves_arena_votes_alone(db):
    """An arena vote is the annotator's latest label, but undo takes back their last queue label."""
    from annotation.services import labelling

    from tests.factories import make_items

    make_project(db, "p")
    make_items(db, "p", 1)
    queued = labelling.submit_pairwise(db, labelling.next_item(db, "p", "alice"), "a")
    vote = arena.record_arena_vote(db, match(), "alice", "b")
    undone = labelling.undo_last(db, "p", "alice")
    assert undone is not None and undone.item_id == queued.item_id
    assert labelling.undo_last(db, "p", "alice") is None  # only the arena vote is left: untouched
    with transaction(db) as s:
        assert s.get(PairwiseLabel, vote.label_ids[0]) is not None
        assert s.get(Item, vote.item_id).status == ItemStatus.done
