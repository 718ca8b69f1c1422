"""PPO and GRPO as background jobs: real subprocesses on a project's prompts, lineage, bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from annotation.jobs.runner import JobRequest, read_progress
from storage.db import transaction
from storage.errors import InputError
from storage.models import Job, JobStatus, Snapshot, TrainedModel

from tests.factories import make_project
from tests.test_jobs import runner, wait_for  # noqa: F401 - the runner fixture


def rl_config(model_dir, **overrides):
    return {"model": str(model_dir), "max_steps": 2, "batch_size": 2, "max_new_tokens": 4, "lora_r": 4,
            "eval_fraction": 0.0, **overrides}


def test_a_grpo_job_on_a_project_with_a_reward_model_records_its_lineage(db, runner, tiny_model_dir,
                                                                        tiny_reward_dir):
    make_project(db, "p", prompts=4)
    job_id = runner.submit(JobRequest("grpo", "p", rl_config(tiny_model_dir, num_generations=2,
                                                              reward_model=str(tiny_reward_dir))))
    job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed}, timeout=600)
    assert job.status == JobStatus.succeeded, job.error
    run_dir = Path(job.run_dir)
    steps = [e for e in read_progress(run_dir) if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2] and "reward/mean" in steps[-1]["metrics"]
    with transaction(db) as s:
        model = s.scalars(select(TrainedModel)).one()
        snapshot = s.get(Snapshot, model.snapshot_id)
        # lineage: which prompts (the snapshot), which reward model and settings (the job's config)
        assert model.kind == "policy-adapter" and model.job_id == job_id and snapshot.counts["prompts"] == 4
        assert s.get(Job, job_id).config["reward_model"] == str(tiny_reward_dir)
    assert (Path(model.path) / "adapter_model.safetensors").is_file()


def test_bad_reward_settings_are_refused_at_submit(db, runner, tiny_model_dir, tmp_path):
    make_project(db, "p", prompts=2)
    with pytest.raises(InputError, match="unknown built-in reward 'regexp'"):
        runner.submit(JobRequest("grpo", "p", rl_config(tiny_model_dir, reward_rule=["regexp:a"])))
    with pytest.raises(InputError, match="is not a reward function this server can use"):
        runner.submit(JobRequest("ppo", "p", rl_config(tiny_model_dir, reward_fn=[f"{tmp_path}/none.py:f"])))
    rules = tmp_path / "rules.py"
    rules.write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(InputError, match="defines no 'score'"):
        runner.submit(JobRequest("ppo", "p", rl_config(tiny_model_dir, reward_fn=[f"{rules}:score"])))
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_a_reward_function_that_raises_fails_the_job_and_registers_nothing(db, runner, tiny_model_dir, tmp_path):
    make_project(db, "p", prompts=2)
    rules = tmp_path / "rules.py"
    rules.write_text("def score(prompts, completions, **kw):\n    return [1.0]\n", encoding="utf-8")
    job_id = runner.submit(JobRequest("ppo", "p", rl_config(tiny_model_dir, reward_fn=[f"{rules}:score"])))
    job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed}, timeout=600)
    assert job.status == JobStatus.failed
    assert "reward function 'rules.py:score' on rollout 1 returned 1 values for 2 completions" in job.error
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(TrainedModel)) == 0
    assert not (Path(job.run_dir) / "output" / "adapter_config.json").exists()
