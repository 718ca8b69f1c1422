"""Evaluation of a tuned adapter against its base: metrics from rows, and the eval job end to end
(real subprocesses on a tiny model and a real SQLite file)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from alignment.evaluation import (
    bootstrap_interval, held_out_pairs, outcome, read_rows, reward_agreement, rm_overlap, rm_training_prompts,
    summarize_rows,
)
from alignment.training import data as tdata
from alignment.training.heldout import record_split
from annotation.jobs.runner import JobRequest, JobRunner, job_rows, read_progress
from storage.db import transaction
from storage.errors import InputError
from storage.models import Evaluation, Job, JobStatus, TrainedModel

from tests.test_jobs import labelled_project, tiny_config, wait_for


def row(base, tuned, kl=0.1, base_tokens=10, tuned_tokens=12):
    return {"base_score": base, "tuned_score": tuned, "kl": kl, "base_tokens": base_tokens,
            "tuned_tokens": tuned_tokens}


def test_win_rate_counts_ties_as_half_and_means_come_from_the_rows():
    rows = [row(0.0, 1.0), row(1.0, 0.0), row(0.5, 0.5), row(-1.0, 2.0, kl=0.3)]
    metrics = summarize_rows(rows)
    assert metrics["win_rate"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert metrics["reward/base"] == pytest.approx(0.125) and metrics["reward/tuned"] == pytest.approx(0.875)
    assert metrics["kl/tuned_to_base"] == pytest.approx(0.15) and metrics["length/tuned"] == 12
    assert [outcome(1, 0), outcome(0, 1), outcome(2, 2)] == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="no evaluated prompts"):
        summarize_rows([])


def test_bootstrap_interval_narrows_with_more_prompts():
    few = bootstrap_interval([1.0, 0.0] * 5)
    many = bootstrap_interval([1.0, 0.0] * 500)
    assert few[0] < 0.5 < few[1] and many[0] < 0.5 < many[1]
    assert many[1] - many[0] < (few[1] - few[0]) / 4
    assert bootstrap_interval([0.5] * 7) == (0.5, 0.5)


@pytest.mark.parametrize("level, band", [(0.95, (0.88, 0.99)), (0.8, (0.70, 0.89))])
def test_bootstrap_interval_covers_the_true_win_rate_at_about_its_level(level, band):
    """300 evaluations of 40 prompts drawn with P(win, tie, loss) = (0.5, 0.2, 0.3): the interval
    holds the true win rate 0.6 in about ``level`` of them (0.94 and 0.83 with these seeds)."""
    rng = random.Random(7)
    covered = 0
    for repeat in range(300):
        outcomes = rng.choices([1.0, 0.5, 0.0], weights=[0.5, 0.2, 0.3], k=40)
        low, high = bootstrap_interval(outcomes, samples=400, seed=repeat, level=level)
        covered += low <= 0.6 <= high
    assert band[0] <= covered / 300 <= band[1]


def messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def fake_run(folder: Path, method: str, data: Path, held_out_prompts: list[str], train_prompts: list[str]) -> Path:
    """A run folder with a training config and the split.json a training run writes."""
    folder.mkdir(parents=True)
    (folder / "training_config.json").write_text(json.dumps({"method": method, "data": str(data)}))
    as_items = lambda names: [tdata.PreferencePair(messages(n), "a", "b") for n in names]  # noqa: E731
    record_split(folder, as_items(train_prompts), as_items(held_out_prompts), eval_fraction=0.3, seed=0)
    return folder


def test_held_out_pairs_are_read_from_split_json_not_split_again(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapter = fake_run(tmp_path / "dpo", "dpo", data, held_out_prompts=["q1", "q4"],
                       train_prompts=["q0", "q2", "q3", "q5"])
    assert [(p.prompt_messages, p.chosen) for p in held_out_pairs(adapter)] == [(messages("q1"), "good 1"),
                                                                                (messages("q4"), "good 4")]
    # New labels in the data file (even for prompts a fresh split would hold out) change nothing.
    with data.open("a") as f:
        f.writelines(json.dumps({"prompt": f"new {i}", "chosen": "x", "rejected": "y"}) + "\n" for i in range(50))
    assert [p.chosen for p in held_out_pairs(adapter)] == ["good 1", "good 4"]
    (adapter / "split.json").unlink()
    with pytest.raises(ValueError, match="no split.json"):
        held_out_pairs(adapter)


def test_a_listwise_adapters_held_out_rankings_become_their_ordered_pairs(tmp_path):
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "q0", "completions": ["a", "b", "c"], "ranks": [0, 1, 1]},
        {"prompt": "q1", "completions": ["d", "e"], "ranks": [0, 1]}]))
    adapter = fake_run(tmp_path / "pl", "pl_dpo", data, held_out_prompts=["q0"], train_prompts=["q1"])
    assert [(p.chosen, p.rejected) for p in held_out_pairs(adapter)] == [("a", "b"), ("a", "c")]


def test_rm_agreement_leaves_out_the_pairs_the_reward_model_trained_on(tiny_reward_dir, tmp_path):
    """The tiny reward model trained on "Question 0..3: is it true?" with nothing held out."""
    from alignment.training import load_reward_model, score

    rm_trained = rm_training_prompts(tiny_reward_dir)
    pairs = [tdata.PreferencePair(messages(f"Question {i}: is it true?"), "Sure, yes", "No, never") for i in (2, 7)]
    pairs.append(tdata.PreferencePair(messages("Question 8: is it true?"), "No, never", "Sure, yes"))
    assert rm_trained == {tdata.prompt_sha256(tdata.PreferencePair(messages(f"Question {i}: is it true?"), "", ""))
                          for i in range(4)}

    model, tokenizer = load_reward_model(tiny_reward_dir)
    result = reward_agreement(model, tokenizer, pairs, rm_trained)
    yes, no = score(model, tokenizer, [messages("Question 7: is it true?")] * 2, ["Sure, yes", "No, never"])
    yes8, no8 = score(model, tokenizer, [messages("Question 8: is it true?")] * 2, ["Sure, yes", "No, never"])
    expected = ((yes > no) + (no8 > yes8)) / 2  # the two pairs on prompts it never saw
    assert result == {"rm_agreement": expected, "rm_agreement_n": 2, "rm_agreement_excluded": 1}
    unchecked = reward_agreement(model, tokenizer, pairs, None)
    assert (unchecked["rm_agreement_n"], unchecked["rm_agreement_unchecked"]) == (3, True)

    data = tmp_path / "unused.jsonl"
    adapter = fake_run(tmp_path / "dpo", "dpo", data, train_prompts=["Question 0: is it true?"],
                       held_out_prompts=[f"Question {i}: is it true?" for i in (1, 3, 9)])
    assert rm_overlap(adapter, tiny_reward_dir) == 2
    assert rm_overlap(adapter, tmp_path) is None  # no split.json: unknown, not 0


@pytest.fixture
def runner(db, tmp_path):
    r = JobRunner(db, tmp_path / "runs", poll_seconds=0.2).start()
    yield r
    r.stop(cancel_running=True)


def eval_config(model_dir, adapter, reward, **overrides):
    return {"adapter": str(adapter), "reward": str(reward), "model": str(model_dir), "temperature": 1.0,
            "top_p": 1.0, "max_new_tokens": 6, "seed": 5, **overrides}


def test_an_eval_job_scores_base_and_tuned_on_held_out_prompts_and_stores_the_result_with_lineage(
        db, runner, tiny_model_dir, tiny_reward_dir):
    labelled_project(db)
    dpo_id = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir, eval_fraction=0.3)))
    dpo = wait_for(db, dpo_id, {JobStatus.succeeded, JobStatus.failed})
    assert dpo.status == JobStatus.succeeded, dpo.error
    with transaction(db) as s:
        adapter = s.scalars(select(TrainedModel)).one()

    job_id = runner.submit(JobRequest("eval", "p", eval_config(tiny_model_dir, adapter.path, tiny_reward_dir)))
    job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed})
    assert job.status == JobStatus.succeeded, job.error
    run_dir = Path(job.run_dir)

    rows = read_rows(run_dir / "output" / "evaluation.jsonl")
    human_pairs = tdata.load_pairs(run_dir / "snapshot" / "human_pairs.jsonl")
    held_out = {tdata.prompt_sha256(p) for p in human_pairs}
    assert held_out == set(json.loads((Path(adapter.path) / "split.json").read_text())["held_out"]["prompt_sha256"])
    assert rows and {tdata.prompt_sha256(tdata.PreferencePair(r["prompt"], "", "")) for r in rows} <= held_out
    events = read_progress(run_dir)
    assert [e["step"] for e in events if e["event"] == "step"][-1] == len(rows)

    # The stored scores are the reward model's scores of the stored answers.
    from alignment.training import load_reward_model, score

    model, tokenizer = load_reward_model(tiny_reward_dir)
    first = rows[0]
    rescored = score(model, tokenizer, [first["prompt"]] * 2, [first["base"], first["tuned"]])
    assert rescored == pytest.approx([first["base_score"], first["tuned_score"]], abs=1e-4)
    chosen = score(model, tokenizer, [p.prompt_messages for p in human_pairs], [p.chosen for p in human_pairs])
    rejected = score(model, tokenizer, [p.prompt_messages for p in human_pairs], [p.rejected for p in human_pairs])

    with transaction(db) as s:
        evaluation = s.scalars(select(Evaluation)).one()
        # the stored win rate is the share of stored rows the tuned answer won (ties half)
        wins = [1.0 if r["tuned_score"] > r["base_score"] else 0.5 if r["tuned_score"] == r["base_score"] else 0.0
                for r in rows]
        assert evaluation.metrics["win_rate"] == pytest.approx(sum(wins) / len(rows))
        assert evaluation.metrics["n"] == len(rows)
        # the reward model trained on "Question i" prompts only: none of the project's held-out prompts
        assert evaluation.metrics["rm_train_overlap"] == 0 and evaluation.metrics["rm_agreement_excluded"] == 0
        assert evaluation.metrics["rm_agreement"] == pytest.approx(
            sum(c > r for c, r in zip(chosen, rejected)) / len(human_pairs))
        assert evaluation.model_id == adapter.id and evaluation.job_id == job_id
        assert evaluation.path == str(run_dir / "output" / "evaluation.jsonl")
    assert job_rows(db)[0]["unit"] == "prompt"


def test_bad_eval_settings_are_refused_at_submit_and_launch_nothing(db, tmp_path, tiny_model_dir, tiny_reward_dir):
    labelled_project(db)
    runner = JobRunner(db, tmp_path / "runs")  # not started: nothing may be queued anyway
    with pytest.raises(InputError, match="adapter"):
        runner.submit(JobRequest("eval", "p", eval_config(tiny_model_dir, "", tiny_reward_dir)))
    with pytest.raises(InputError, match="is a reward model.*not a policy adapter"):
        runner.submit(JobRequest("eval", "p", eval_config(tiny_model_dir, tiny_reward_dir, tiny_reward_dir,
                                                          prompts="all")))
    with transaction(db) as s:
        assert s.scalars(select(Job)).all() == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_app_eval_on_the_command_line_uses_the_adapters_held_out_prompts_and_reports_the_rm_overlap(
        tiny_model_dir, tiny_reward_dir, tmp_path):
    """The adapter holds out Questions 1, 2 and 6 of 0..7; the reward model trained on Questions 0..3,
    so 2 of the adapter's held-out prompts are in its training data: reported, and left out of its
    agreement with the held-out human labels."""
    from alignment.training import DPOConfig, train_dpo

    from tests.test_cli import app
    from tests.test_training import FAST, pair_rows, write_jsonl

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    adapter = train_dpo(DPOConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "dpo"), max_steps=1,
                                  batch_size=2, eval_fraction=0.34, device="cpu", **FAST)).out_dir
    held_out = [p.prompt_messages[0]["content"] for p in held_out_pairs(adapter)]
    assert held_out == [f"Question {i}: is it true?" for i in (1, 2, 6)]
    out = tmp_path / "eval"
    done = app("eval", "--adapter", adapter, "--reward", tiny_reward_dir, "--model", tiny_model_dir, "--out", out,
               "--max-new-tokens", 5, "--seed", 1, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["rm_train_overlap"], metrics["rm_agreement_n"], metrics["rm_agreement_excluded"]) == (2, 1, 2)
    rows = read_rows(out / "evaluation.jsonl")
    assert [r["prompt"][0]["content"] for r in rows] == held_out
    lines = done.stdout.splitlines()
    assert "the reward model trained on 2 of the adapter's held-out prompts" in lines
    assert (f"reward model agrees with held-out human labels on {metrics['rm_agreement']:.1%} of 1 pairs "
            f"(2 pair(s) left out: the reward model trained on their prompts)") in lines
    assert (f"KL to base ≈ {metrics['kl/tuned_to_base']:.4f} nats/token, a k3 estimate from 3 sampled answers "
            f"(one per prompt) at temperature 0.7, top-p 0.95, at most 5 new tokens") in lines

    refused = app("eval", "--adapter", tmp_path / "missing", "--reward", tiny_reward_dir, "--out", out)
    assert refused.returncode != 0 and "error" in refused.stderr.lower()


def test_a_grpo_adapter_is_evaluated_on_the_prompts_its_run_held_out(db, runner, tiny_model_dir, tiny_reward_dir,
                                                                     tmp_path):
    """PPO / GRPO runs have held-out prompts but no held-out pairs: the default evaluation uses those
    prompts (and measures no agreement with people); a run that held out none is refused, saying so."""
    from alignment.evaluation import held_out_prompts
    from alignment.rl.grpo import train_grpo
    from alignment.training.config import GRPOConfig

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about item {i}."}) + "\n" for i in range(9)))
    settings = dict(model=str(tiny_model_dir), data=str(prompts), max_steps=1, batch_size=2, num_generations=2,
                    max_new_tokens=2, lora_r=4, reward_rule=["eos"], device="cpu", eval_generations=1)
    adapter = train_grpo(GRPOConfig(**settings, out=str(tmp_path / "grpo"), eval_fraction=0.34)).out_dir
    recorded = set(json.loads((adapter / "split.json").read_text())["held_out"]["prompt_sha256"])
    held_out = held_out_prompts(adapter)
    assert len(held_out) == len(recorded) >= 2
    assert {tdata.prompt_sha256(tdata.PreferencePair(m, "", "")) for m in held_out} == recorded

    labelled_project(db)
    job_id = runner.submit(JobRequest("eval", "p", eval_config(tiny_model_dir, adapter, tiny_reward_dir)))
    job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed})
    assert job.status == JobStatus.succeeded, job.error
    rows = read_rows(Path(job.run_dir) / "output" / "evaluation.jsonl")
    assert [r["prompt"] for r in rows] == held_out
    assert not (Path(job.run_dir) / "snapshot" / "human_pairs.jsonl").exists()
    with transaction(db) as s:
        assert "rm_agreement_n" not in s.scalars(select(Evaluation)).one().metrics

    nothing_held = train_grpo(GRPOConfig(**settings, out=str(tmp_path / "all-trained"), eval_fraction=0.0)).out_dir
    with pytest.raises(InputError, match=r"has no held-out prompts to evaluate on \(its training held out none: "
                                         r"eval_fraction 0\): choose prompts 'all' or 'unlabelled'"):
        runner.submit(JobRequest("eval", "p", eval_config(tiny_model_dir, nothing_held, tiny_reward_dir)))
