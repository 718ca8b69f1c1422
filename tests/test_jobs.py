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

# On PostgreSQL too: the jobs whose subprocess writes what the database keeps (lineage, stored
# items) and the checks at submit. The runner's process handling (crash, cancel, restart) does not
# depend on the engine and runs on SQLite only, to keep the suite fast.
both_databases = pytest.mark.databases


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


@both_databases
def test_a_dpo_job_runs_in_a_subprocess_and_records_its_lineage(db, runner, tiny_model_dir):
    labelled_project(db)
    job_id = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir)))
    job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed})
    assert job.status == JobStatus.succeeded, job.error
    run_dir = Path(job.run_dir)
    assert json.loads((run_dir / "job.json").read_text())["kind"] == "dpo"
    events = read_progress(run_dir)
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    # Before the first step the job says what it is doing: loading, then the reference pass, counted.
    assert events[0]["event"] == "phase" and events[0]["phase"] == "loading the model"
    reference = [e for e in events if e.get("phase") == "reference pass"]
    assert [e["done"] for e in reference] == sorted(e["done"] for e in reference)
    assert reference[-1]["done"] == reference[-1]["total"] == 12
    assert [e["event"] for e in events].index("train_begin") > events.index(reference[-1])
    with transaction(db) as s:
        model = s.scalars(select(TrainedModel)).one()
        snapshot = s.get(Snapshot, model.snapshot_id)
        assert model.job_id == job_id and model.kind == "policy-adapter" and "eval/rewards/accuracies" in model.metrics
        assert snapshot.counts["rows"] == 12 and Path(snapshot.path).exists()
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(model.path).r == 4
    assert job_rows(db)[0]["status"] == "succeeded" and job_rows(db)[0]["labels"] == 12


@both_databases
def test_too_few_labels_or_bad_settings_launch_nothing(db, runner, tiny_model_dir, tmp_path):
    labelled_project(db, n=2)
    with pytest.raises(InputError, match="usable pairs"):
        runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir)))
    labelled_project(db, name="q", n=8)
    with pytest.raises(InputError, match="invalid dpo settings.*lr"):
        runner.submit(JobRequest("dpo", "q", tiny_config(tiny_model_dir, lr=-1.0)))
    with pytest.raises(InputError, match="unknown project"):
        runner.submit(JobRequest("dpo", "nope", tiny_config(tiny_model_dir)))
    # Models are checked at launch, not a minute into the job.
    with pytest.raises(InputError, match="'no/such-model' is not a file or folder on this machine"):
        runner.submit(JobRequest("dpo", "q", tiny_config("no/such-model")))
    # A typed path that is not a model gets one message, whether it exists or not (annotation.services.paths).
    with pytest.raises(InputError, match="is not a model this server can use"):
        runner.submit(JobRequest("dpo", "q", tiny_config(tmp_path)))
    with pytest.raises(InputError, match="is not a model this server can use"):
        runner.submit(JobRequest("dpo", "q", tiny_config(tmp_path / "gone")))
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
    # The first line of the error is the reason, for the queue table; the log's traceback follows.
    reason = failed.error.splitlines()[0]
    assert failed.status == JobStatus.failed and "pairs.jsonl:1: invalid JSON" in reason and "Traceback" not in reason
    assert "Traceback" in failed.error
    assert next(r for r in job_rows(db) if r["id"] == bad)["reason"] == reason
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


# --------------------------------------------------------------------------------------------
# Best-of-N jobs: a project's prompts in, a scored dataset (and optionally items to label) out
# --------------------------------------------------------------------------------------------

def bon_config(model_dir, reward_dir, **overrides):
    return {"reward": str(reward_dir), "model": str(model_dir), "n": 2, "temperature": 1.0, "top_p": 1.0,
            "max_new_tokens": 6, "seed": 3, "batch_size": 4, **overrides}


def count(db, model) -> int:
    with transaction(db) as s:
        return s.scalar(select(func.count()).select_from(model))


@both_databases
def test_a_bon_job_writes_the_scored_dataset_and_stores_the_candidates_as_items(db, runner, tiny_model_dir,
                                                                                 tiny_reward_dir):
    from storage.models import Item, Response

    make_project(db, "p", prompts=3)
    job_id = runner.submit(JobRequest("bon", "p", bon_config(tiny_model_dir, tiny_reward_dir, store_as_items=True)))
    job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed})
    assert job.status == JobStatus.succeeded, job.error
    run_dir = Path(job.run_dir)

    rows = [json.loads(line) for line in (run_dir / "output" / "best_of_n.jsonl").read_text().splitlines()]
    assert [r["prompt"][-1]["content"] for r in rows] == [f"prompt number {i}" for i in range(3)]
    for row in rows:
        assert len(row["completions"]) == 2 and len(row["scores"]) == 2
        assert row["scores"][row["best_index"]] == max(row["scores"])
        assert row["best"] == row["completions"][row["best_index"]]

    events = read_progress(run_dir)
    assert (events[0]["event"], events[0]["phase"]) == ("phase", "loading the model")
    assert events[1]["event"] == "train_begin" and events[1]["total_steps"] == 3
    steps = [e for e in events if e["event"] == "step"]
    assert steps[-1]["step"] == 3 and steps[-1]["unit"] == "prompt" and steps[-1]["eta_s"] == 0
    assert "scores/best_mean" in events[-1]["metrics"]

    row = job_rows(db)[0]
    assert row["output"] == str(run_dir / "output" / "best_of_n.jsonl") and row["prompts"] == 3
    assert row["labels"] is None and row["unit"] == "prompt" and row["step"] == 3
    assert count(db, TrainedModel) == 0  # a dataset, not a model
    with transaction(db) as s:
        items = s.scalars(select(Item).order_by(Item.id)).all()
        assert len(items) == 3 and all(len(item.responses) == 2 for item in items)
        scores = [[r.sampling["rm_score"] for r in item.responses] for item in items]
        assert scores == [r["scores"] for r in rows]
        assert {r.source for r in s.scalars(select(Response))} == {"best-of-n"}
    # The runner notes what it stored in the log just after the commit that marks the job succeeded.
    deadline = time.time() + 10
    while "stored 3 items" not in (run_dir / "log.txt").read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert "stored 3 items (6 responses) in project 'p'" in (run_dir / "log.txt").read_text()


@both_databases
def test_a_bon_job_freezes_the_selected_prompts_at_submit(db, tmp_path, tiny_model_dir, tiny_reward_dir):
    from annotation.services.prompts import add_text_prompts

    labelled_project(db, n=4)  # prompts q0..q3, all labelled
    add_text_prompts(db, "p", "fresh one\nfresh two\nfresh three")
    held = JobRunner(db, tmp_path / "runs")  # never started: jobs stay queued
    job_id = held.submit(JobRequest("bon", "p", bon_config(tiny_model_dir, tiny_reward_dir, prompts="unlabelled",
                                                           max_prompts=2)))
    add_text_prompts(db, "p", "added after submit")
    with transaction(db) as s:
        job = s.get(Job, job_id)
        frozen = [json.loads(line) for line in Path(job.snapshot.path).read_text().splitlines()]
        assert job.status == JobStatus.queued and job.config["project"] == "p"
        assert job.snapshot.filters == {"prompts": "unlabelled", "max_prompts": 2}
    assert [r["prompt"] for r in frozen] == ["fresh one", "fresh two"]


@both_databases
def test_bad_bon_settings_are_refused_at_submit_and_launch_nothing(db, tmp_path, tiny_model_dir, tiny_reward_dir):
    labelled_project(db, name="labelled", n=4)
    make_project(db, "pairs", prompts=2)
    make_project(db, "empty")
    held = JobRunner(db, tmp_path / "runs")
    refused = [
        ("pairs", {"reward": ""}, "pick a reward model"),
        ("pairs", {"reward": str(tmp_path / "nowhere")}, "is not a model this server can use"),
        ("pairs", {"reward": str(tiny_model_dir)}, "is a base model folder, which cannot be used as the reward"),
        ("pairs", {"n": 0}, "n must be an integer >= 1"),
        ("pairs", {"temperature": -1.0}, "temperature must be"),
        ("pairs", {"n": 3, "store_as_items": True}, "3 candidates, but pairwise project 'pairs' labels exactly 2"),
        ("pairs", {"prompts": "newest"}, "prompts must be one of all, unlabelled"),
        ("pairs", {"max_prompts": 0}, "max_prompts must be"),
        ("empty", {}, "project 'empty' has no prompts"),
        ("labelled", {"prompts": "unlabelled"}, "no prompts without labels"),
        ("nope", {}, "unknown project"),
    ]
    for project, overrides, message in refused:
        with pytest.raises(InputError, match=message):
            held.submit(JobRequest("bon", project, bon_config(tiny_model_dir, tiny_reward_dir, **overrides)))
    from storage.snapshots import SnapshotFilters

    with pytest.raises(InputError, match=r"label filters \(annotators, dates, accepted only\) select labels"):
        held.submit(JobRequest("bon", "pairs", bon_config(tiny_model_dir, tiny_reward_dir),
                               SnapshotFilters(annotators=["ann"])))
    assert count(db, Job) == 0 and count(db, Snapshot) == 0
    assert not any((tmp_path / "runs").glob("job-*"))


def test_bon_jobs_that_fail_or_are_cancelled_show_why_and_store_nothing(db, runner, tiny_model_dir,
                                                                       tiny_reward_dir, tmp_path):
    import shutil

    from storage.models import Item, Mode, Project

    make_project(db, "p", prompts=2)
    runner.stop()  # hold the queue while the world changes under the queued jobs
    gone = shutil.copytree(tiny_reward_dir, tmp_path / "rm-copy")
    lost_reward = runner.submit(JobRequest("bon", "p", bon_config(tiny_model_dir, gone)))
    shutil.rmtree(gone)
    unstorable = runner.submit(JobRequest("bon", "p", bon_config(tiny_model_dir, tiny_reward_dir,
                                                                 store_as_items=True)))
    with transaction(db) as s:  # the project can no longer take items of 2 when the job ends
        s.scalars(select(Project)).one().mode = Mode.listwise
    long = runner.submit(JobRequest("bon", "p", bon_config(tiny_model_dir, tiny_reward_dir, max_new_tokens=4000,
                                                           temperature=0.0)))
    runner._stop.clear()
    runner.start()

    failed = wait_for(db, lost_reward, {JobStatus.failed, JobStatus.succeeded})
    assert failed.status == JobStatus.failed and "reward model folder not found" in failed.error
    failed = wait_for(db, unstorable, {JobStatus.failed, JobStatus.succeeded})
    assert failed.status == JobStatus.failed and "could not be recorded" in failed.error
    assert "listwise project 'p' labels 3 to 8" in failed.error
    assert Path(failed.run_dir, "output", "best_of_n.jsonl").exists()  # the dataset itself is fine

    job = wait_for(db, long, {JobStatus.running})
    runner.cancel(long)
    assert not group_alive(job.pid)
    assert wait_for(db, long, {JobStatus.cancelled}).status == JobStatus.cancelled
    assert count(db, Item) == 0
