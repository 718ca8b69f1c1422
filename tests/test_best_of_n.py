"""Best-of-N: sampling N candidates, scoring them with a reward model, the `bon` CLI, storing the
candidates for labelling and the "is the RM's pick right?" verdict.

Runs on the CPU with the 2-layer random Llama (real SmolLM2 tokenizer), a reward model trained for
2 steps on it, and a LoRA adapter with random (non-zero) weights so that applying it changes the
policy's output.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from alignment.best_of_n import BestOfN, argmax, best_of_n, policy_backend
from alignment.sampling import SamplingParams
from alignment.training import load_reward_model, score
from annotation.services.best_of_n import BestOfNRun, record_rm_pick_verdict, run_best_of_n, store_as_items
from storage.db import transaction
from storage.errors import InputError
from storage.models import Item, ItemStatus, PairwiseLabel, Prompt, Response, User
from tests.conftest import PROJECT_ROOT
from tests.factories import make_project

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
       "TOKENIZERS_PARALLELISM": "false"}

PROMPTS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "Say hello."}],
]
FAST_SAMPLING = dict(temperature=1.0, top_p=1.0, max_new_tokens=6)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reward_dir(tiny_reward_dir) -> Path:
    """A reward model on the tiny Llama, trained for 2 steps (tests/conftest.py)."""
    return tiny_reward_dir


@pytest.fixture(scope="module")
def rm(reward_dir):
    return load_reward_model(reward_dir)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A policy LoRA adapter with random weights (init_lora_weights=False: B is not zero, so it matters)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                                            task_type=TaskType.CAUSAL_LM, init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "dpo"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl",
                       [{"prompt": PROMPTS[0][0]["content"]}, {"messages": PROMPTS[1]},
                        {"prompt": PROMPTS[2][0]["content"], "topic": "greeting"}])


@pytest.fixture(scope="module")
def bon_run(prompts_file, reward_dir, tiny_model_dir) -> BestOfNRun:
    return run_best_of_n(prompts_file, reward_dir, model=str(tiny_model_dir), n=3, seed=5, **FAST_SAMPLING)


# --------------------------------------------------------------------------------------------
# alignment.best_of_n
# --------------------------------------------------------------------------------------------

def test_best_of_n_scores_every_candidate_and_picks_the_argmax(tiny_model_dir, rm):
    backend = policy_backend(str(tiny_model_dir))
    params = SamplingParams(seed=11, **FAST_SAMPLING)
    calls = []
    results = best_of_n(PROMPTS, 3, params, backend, rm.model, rm.tokenizer, batch_size=4,
                        progress=lambda done, total: calls.append((done, total)))

    assert [r.prompt_messages for r in results] == PROMPTS
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    for result in results:
        assert isinstance(result, BestOfN) and len(result.candidates) == 3
        assert all(c.num_tokens <= 6 and c.finish_reason in ("stop", "length") for c in result.candidates)
        assert result.best_index == argmax(result.scores) and result.best.score == max(result.scores)
        # The scores are the reward model's own, on the same texts (batching changes nothing).
        direct = score(rm.model, rm.tokenizer, [result.prompt_messages] * 3, result.texts, batch_size=1)
        assert result.scores == pytest.approx(direct, abs=1e-4)

    again = best_of_n(PROMPTS, 3, params, backend, rm.model, rm.tokenizer, batch_size=4)
    assert [r.texts for r in again] == [r.texts for r in results]
    assert [r.scores for r in again] == [r.scores for r in results]
    other = best_of_n(PROMPTS, 3, SamplingParams(seed=12, **FAST_SAMPLING), backend, rm.model, rm.tokenizer)
    assert [r.texts for r in other] != [r.texts for r in results]

    assert argmax([1.0, 3.0, 3.0, 2.0]) == 1  # ties: the first
    with pytest.raises(ValueError, match="n must be a positive integer"):
        best_of_n(PROMPTS, 0, params, backend, rm.model, rm.tokenizer)
    with pytest.raises(ValueError, match="prompt 1: .*role"):
        best_of_n([[{"role": "bot", "content": "x"}]], 2, params, backend, rm.model, rm.tokenizer)


def test_policy_with_an_adapter(tiny_model_dir, adapter_dir, reward_dir, rm):
    greedy = SamplingParams(temperature=0, max_new_tokens=6)
    base = policy_backend(str(tiny_model_dir))
    before = base.sample(PROMPTS[:1], 1, greedy)[0][0].text

    # No --model: the adapter's own base model (recorded in adapter_config.json) is used.
    tuned = policy_backend(None, adapter_dir)
    assert tuned.loaded.model is not base.loaded.model and "+dpo" in tuned.name
    assert not hasattr(tuned.loaded.model, "peft_config")  # merged into a plain model
    assert tuned.sample(PROMPTS[:1], 1, greedy)[0][0].text != before
    # The shared base instance was not modified by merging the adapter.
    assert base.sample(PROMPTS[:1], 1, greedy)[0][0].text == before

    results = best_of_n(PROMPTS[:2], 2, SamplingParams(seed=3, **FAST_SAMPLING), tuned, rm.model, rm.tokenizer)
    assert [len(r.candidates) for r in results] == [2, 2]

    with pytest.raises(ValueError, match="is a reward model"):
        policy_backend(str(tiny_model_dir), reward_dir)
    with pytest.raises(ValueError, match="adapter folder not found"):
        policy_backend(str(tiny_model_dir), adapter_dir / "missing")


# --------------------------------------------------------------------------------------------
# The `bon` command
# --------------------------------------------------------------------------------------------

def bon(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", "bon", *map(str, args)], cwd=PROJECT_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_n_completions_per_prompt(prompts_file, reward_dir, adapter_dir, tmp_path):
    out = tmp_path / "out" / "bon.jsonl"
    result = bon("--reward", reward_dir, "--adapter", adapter_dir, "--prompts", prompts_file, "--n", 3,
                 "--out", out, "--max-new-tokens", 5, "--seed", 1, "--temperature", 1.0)
    assert result.returncode == 0, result.stderr
    assert "best-of-n" in result.stderr and "3/3" in result.stderr  # the progress bar
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["prompt"] for row in rows] == PROMPTS
    for row in rows:
        assert set(row) == {"prompt", "completions", "scores", "best", "best_index"}
        assert len(row["completions"]) == len(row["scores"]) == 3
        assert row["best_index"] == argmax(row["scores"]) and row["best"] == row["completions"][row["best_index"]]


@pytest.mark.parametrize("case, message", [
    ("missing-reward", "is not a model this server can use"),
    ("not-a-reward", "is not a model this server can use"),
    ("missing-prompts", "prompts file not found"),
    ("missing-model", "is not a model this server can use"),
    ("missing-adapter", "is not a model this server can use"),
    ("bad-n", "--n must be a positive integer"),
    ("bad-temperature", "temperature must be"),
])
def test_cli_refuses_bad_inputs(case, message, prompts_file, reward_dir, tmp_path, capsys):
    import app

    args = {"--reward": reward_dir, "--prompts": prompts_file, "--out": tmp_path / "o.jsonl", "--n": 2,
            "--model": tmp_path / "tiny"}
    changes = {"missing-reward": {"--reward": tmp_path / "nope"}, "not-a-reward": {"--reward": tmp_path},
               "missing-prompts": {"--prompts": tmp_path / "nope.jsonl"}, "missing-model": {},
               "missing-adapter": {"--adapter": tmp_path / "nope"}, "bad-n": {"--n": 0},
               "bad-temperature": {"--temperature": -1}}[case]
    argv = ["bon"] + [str(x) for key, value in {**args, **changes}.items() for x in (key, value)]
    assert app.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_refuses_a_prompt_file_with_bad_lines_listing_each(reward_dir, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, "{broken", {"prompt": "ok"}, {"nothing": 1}])
    result = bon("--reward", reward_dir, "--prompts", bad, "--out", tmp_path / "o.jsonl")
    assert result.returncode == 2
    assert "2 bad record(s)" in result.stderr and "line 2:" in result.stderr and "line 4:" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o.jsonl").exists()


# --------------------------------------------------------------------------------------------
# Storing candidates and the verdict on the RM's pick
# --------------------------------------------------------------------------------------------

def counts(db) -> dict[str, int]:
    with transaction(db) as s:
        return {model.__name__: s.scalar(select(func.count()).select_from(model))
                for model in (Prompt, Item, Response, PairwiseLabel, User)}


def test_store_as_items_keeps_every_candidate_with_provenance(db, bon_run, tiny_model_dir):
    make_project(db, "bon", mode="listwise", k=3)
    stored = store_as_items(db, "bon", bon_run)
    assert len(stored.item_ids) == 3 and stored.responses == 9 and stored.prompts_added == 3
    with transaction(db) as s:
        for item_id, best_id, result in zip(stored.item_ids, stored.best_response_ids, bon_run.results):
            item = s.get(Item, item_id)
            assert item.status == ItemStatus.ready and item.prompt.messages == result.prompt_messages
            assert item.prompt.source == "best-of-n"
            assert [r.text for r in item.responses] == result.texts
            assert best_id == item.responses[result.best_index].id
            for response, candidate in zip(item.responses, result.candidates):
                assert (response.source, response.model, response.adapter) == ("best-of-n", str(tiny_model_dir), None)
                assert response.sampling["rm_score"] == pytest.approx(candidate.score)
                assert response.sampling["temperature"] == 1.0 and response.sampling["max_new_tokens"] == 6
                assert response.sampling["run_seed"] == 5 and response.seed == result.seed is not None
                assert response.sampling["reward_model"] == bon_run.reward
                assert (response.num_tokens, response.finish_reason) == (candidate.num_tokens, candidate.finish_reason)
        assert [s.get(Item, i).prompt.is_chat for i in stored.item_ids] == [False, True, False]
        assert s.get(Item, stored.item_ids[2]).prompt.meta == {"topic": "greeting"}

    # A second run over the same prompts reuses them; a pairwise project (K=2) refuses 3 candidates.
    assert store_as_items(db, "bon", bon_run).prompts_added == 0
    make_project(db, "pairs", mode="pairwise")
    before = counts(db)
    with pytest.raises(InputError, match="3 candidates, but pairwise project 'pairs' labels exactly 2"):
        store_as_items(db, "pairs", bon_run)
    with pytest.raises(InputError, match="unknown project"):
        store_as_items(db, "nope", bon_run)
    assert counts(db) == before


def test_rm_pick_verdict_is_a_pairwise_label(db, bon_run):
    # Pairwise project: keep two candidates per prompt (so a verdict also completes the item).
    pair_run = BestOfNRun(model=bon_run.model, adapter=None, reward=bon_run.reward, n=2, sampling=bon_run.sampling,
                          results=[BestOfN(r.prompt_messages, r.candidates[:2], argmax(r.scores[:2]), r.seed)
                                   for r in bon_run.results], is_chat=bon_run.is_chat, meta=bon_run.meta)
    make_project(db, "v", mode="pairwise")
    stored = store_as_items(db, "v", pair_run)
    with transaction(db) as s:
        others = [next(r.id for r in s.get(Item, i).responses if r.id != best)
                  for i, best in zip(stored.item_ids, stored.best_response_ids)]
        positions = {r.id: r.position for i in stored.item_ids for r in s.get(Item, i).responses}

    agree = record_rm_pick_verdict(db, "v", "ann", stored.item_ids[0], stored.best_response_ids[0], others[0], True)
    disagree = record_rm_pick_verdict(db, "v", "ann", stored.item_ids[1], stored.best_response_ids[1], others[1],
                                      False, time_taken_ms=1500)
    assert not agree.duplicate and len(agree.label_ids) == 1
    again = record_rm_pick_verdict(db, "v", "ann", stored.item_ids[0], stored.best_response_ids[0], others[0], True)
    assert again.duplicate and again.label_ids == agree.label_ids
    with transaction(db) as s:
        label = s.get(PairwiseLabel, agree.label_ids[0])
        assert (label.response_a_id, label.response_b_id, label.choice.value, label.source.value) == \
            (stored.best_response_ids[0], others[0], "a", "human")
        assert label.shown_order == [positions[stored.best_response_ids[0]], positions[others[0]]]
        assert label.user.name == "ann" and s.get(Item, stored.item_ids[0]).status == ItemStatus.done
        second = s.get(PairwiseLabel, disagree.label_ids[0])
        assert (second.choice.value, second.time_taken_ms) == ("b", 1500)

    item, best, other = stored.item_ids[2], stored.best_response_ids[2], others[2]
    before = counts(db)
    for bad_args, message in [
        ((999_999, best, other), "unknown item 999999"),
        ((item, 999_999, other), "unknown response id 999999"),
        ((item, best, stored.best_response_ids[0]), f"unknown response id {stored.best_response_ids[0]}"),
        ((item, best, best), "two different responses"),
        ((item, other, best), "is not the reward model's pick"),
    ]:
        with pytest.raises(InputError, match=message):
            record_rm_pick_verdict(db, "v", "newcomer", *bad_args, True)
    with pytest.raises(InputError, match="already labelled item"):
        record_rm_pick_verdict(db, "v", "ann", stored.item_ids[0], stored.best_response_ids[0], others[0], False)
    with pytest.raises(InputError, match="unknown project"):
        record_rm_pick_verdict(db, "nope", "newcomer", item, best, other, True)
    assert counts(db) == before  # nothing written, not even the new annotator
