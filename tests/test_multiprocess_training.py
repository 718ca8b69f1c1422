"""Training under `accelerate launch` with 2 CPU processes (gloo), in real subprocesses.

The claim tested: N processes with batch B take the same optimizer steps as one process with batch
N x B (the loop gives each process every N-th batch and DDP averages the gradients), and only the
main process writes the run folder.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from alignment.run_folder import METRICS_FILE, REFERENCE_FILE
from alignment.training.distributed import free_port
from annotation.jobs.runner import read_progress, worker_command

ROOT = Path(__file__).resolve().parents[1]
#: Adapter weights after two steps agree to this (float32 sums taken in a different order: the
#: 2-process gradient is the mean of two half-batch means).
ATOL, RTOL = 1e-6, 1e-4


def pairs_file(path: Path, n: int = 12) -> Path:
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "chosen": f"It is {2 * i}." + " Indeed." * (i % 3),
             "rejected": f"Maybe {i + 1}?" + " Hmm." * (i % 4)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rankings_file(path: Path, n: int = 12) -> Path:
    rows = [{"prompt": f"Question {i}: name {i} colours.", "completions": ["Red, blue." + " Green." * (i % 3),
             f"I know {i}.", "No." + " Never." * (i % 2)], "ranks": [0, 1, 1 + i % 2]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def job_config(kind: str, model_dir: Path, data: Path, out: Path, **overrides) -> dict:
    return {"model": str(model_dir), "data": str(data), "out": str(out), "max_steps": 2, "lr": 1e-2,
            "max_length": 64, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "eval_fraction": 0.25,
            "seed": 3, "device": "cpu", **({"beta": 0.5} if kind in ("dpo", "pl-dpo") else {}), **overrides}


def run_worker(run_dir: Path, kind: str, config: dict, processes: int) -> subprocess.CompletedProcess:
    """The job worker on RUN_DIR, as the runner starts it: alone, or under `accelerate launch`."""
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps({"kind": kind, "config": config}), encoding="utf-8")
    done = subprocess.run(worker_command(run_dir, processes), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize("kind", ["dpo", "rm", "pl-dpo"])
def test_two_processes_with_half_the_batch_train_the_same_adapter(kind, tiny_model_dir, tmp_path):
    import torch

    from alignment.training.data import load_pairs, load_rankings, split

    if kind == "pl-dpo":
        data = rankings_file(tmp_path / "rankings.jsonl")
        examples = load_rankings(str(data)).rankings
    else:
        data = pairs_file(tmp_path / "pairs.jsonl")
        examples = load_pairs(str(data))
    train, held_out = split(examples, 0.25, 3)
    assert len(train) >= 8 and held_out, "two full global batches of 4 and a held-out set"
    one, two = tmp_path / "one", tmp_path / "two"
    run_worker(one, kind, job_config(kind, tiny_model_dir, data, one / "output", batch_size=4), processes=1)
    run_worker(two, kind, job_config(kind, tiny_model_dir, data, two / "output", batch_size=2,
                                     processes=2), processes=2)

    # The adapters: trained (moved from LoRA's zero init) and equal to the stated tolerance.
    single, double = adapter_weights(one / "output"), adapter_weights(two / "output")
    assert single.keys() == double.keys() and single
    moved = [name for name, w in single.items() if "lora_B" in name and w.abs().max() > 0]
    assert moved, "the two steps changed nothing"
    for name, weight in single.items():
        torch.testing.assert_close(double[name], weight, atol=ATOL, rtol=RTOL, msg=name)

    # The logged steps: the loss of the whole global batch (averaged over the processes), and the
    # gradient norm DDP's average gives; each step logged once, by the main process.
    steps = {run: [e for e in read_progress(run / "output") if e["event"] == "step"] for run in (one, two)}
    assert [e["step"] for e in steps[two]] == [1, 2]
    for a, b in zip(steps[one], steps[two]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["metrics"]["grad_norm"] == pytest.approx(a["metrics"]["grad_norm"], rel=1e-4)

    # The held-out evaluation, shared out over the processes and gathered back in order.
    metrics = {run: json.loads((run / "output" / METRICS_FILE).read_text()) for run in (one, two)}
    assert metrics[two]["processes"] == 2 and metrics[one]["processes"] == 1
    assert metrics[two]["eval"]["n"] == len(held_out)
    for name, value in metrics[one]["eval"].items():
        assert metrics[two]["eval"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name

    if kind != "rm":  # the reference pass, computed in halves and gathered, is the same table
        tables = [torch.load(run / "output" / REFERENCE_FILE, weights_only=True) for run in (one, two)]
        for part in ("train", "eval"):
            torch.testing.assert_close(tables[1][part], tables[0][part], atol=1e-5, rtol=1e-5)

    # Only the main process wrote the job's files: one loading phase, the reference pass counted
    # over all the examples (the main process's share, scaled), one result.
    phases = [e for e in read_progress(two) if e["event"] == "phase"]
    assert [e["phase"] for e in phases].count("loading the model") == 1
    if kind != "rm":
        assert phases[-1]["phase"] == "reference pass"
        assert phases[-1]["done"] == phases[-1]["total"] == len(train) + len(held_out)
    result = json.loads((two / "result.json").read_text())
    assert result["steps"] == 2 and Path(result["out_dir"]) == two / "output"
    assert len([e for e in read_progress(two / "output") if e["event"] == "train_end"]) == 1
    assert not (two / "failure.txt").exists()


def test_a_two_process_job_from_the_runner_records_its_lineage_and_cancel_stops_every_process(
        db, tmp_path, tiny_model_dir):
    from sqlalchemy import select

    from annotation.jobs.runner import JobRequest, JobRunner, job_groups
    from storage.db import transaction
    from storage.models import JobStatus, TrainedModel
    from tests.test_jobs import group_alive, labelled_project, tiny_config, wait_for

    labelled_project(db)
    runner = JobRunner(db, tmp_path / "runs", poll_seconds=0.2).start()
    try:
        job_id = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir, processes=2)))
        job = wait_for(db, job_id, {JobStatus.succeeded, JobStatus.failed}, timeout=600)
        assert job.status == JobStatus.succeeded, job.error
        events = read_progress(Path(job.run_dir))
        assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
        assert [e.get("phase") for e in events].count("loading the model") == 1
        with transaction(db) as s:
            model = s.scalars(select(TrainedModel)).one()
            assert model.job_id == job_id and model.snapshot_id == job.snapshot_id
            assert "eval/rewards/accuracies" in model.metrics
        assert json.loads((Path(model.path) / METRICS_FILE).read_text())["processes"] == 2

        # Cancel: the launcher and both training processes (in sessions of their own) are stopped.
        long = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir, processes=2, max_steps=10_000)))
        running = wait_for(db, long, {JobStatus.running})
        deadline = time.time() + 300
        while not any(e["event"] == "step" for e in read_progress(Path(running.run_dir))):
            assert time.time() < deadline, "no step within 300 s"
            time.sleep(0.3)
        groups = job_groups(running.pid)
        assert len(groups) == 3, groups  # the launcher's, and one per training process
        runner.cancel(long)
        assert not any(group_alive(g) for g in groups)
        assert wait_for(db, long, {JobStatus.cancelled}).status == JobStatus.cancelled
    finally:
        runner.stop(cancel_running=True)


def test_the_cli_launches_two_processes_from_a_project(db, tmp_path, tiny_model_dir):
    import os
    import sys

    from tests.test_jobs import labelled_project

    labelled_project(db)
    out = tmp_path / "rm"
    done = subprocess.run(
        [sys.executable, "app.py", "train", "rm", "--db", db.url, "--project", "p", "--out", str(out),
         "--model", str(tiny_model_dir), "--max-steps", "2", "--batch-size", "2", "--max-length", "64",
         "--lora-r", "4", "--processes", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("trained rm: 2 steps") == 1  # said once, by the main process
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 2
    assert len(list((out / "snapshot").glob("*.jsonl"))) == 1  # the project snapshotted once

    # The same entry point under a plain `accelerate launch` with the shipped CPU config, from a file.
    data = next((out / "snapshot").glob("*.jsonl"))
    plain = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "docs/accelerate/cpu_ddp.yaml",
         "--main_process_port", str(free_port()), "app.py", "train", "rm", "--data", str(data),
         "--out", str(tmp_path / "plain"), "--model", str(tiny_model_dir), "--max-steps", "1", "--batch-size", "2",
         "--max-length", "64", "--lora-r", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    assert json.loads((tmp_path / "plain" / METRICS_FILE).read_text())["processes"] == 2

    # Under a plain `accelerate launch` every process would snapshot the project: refused, clearly.
    refused = subprocess.run([sys.executable, "app.py", "train", "rm", "--db", db.url, "--project", "p",
                              "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "WORLD_SIZE": "2", "RANK": "1"})
    assert refused.returncode == 2 and "give --data" in refused.stderr


@pytest.mark.parametrize("name, backend", [("cpu_ddp", "MULTI_GPU"), ("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"),
                                           ("zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_the_shipped_accelerate_configs_are_valid_accelerate_configs(name, backend):
    """What can be checked without GPUs: accelerate reads each file as a launch config of its kind."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "docs" / "accelerate" / f"{name}.yaml"))
    assert str(config.distributed_type).endswith(backend) and config.num_machines == 1
    assert config.num_processes == (2 if name == "cpu_ddp" else 8)
