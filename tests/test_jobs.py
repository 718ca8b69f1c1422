"""The job runner with real subprocess jobs training a tiny model on labels from a real SQLite file."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from annotation.jobs.runner import JobRequest, JobRunner, job_rows, read_progress
from annotation.services import labelling
from storage.db import transaction
from storage.errors import InputError
from storage.models import Job, JobStatus, Snapshot, TrainedModel

from tests.factories import make_items, make_project


def labelled_project(db, name="p", n=12):
    make_project(db, name)
    make_items(db, name, n)
    for i in range(n):
        labelling.submit_pairwise(db, labelling.next_item(db, name, "ann"), "a" if i % 3 else "b")
    return name


def tiny_config(model_dir, **overrides):
    return {"model": str(model_dir), "max_steps": 2, "batch_size": 2, "max_length": 64, "lora_r": 4,
            "eval_fraction": 0.2, **overrides}


def wait_for(db, job_id, statuses, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with transaction(db) as s:
            job = s.get(Job, job_id)
            if job.status in statuses:
                return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s:\n{job.error or ''}")


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def runner(db, tmp_path):
    r = JobRunner(db, tmp_path / "runs", poll_seconds=0.2).start()
    yield r
    r.stop(cancel_running=True)


def test_a_dpo_job_runs_in_a_subprocess_and_records_its_lineage(db, runner, tiny_model_dir):
    labelled_project(db)
    job_id = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir)))
    job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed})
    assert job.status == JobStatus.succeeded, job.error
    run_dir = Path(job.run_dir)
    assert json.loads((run_dir / "job.json").read_text())["kind"] == "dpo"
    assert [e["step"] for e in read_progress(run_dir) if e["event"] == "step"] == [1, 2]
    with transaction(db) as s:
        model = s.scalars(select(TrainedModel)).one()
        snapshot = s.get(Snapshot, model.snapshot_id)
        assert model.job_id == job_id and model.kind == "policy-adapter" and "eval/rewards/accuracies" in model.metrics
        assert snapshot.counts["rows"] == 12 and Path(snapshot.path).exists()
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(model.path).r == 4
    assert job_rows(db)[0]["status"] == "succeeded" and job_rows(db)[0]["labels"] == 12


def test_too_few_labels_or_bad_settings_launch_nothing(db, runner, tiny_model_dir, tmp_path):
    labelled_project(db, n=2)
    with pytest.raises(InputError, match="usable pairs"):
        runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir)))
    labelled_project(db, name="q", n=8)
    with pytest.raises(InputError, match="invalid dpo settings.*lr"):
        runner.submit(JobRequest("dpo", "q", tiny_config(tiny_model_dir, lr=-1.0)))
    with pytest.raises(InputError, match="unknown project"):
        runner.submit(JobRequest("dpo", "nope", tiny_config(tiny_model_dir)))
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
        assert s.scalar(select(func.count()).select_from(Snapshot)) == 0
    assert not any((tmp_path / "runs").glob("job-*"))


def test_a_crashing_job_fails_with_its_error_and_the_runner_carries_on(db, runner, tiny_model_dir):
    labelled_project(db)
    runner.stop()  # hold the queue while we corrupt the snapshot
    bad = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir)))
    with transaction(db) as s:
        Path(s.get(Snapshot, s.get(Job, bad).snapshot_id).path).write_text('{"prompt": oops\n')
    good = runner.submit(JobRequest("rm", "p", tiny_config(tiny_model_dir)))
    runner._stop.clear()
    runner.start()
    failed = wait_for(db, bad, {JobStatus.failed, JobStatus.succeeded})
    assert failed.status == JobStatus.failed and "exit code 1" in failed.error and "line 1" in failed.error
    assert wait_for(db, good, {JobStatus.succeeded, JobStatus.failed}).status == JobStatus.succeeded


def test_cancel_stops_the_whole_process_group(db, runner, tiny_model_dir):
    labelled_project(db)
    job_id = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir, max_steps=10_000)))
    job = wait_for(db, job_id, {JobStatus.running})
    deadline = time.time() + 120
    while not any(e["event"] == "step" for e in read_progress(Path(job.run_dir))) and time.time() < deadline:
        time.sleep(0.3)
    runner.cancel(job_id)
    assert not group_alive(job.pid)
    assert wait_for(db, job_id, {JobStatus.cancelled}).status == JobStatus.cancelled
    with pytest.raises(InputError, match="already cancelled"):
        runner.cancel(job_id)


def test_an_app_restart_marks_the_job_interrupted_and_resume_finishes_it(db, tmp_path, tiny_model_dir):
    labelled_project(db)
    first = JobRunner(db, tmp_path / "runs", poll_seconds=0.2).start()
    job_id = first.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir, max_steps=400, save_steps=2)))
    job = wait_for(db, job_id, {JobStatus.running})
    deadline = time.time() + 120
    while not list(Path(job.run_dir).rglob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.3)
    first._stop.set()  # the app dies: its supervisor stops, the job process is left behind
    first._thread.join()

    second = JobRunner(db, tmp_path / "runs", poll_seconds=0.2)
    assert second.recover() == [job_id]
    first._procs[job_id].wait(10)  # reap it here: in a real restart the dead app's process is gone too
    assert not group_alive(job.pid)
    with transaction(db) as s:
        assert s.get(Job, job_id).status == JobStatus.interrupted
    with transaction(db) as s:  # finish sooner: the resumed run only has to reach a few more steps
        stored = s.get(Job, job_id)
        stored.config = {**stored.config, "max_steps": 6}
    second.resume(job_id)
    second.start()
    try:
        done = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed})
        assert done.status == JobStatus.succeeded, done.error
        assert done.config["resume_from"] and "checkpoint-" in done.config["resume_from"]
        begins = [e for e in read_progress(Path(done.run_dir)) if e["event"] == "train_begin"]
        assert len(begins) == 2 and begins[1]["step"] >= 2
    finally:
        second.stop(cancel_running=True)


def test_a_checkpoint_cut_off_while_written_is_not_resumed_from(tmp_path):
    from annotation.jobs.runner import latest_checkpoint

    (tmp_path / "output" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "output" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "output" / "checkpoint-4").mkdir()  # killed before its state file was written
    assert latest_checkpoint(tmp_path) == tmp_path / "output" / "checkpoint-2"
