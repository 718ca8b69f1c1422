"""Evaluation of a tuned adapter against its base: metrics from rows, and the eval job end to end
(real subprocesses on a tiny model and a real SQLite file)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from alignment.evaluation import bootstrap_interval, outcome, read_rows, summarize_rows
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
    assert metrics["win_rate_low"] <= metrics["win_rate"] <= metrics["win_rate_high"]
    assert [outcome(1, 0), outcome(0, 1), outcome(2, 2)] == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="no evaluated prompts"):
        summarize_rows([])


def test_bootstrap_interval_narrows_with_more_prompts():
    few = bootstrap_interval([1.0, 0.0] * 5)
    many = bootstrap_interval([1.0, 0.0] * 500)
    assert few[0] < 0.5 < few[1] and many[0] < 0.5 < many[1]
    assert many[1] - many[0] < (few[1] - few[0]) / 4


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
    held_out_prompts = {json.dumps(json.loads(line)["prompt"]) for line in
                        (run_dir / "snapshot" / "human_pairs.jsonl").read_text().splitlines()}
    assert rows and {json.dumps(r["prompt"]) for r in rows} <= held_out_prompts
    for r in rows:
        assert r["kl"] >= 0 and r["base_tokens"] >= 0 and isinstance(r["tuned_score"], float)
    events = read_progress(run_dir)
    assert [e["step"] for e in events if e["event"] == "step"][-1] == len(rows)

    with transaction(db) as s:
        evaluation = s.scalars(select(Evaluation)).one()
        # stored metrics are those of the stored per-prompt scores, nothing recomputed elsewhere
        assert evaluation.metrics["win_rate"] == pytest.approx(summarize_rows(rows)["win_rate"])
        assert evaluation.metrics["n"] == len(rows) and 0 <= evaluation.metrics["rm_agreement"] <= 1
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


def test_app_eval_on_the_command_line_uses_the_adapters_held_out_prompts(tiny_model_dir, tiny_reward_dir, tmp_path):
    from alignment.training import DPOConfig, train_dpo

    from tests.test_cli import app
    from tests.test_training import FAST, pair_rows, write_jsonl

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(6))
    adapter = train_dpo(DPOConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "dpo"), max_steps=1,
                                  batch_size=2, eval_fraction=0.34, device="cpu", **FAST)).out_dir
    out = tmp_path / "eval"
    done = app("eval", "--adapter", adapter, "--reward", tiny_reward_dir, "--model", tiny_model_dir, "--out", out,
               "--max-new-tokens", 5, "--seed", 1, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "win rate vs base (reward model)" in done.stdout and "agrees with held-out human labels" in done.stdout
    rows = read_rows(out / "evaluation.jsonl")
    assert len(rows) == 2  # the 2 held-out prompts of 6 (eval_fraction 0.34, one pair per prompt)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["win_rate"] == pytest.approx(summarize_rows(rows)["win_rate"]) and metrics["rm_agreement_n"] == 2

    refused = app("eval", "--adapter", tmp_path / "missing", "--reward", tiny_reward_dir, "--out", out)
    assert refused.returncode != 0 and "error" in refused.stderr.lower()
