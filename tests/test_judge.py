"""LLM-as-judge: the verdict read from a real tiny model's logits, stored apart from human labels,
suggested only when the project turns suggestions on, and compared with the annotators."""
from __future__ import annotations

import random

import pytest
import torch
from sqlalchemy import func, select

from alignment.chat import render_prompt
from alignment.judge import DEFAULT_TIE_MARGIN, Verdict, judge_pair, judging_prompt, letter_token_ids
from annotation.services import judge as J
from annotation.services import labelling as L
from annotation.services.projects import ProjectSettings, create_project, get_settings, update_project
from storage.db import transaction
from storage.errors import InputError
from storage.exporting import export_rows
from storage.models import Choice, Item, JudgeVerdict, PairwiseLabel, Project
from storage.snapshots import create_snapshot
from tests.factories import make_items, make_project

CONVERSATION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tiny_judge(tiny_model_dir):
    from alignment.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


# ---------------------------------------------------------------------------------------------
# alignment.judge
# ---------------------------------------------------------------------------------------------

def test_verdict_is_a_probability_and_deterministic(tiny_judge):
    first = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "Paris.", "London, I think.")
    again = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "Paris.", "London, I think.")
    assert isinstance(first, Verdict) and first == again
    # The verdict is the mean of both presentation orders, and the swapped order judged alone is
    # the same pair shown the other way round (b as A): its P("A") is 1 - prob_a_swapped.
    assert first.prob_a == pytest.approx((first.prob_a_first + first.prob_a_swapped) / 2, abs=1e-12)
    swapped = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "London, I think.", "Paris.")
    assert swapped.prob_a_first == pytest.approx(1 - first.prob_a_swapped, abs=1e-6)
    assert swapped.prob_a == pytest.approx(1 - first.prob_a, abs=1e-6)
    expected = "tie" if abs(first.prob_a - 0.5) < DEFAULT_TIE_MARGIN else ("a" if first.prob_a > 0.5 else "b")
    assert first.choice == expected
    assert "Paris." in first.prompt and "London, I think." in first.prompt and "a shown as A" in first.raw


def test_prob_a_first_is_the_letters_next_token_probability(tiny_judge):
    """Recompute P("A") / (P("A") + P("B")) by hand from the model's next-token logits."""
    tok, model = tiny_judge.tokenizer, tiny_judge.model
    verdict = judge_pair(model, tok, CONVERSATION, "Paris.", "Lyon.")
    prompt = render_prompt(tok, [{"role": "user", "content": judging_prompt(CONVERSATION, "Paris.", "Lyon.")}])
    assert verdict.prompt == judging_prompt(CONVERSATION, "Paris.", "Lyon.")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
    letters = letter_token_ids(tok, prompt)
    p_a, p_b = float(probs[letters["A"]].sum()), float(probs[letters["B"]].sum())
    assert verdict.prob_a_first == pytest.approx(p_a / (p_a + p_b), abs=1e-6)


def test_letter_tokens_include_the_leading_space_variant_and_never_a_merged_token(tiny_judge):
    tok = tiny_judge.tokenizer
    prompt = render_prompt(tok, CONVERSATION)
    letters = letter_token_ids(tok, prompt)
    for letter, ids in letters.items():
        assert {tok.decode([i]) for i in ids} == {letter, " " + letter}
    assert tok("AB", add_special_tokens=False)["input_ids"][0] not in letters["A"]


def test_swapping_the_responses_mirrors_the_verdict(tiny_judge):
    """Averaging over both orders cancels position bias: judge(b, a) = 1 - judge(a, b)."""
    ab = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "Paris.", "It is Marseille, obviously.")
    ba = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "It is Marseille, obviously.", "Paris.")
    assert ab.prob_a == pytest.approx((ab.prob_a_first + ab.prob_a_swapped) / 2)
    assert ba.prob_a == pytest.approx(1.0 - ab.prob_a, abs=1e-6)
    assert ba.prob_a_first == pytest.approx(1.0 - ab.prob_a_swapped, abs=1e-6)
    assert {"a": "b", "b": "a", "tie": "tie"}[ab.choice] == ba.choice


def test_identical_responses_are_an_exact_tie_whatever_the_position_bias(tiny_judge):
    verdict = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "Paris.", "Paris.")
    assert verdict.prob_a == pytest.approx(0.5, abs=1e-6) and verdict.choice == "tie"
    # ...although one order alone is biased towards a position (a random model always is).
    assert verdict.prob_a_first != pytest.approx(0.5, abs=1e-4)


def test_tie_margin_decides_ties(tiny_judge):
    wide = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "Paris.", "Rome.", tie_margin=0.49)
    exact = judge_pair(tiny_judge.model, tiny_judge.tokenizer, CONVERSATION, "Paris.", "Rome.", tie_margin=0.0)
    assert wide.prob_a == exact.prob_a
    assert wide.choice == ("tie" if abs(wide.prob_a - 0.5) < 0.49 else exact.choice)
    assert exact.choice == ("a" if exact.prob_a > 0.5 else "b" if exact.prob_a < 0.5 else "tie")


@pytest.mark.parametrize("messages, a, b, kwargs, match", [
    ([], "x", "y", {}, "non-empty list"),
    ([{"role": "robot", "content": "hi"}], "x", "y", {}, "role"),
    (CONVERSATION, None, "y", {}, "response_a must be a str"),
    (CONVERSATION, "x", 3, {}, "response_b must be a str"),
    (CONVERSATION, "x", "y", {"tie_margin": 0.5}, "tie_margin"),
    (CONVERSATION, "x", "y", {"tie_margin": -0.1}, "tie_margin"),
    (CONVERSATION, "word " * 3000, "y", {"max_chars": 100_000}, "longer than the judge's 1024-token context"),
])
def test_bad_inputs_are_refused(tiny_judge, messages, a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        judge_pair(tiny_judge.model, tiny_judge.tokenizer, messages, a, b, **kwargs)


# ---------------------------------------------------------------------------------------------
# annotation.services.judge
# ---------------------------------------------------------------------------------------------

def judged_project(db, tiny_model_dir, name="p", items=3, suggestions=False) -> list[int]:
    create_project(db, ProjectSettings(name=name, model="test-model", judge_model=str(tiny_model_dir),
                                       judge_suggestions=suggestions, queue_target=0))
    return make_items(db, name, items)


def verdicts(db) -> list[JudgeVerdict]:
    with transaction(db) as s:
        return s.scalars(select(JudgeVerdict).order_by(JudgeVerdict.item_id)).all()


def add_verdict(db, item_id, judge_model, choice, prob_a=None):
    with transaction(db) as s:
        s.add(JudgeVerdict(item_id=item_id, judge_model=judge_model, choice=Choice(choice), prob_a=prob_a))


def test_judge_items_stores_one_verdict_per_item_in_item_order(db, tiny_model_dir, tiny_judge):
    ids = judged_project(db, tiny_model_dir, items=3)
    run = J.judge_items(db, "p", limit=2, batch_size=1)
    assert (run.judged, run.judge_model) == (2, str(tiny_model_dir))
    run = J.judge_items(db, "p")
    assert run.judged == 1  # only the one left
    assert J.judge_items(db, "p").judged == 0  # nothing twice
    stored = verdicts(db)
    assert [v.item_id for v in stored] == ids and {v.judge_model for v in stored} == {str(tiny_model_dir)}
    with transaction(db) as s:
        item = s.get(Item, ids[0])
        messages, (first, second) = item.prompt.messages, [r.text for r in item.responses]
    expected = judge_pair(tiny_judge.model, tiny_judge.tokenizer, messages, first, second)
    assert stored[0].choice.value == expected.choice and stored[0].prob_a == pytest.approx(expected.prob_a)
    assert stored[0].judge_prompt == expected.prompt and stored[0].raw == expected.raw


def test_another_judge_model_gets_its_own_verdicts(db, tiny_model_dir, tokenizer_dir, tmp_path):
    from tests.conftest import build_tiny_model

    ids = judged_project(db, tiny_model_dir, items=2)
    J.judge_items(db, "p")
    other = build_tiny_model(tokenizer_dir, tmp_path / "other-judge", seed=1)
    settings = get_settings(db, "p")
    settings.judge_model = str(other)
    update_project(db, settings)
    assert J.judge_items(db, "p").judged == 2
    assert sorted((v.item_id, v.judge_model) for v in verdicts(db)) == sorted(
        [(i, str(tiny_model_dir)) for i in ids] + [(i, str(other)) for i in ids])


def test_judging_needs_a_judge_model_and_writes_nothing_otherwise(db):
    make_project(db, "p")
    make_items(db, "p", 2)
    with pytest.raises(InputError, match="no judge model"):
        J.judge_items(db, "p")
    with pytest.raises(InputError, match="unknown project"):
        J.judge_items(db, "nope")
    with pytest.raises(InputError, match="limit"):
        J.judge_items(db, "p", limit=0)
    assert verdicts(db) == []


@pytest.mark.parametrize("settings, match", [
    (dict(mode="listwise", k=3, judge_model="default"), "only pairwise projects"),
    (dict(judge_suggestions=True), "judge suggestions need a judge model"),
    (dict(judge_model="/no/such/judge-folder"), "judge model '/no/such/judge-folder' is not a model this server can use"),
])
def test_judge_settings_are_validated_and_nothing_is_saved(db, settings, match):
    with pytest.raises(InputError, match=match):
        create_project(db, ProjectSettings(name="p", **settings))
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Project)) == 0


def test_suggestion_only_when_the_project_turns_it_on_and_in_the_shown_order(db, tiny_model_dir):
    (item_id,) = judged_project(db, tiny_model_dir, items=1)
    add_verdict(db, item_id, str(tiny_model_dir), "a", prob_a=0.8)
    assert J.suggestion_for(db, item_id, "p") is None  # off by default: blind labelling
    settings = get_settings(db, "p")
    settings.judge_suggestions = True
    update_project(db, settings)
    suggestion = J.suggestion_for(db, item_id, "p")
    assert suggestion.choice == "a" and suggestion.confidence == pytest.approx(0.8)
    # The item's "a" (position 0) is on the left when shown [0, 1] and on the right when shown [1, 0].
    assert suggestion.as_shown([0, 1]) == "A" and suggestion.as_shown([1, 0]) == "B"
    assert J.Suggestion("tie", 0.5, "j").as_shown([1, 0]) == "tie"
    # A verdict by a judge the project no longer uses is not suggested.
    settings.judge_model = "default"
    update_project(db, settings)
    assert J.suggestion_for(db, item_id, "p") is None


def label_preferring(db, project, user, position_or_choice, rng):
    """Label the next item, preferring the response at item `position` (0/1), or 'tie' / 'both_bad'."""
    view = L.next_item(db, project, user, rng=rng)
    if position_or_choice in ("tie", "both_bad"):
        choice = position_or_choice
    else:
        choice = "a" if view.shown_order[0] == position_or_choice else "b"
    L.submit_pairwise(db, view, choice)
    return view


def test_agreement_maps_shown_sides_back_to_item_order(db, tiny_model_dir):
    create_project(db, ProjectSettings(name="p", model="test-model", judge_model=str(tiny_model_dir), overlap=2,
                                       queue_target=0))
    ids = make_items(db, "p", 5)
    judge = str(tiny_model_dir)
    for item_id, choice in zip(ids, ["a", "b", "a", "tie", "b"]):
        add_verdict(db, item_id, judge, choice)
    rng = random.Random(3)  # sides are shuffled: the mapping must not depend on them
    # Humans: item 1 prefers position 0 twice (judge a: 2 agree); item 2 position 0 and 1 (judge b:
    # 1 agree, 1 not); item 3 tie and both bad (left out); item 4 position 1 (judge tie: left out);
    # item 5: no label. So 3 of 4 agree.
    plan = {"ann1": [0, 0, "tie", 1], "ann2": [0, 1, "both_bad"]}
    for user, prefs in plan.items():
        for pref in prefs:
            label_preferring(db, "p", user, pref, rng)
    agreement = J.judge_agreement(db, "p")
    assert (agreement.judged_items, agreement.n, agreement.agree) == (5, 4, 3)
    assert (agreement.human_no_preference, agreement.judge_ties) == (2, 1)
    assert agreement.rate == pytest.approx(0.75)
    # Wilson interval for 3/4 at z = 1.96, by hand: (0.3006, 0.9544).
    assert agreement.interval() == pytest.approx((0.3006, 0.9544), abs=1e-4)
    assert "75%" in agreement.summary() and "of 4 labels" in agreement.summary()


def test_agreement_without_a_judge_or_labels(db, tiny_model_dir):
    make_project(db, "plain")
    assert J.judge_agreement(db, "plain").summary() == "No judge model set."
    judged_project(db, tiny_model_dir, items=1)
    agreement = J.judge_agreement(db, "p")
    assert agreement.n == 0 and agreement.rate is None and "no human A/B label" in agreement.summary()


def test_verdicts_never_reach_labels_snapshots_or_exports(db, tiny_model_dir, tmp_path):
    ids = judged_project(db, tiny_model_dir, items=4)
    for _ in range(2):
        L.submit_pairwise(db, L.next_item(db, "p", "ann", rng=random.Random(0)), "a")

    def outputs():
        with transaction(db) as s:
            project = s.scalar(select(Project).where(Project.name == "p"))
            rows = {fmt: export_rows(s, project, fmt) for fmt in ("trl", "trl-chat", "sft")}
            snapshot = create_snapshot(s, project, "pairs", tmp_path / f"snap{len(list(tmp_path.iterdir()))}")
            pairs = open(snapshot.path, encoding="utf-8").read()
            labels = s.scalar(select(func.count()).select_from(PairwiseLabel))
        return rows, pairs, snapshot.counts, labels

    before = outputs()
    for item_id in ids:
        add_verdict(db, item_id, str(tiny_model_dir), "b", prob_a=0.1)
    add_verdict(db, ids[0], "another-judge", "a", prob_a=0.9)
    assert outputs() == before
    assert before[3] == 2 and len(verdicts(db)) == 5
    # Judged but unlabelled items are still unlabelled: nobody's queue skips them.
    assert L.progress(db, "p", "ann").ready == 2


def test_judging_threads_report_progress_and_refuse_bad_settings(db, tiny_model_dir):
    judged_project(db, tiny_model_dir, items=3)
    make_project(db, "plain")
    threads = J.JudgingThreads(db)
    with pytest.raises(InputError, match="no judge model"):
        threads.start("plain")
    assert threads.progress("plain") is None
    started = threads.start("p")
    assert started.project == "p"
    final = threads.wait("p", timeout=120)
    assert (final.state, final.done, final.total) == ("done", 3, 3) and not final.running
    assert "3 items judged" in final.message and len(verdicts(db)) == 3


def test_a_failing_judge_is_reported_by_the_thread(db, tiny_model_dir):
    judged_project(db, tiny_model_dir, items=1)

    def broken(spec):
        raise RuntimeError(f"cannot load {spec}")

    threads = J.JudgingThreads(db, judge_loader=broken)
    threads.start("p")
    final = threads.wait("p", timeout=60)
    assert final.state == "failed" and "cannot load" in final.message and verdicts(db) == []


# ---------------------------------------------------------------------------------------------
# the generator judges what it generates
# ---------------------------------------------------------------------------------------------

def generating_judged_project(db, tiny_model_dir, judge_model, prompts=3):
    from annotation.services.prompts import add_text_prompts

    create_project(db, ProjectSettings(name="g", model=str(tiny_model_dir), max_new_tokens=4, queue_target=prompts,
                                       judge_model=judge_model))
    add_text_prompts(db, "g", "\n".join(f"question {i}" for i in range(prompts)))


def test_the_generator_judges_each_new_item_with_one_loaded_judge(db, tiny_model_dir):
    from annotation.generation import GenerationWorker
    from annotation.services.judge import default_judge_loader

    generating_judged_project(db, tiny_model_dir, str(tiny_model_dir))
    loads = []
    worker = GenerationWorker(db, batch_prompts=1,
                              judge_loader=lambda spec: loads.append(spec) or default_judge_loader(spec))
    while worker.run_once():
        pass
    with transaction(db) as s:
        item_ids = s.scalars(select(Item.id).order_by(Item.id)).all()
    assert len(item_ids) == 3 and [v.item_id for v in verdicts(db)] == item_ids
    assert loads == [str(tiny_model_dir)]  # three passes, one load
    assert worker.status.warnings == {}


def test_a_broken_judge_is_logged_and_generation_goes_on(db, tiny_model_dir, caplog):
    from annotation.generation import GenerationWorker

    generating_judged_project(db, tiny_model_dir, "default")

    calls = []

    def broken(spec):
        calls.append(spec)
        raise RuntimeError(f"judge {spec} will not load")

    worker = GenerationWorker(db, batch_prompts=1, judge_loader=broken)
    while worker.run_once():
        pass
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 3
    assert verdicts(db) == [] and worker.status.errors == {} and worker.status.state == "idle"
    assert "will not load" in worker.status.warnings["g"]
    assert "judging failed for project g" in caplog.text
    assert calls == ["default"]  # backed off for the next items, not retried on every one
