"""The job runner: a queue that runs one job at a time per device, each in its own subprocess.

Submitting a job freezes its input (a snapshot of the selected labels, or of the project's prompts
for best-of-N), writes the resolved config into a new run folder (`job.json`) and queues a database
row. A supervisor thread starts queued jobs when their device is free (`python -m
annotation.jobs.worker RUN_DIR`, no shell, in its own process group, output to `RUN_DIR/log.txt`;
a job with `processes` > 1 runs the worker under `accelerate launch`, one per process),
and records how each ends: succeeded (with what it produced: the trained model and its lineage, or
the best-of-N candidates stored as items), failed (with the tail of the log), cancelled. Cancel stops
the whole process group, and the groups of the processes the launcher started. When the app starts, jobs a previous run left running are stopped if still
alive and marked interrupted; `resume` queues them again from their last checkpoint (a kind without
checkpoints, best-of-N, starts over on the same frozen input), in the same run folder.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select

from alignment.run_folder import CHECKPOINT_PREFIX, PROGRESS_FILE, STATE_FILE, read_jsonl_so_far
from alignment.training.distributed import launch_command
from alignment.training.memory import with_jemalloc
from annotation.jobs.kinds import JOB_KINDS
from annotation.jobs.worker import FAILURE_FILE
from annotation.services.paths import check_job_paths
from annotation.services.projects import find_project
from storage.db import Database, transaction
from storage.errors import InputError
from storage.models import Job, JobStatus, Snapshot
from storage.snapshots import SnapshotFilters, create_prompt_snapshot, create_snapshot

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 4000
FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
#: What cancel and resume accept (the Train tab enables its buttons by the same lists).
CANCELLABLE = (JobStatus.queued, JobStatus.running)
RESUMABLE = (JobStatus.interrupted, JobStatus.failed, JobStatus.cancelled)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def log_tail(run_dir: Path, chars: int = LOG_TAIL_CHARS) -> str:
    path = run_dir / "log.txt"
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode("utf-8", errors="replace")


def read_result(run_dir: Path) -> dict[str, Any]:
    """The summary the worker wrote when the job ended well (empty before, or if unreadable)."""
    try:
        return json.loads((Path(run_dir) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_progress(run_dir: Path) -> list[dict[str, Any]]:
    """The progress events written so far (a line being written is skipped, not an error)."""
    return read_jsonl_so_far(Path(run_dir) / PROGRESS_FILE)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder under the job's output, if training saved one.

    A job killed while writing a checkpoint leaves a folder without its state file (written last):
    such a folder is skipped, and the job resumes from the checkpoint before it.
    """
    candidates = [p for p in Path(run_dir).rglob(f"{CHECKPOINT_PREFIX}*")
                  if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / STATE_FILE).exists()]
    return max(candidates, key=lambda p: int(p.name.split("-")[-1]), default=None)


@dataclass
class JobRequest:
    kind: str
    project: str
    config: dict[str, Any]  # fields of the kind's config class; data/out (and project) are filled in here
    filters: SnapshotFilters | None = None  # which labels a training job reads


class JobRunner:
    def __init__(self, db: Database, runs_root: str | Path, poll_seconds: float = 0.5, min_labels: int = 4):
        self.db = db
        self.runs_root = Path(runs_root)
        self.poll_seconds = poll_seconds
        self.min_labels = min_labels
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> JobRunner:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self, cancel_running: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if cancel_running:
            for job_id in list(self._procs):
                self.cancel(job_id)

    def recover(self) -> list[int]:
        """Mark jobs a previous app left running as interrupted (stopping any survivor first)."""
        with transaction(self.db) as s:
            stale = s.scalars(select(Job).where(Job.status == JobStatus.running)).all()
            for job in stale:
                if job.id not in self._procs and job.pid:
                    _kill_group(job.pid)
                job.status, job.pid, job.finished_at = JobStatus.interrupted, None, _now()
            return [job.id for job in stale]

    # ---- user actions ----------------------------------------------------------------------------
    def submit(self, request: JobRequest) -> int:
        """Validate, freeze the input and queue the job; bad input raises InputError, queues nothing."""
        kind = JOB_KINDS.get(request.kind)
        if kind is None:
            raise InputError(f"unknown job kind {request.kind!r}: use {', '.join(JOB_KINDS)}")
        check_job_paths(request.config)  # first: the config's own checks would name the paths they miss
        run_dir = None
        try:
            with transaction(self.db) as s:
                project = find_project(s, request.project)
                job = Job(kind=kind.name, status=JobStatus.queued, config={}, run_dir="", project_id=project.id)
                s.add(job)
                s.flush()
                run_dir = self.runs_root / f"job-{job.id:05d}-{kind.name}"
                snapshot, extra = self._freeze_input(s, kind, project, run_dir / "snapshot", request)
                values = {**request.config, **extra, "data": snapshot.path, "out": str(run_dir / "output")}
                if _has_field(kind.config_class, "project"):
                    values["project"] = project.name
                config = build_config(kind.name, values)
                check_models(config)
                if kind.trains:
                    check_model_settings(config)
                if kind.check is not None:
                    kind.check(project, config)
                job.config, job.run_dir, job.snapshot_id = config.to_dict(), str(run_dir), snapshot.id
                job.device = config.resolved_device()
                self._write_spec(run_dir, kind.name, job.config)
                return job.id
        except BaseException:
            if run_dir is not None:  # the row is rolled back: leave no orphan folder either
                shutil.rmtree(run_dir, ignore_errors=True)
            raise

    def _freeze_input(self, session, kind, project, out_dir: Path, request: JobRequest) -> tuple[Snapshot, dict]:
        """The job's input, written now: labels or prompts added while it waits never change what it
        reads. Returns the snapshot and any config values that point into it."""
        if kind.snapshot in ("pairs", "rankings"):
            return create_snapshot(session, project, kind.snapshot, out_dir, request.filters,
                                   min_rows=self.min_labels), {}
        if request.filters is not None and any(asdict(request.filters).values()):
            raise InputError(f"label filters (annotators, dates, accepted only) select labels; a {kind.name} job "
                             "reads prompts: choose them with its prompts and max_prompts settings")
        if kind.freeze is not None:
            return kind.freeze(session, project, out_dir, request.config)
        return create_prompt_snapshot(session, project, out_dir, request.config.get("prompts", "all"),
                                      request.config.get("max_prompts")), {}

    def cancel(self, job_id: int) -> None:
        with self._lock, transaction(self.db) as s:
            job = self._get(s, job_id)
            if job.status in FINISHED:
                raise InputError(f"job {job_id} already {job.status.value}")
            proc = self._procs.pop(job_id, None)
            if proc is not None:
                _kill_group(proc.pid)
                proc.wait()
            job.status, job.pid, job.finished_at = JobStatus.cancelled, None, _now()

    def resume(self, job_id: int) -> None:
        """Queue an interrupted (or failed/cancelled) job again, from its last checkpoint if any."""
        with transaction(self.db) as s:
            job = self._get(s, job_id)
            if job.status not in RESUMABLE:
                raise InputError(f"job {job_id} is {job.status.value}: only interrupted, failed or cancelled "
                                 f"jobs can be resumed")
            config = dict(job.config)
            if _has_field(JOB_KINDS[job.kind].config_class, "resume_from"):
                checkpoint = latest_checkpoint(Path(job.run_dir))
                config["resume_from"] = str(checkpoint) if checkpoint else None
            job.config, job.status, job.error, job.finished_at = config, JobStatus.queued, None, None
            (Path(job.run_dir) / FAILURE_FILE).unlink(missing_ok=True)
            self._write_spec(Path(job.run_dir), job.kind, config)

    # ---- supervision -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the supervisor must outlive any one bad job
                log.exception("job runner tick failed")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        """Record jobs that ended, then start queued jobs on free devices."""
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[job_id]
                    self._finish(job_id, proc.returncode)
            with transaction(self.db) as s:
                busy = {j.device for j in s.scalars(select(Job).where(Job.status == JobStatus.running))}
                for job in s.scalars(select(Job).where(Job.status == JobStatus.queued).order_by(Job.id)):
                    if job.device in busy:
                        continue
                    busy.add(job.device)
                    self._launch(job)

    def _launch(self, job: Job) -> None:
        run_dir = Path(job.run_dir)
        with (run_dir / "log.txt").open("ab") as logf:
            proc = subprocess.Popen(worker_command(run_dir, job.config.get("processes", 1)), cwd=ROOT,
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**with_jemalloc(), "PYTHONUNBUFFERED": "1"})
        self._procs[job.id] = proc
        job.status, job.pid, job.started_at = JobStatus.running, proc.pid, _now()
        log.info("job %s (%s) started, pid %s", job.id, job.kind, proc.pid)

    def _finish(self, job_id: int, returncode: int) -> None:
        try:
            note = self._record_end(job_id, returncode)
        except Exception as exc:  # noqa: BLE001 - e.g. the project can no longer take the items
            # The transaction above rolled back: nothing it produced is recorded, and the job says why.
            log.exception("job %s: recording its output failed", job_id)
            note = None
            with transaction(self.db) as s:
                job = self._get(s, job_id)
                job.status, job.pid, job.finished_at = JobStatus.failed, None, _now()
                job.error = f"the job ran, but its output could not be recorded: {exc}"
        if note:  # after the commit, so the log never claims what the database does not hold
            with transaction(self.db) as s:
                run_dir = Path(self._get(s, job_id).run_dir)
            with (run_dir / "log.txt").open("a", encoding="utf-8") as logf:
                logf.write(f"{note}\n")
        log.info("job %s finished with exit code %s", job_id, returncode)

    def _record_end(self, job_id: int, returncode: int) -> str | None:
        """Mark the job succeeded (recording what it produced, in the same transaction) or failed."""
        with transaction(self.db) as s:
            job = self._get(s, job_id)
            if job.status != JobStatus.running:
                return None  # cancelled meanwhile
            job.pid, job.finished_at = None, _now()
            run_dir = Path(job.run_dir)
            result = read_result(run_dir)
            if returncode == 0 and result:
                job.status = JobStatus.succeeded
                return JOB_KINDS[job.kind].record(s, job, result)
            job.status = JobStatus.failed
            # The first line says why, for the queue table; the log's tail follows, for the details.
            job.error = f"{failure_reason(run_dir, returncode)}\n{log_tail(run_dir)}"
            return None

    # ---- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _get(session, job_id: int) -> Job:
        job = session.get(Job, job_id)
        if job is None:
            raise InputError(f"unknown job {job_id}")
        return job

    @staticmethod
    def _write_spec(run_dir: Path, kind: str, config: dict) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "job.json").write_text(json.dumps({"kind": kind, "config": config}, indent=2), encoding="utf-8")


def worker_command(run_dir: Path, processes: int = 1) -> list[str]:
    """The job's command: the worker alone, or in ``processes`` processes under accelerate's launcher."""
    target = ["annotation.jobs.worker", str(run_dir)]
    if processes > 1:
        return launch_command(processes, target, module=True)
    return [sys.executable, "-m", *target]


def failure_reason(run_dir: Path, returncode: int) -> str:
    """Why a job failed, in one line: what the worker caught, else how the process ended."""
    try:
        return (run_dir / FAILURE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        pass
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
        hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
        return f"the job process was killed by signal {name}{hint}"
    return f"the job process exited with code {returncode} (see the log)"


def build_config(kind_name: str, values: dict[str, Any]):
    """The kind's config from form or CLI values; bad values raise InputError with the reason."""
    kind = JOB_KINDS[kind_name]
    try:
        return kind.config_class.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid {kind_name} settings: {exc}") from None


def check_model_settings(config) -> None:
    """A training job's model, checkpoint and LoRA targets, checked at launch (seconds, no weights
    loaded) rather than a minute into the job."""
    from alignment.training.preflight import check_model_inputs

    try:
        check_model_inputs(config)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot read the model {config.model!r}: {exc}") from None


def check_models(config) -> None:
    """Refuse at submit the models a job of any kind would only find missing after a minute of
    loading: the base model (a model file or folder, or a hub id this machine has), and the adapter
    and reward-model folders of the kinds that take them."""
    from alignment.run_configs import check_adapter_dir, check_reward_dir
    from alignment.models import check_model_available
    from alignment.training.preflight import check_model_spec

    try:
        if getattr(config, "model", None):
            check_model_spec(config.model)
            check_model_available(config.model)
        if getattr(config, "adapter", None):
            check_adapter_dir(config.adapter)
        if getattr(config, "reward", None):
            check_reward_dir(config.reward)
    except (ValueError, RuntimeError) as exc:
        raise InputError(str(exc)) from None


def _has_field(config_class: type, name: str) -> bool:
    return any(f.name == name for f in fields(config_class))


def job_groups(pid: int) -> set[int]:
    """The process groups of a job: its own (``pid``'s), and those of the processes under it that
    started groups of their own (torchrun starts each training process in a new session)."""
    import psutil

    groups = {pid}
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                groups.add(os.getpgid(child.pid))
            except ProcessLookupError:
                continue
    except psutil.NoSuchProcess:
        pass
    return groups


def _kill_group(pid: int, grace_seconds: float = 5.0) -> None:
    """SIGTERM the job's process groups, SIGKILL what is left of them after a grace period."""
    import time

    groups = job_groups(pid)  # read before the signal: a launcher that dies first orphans its ranks

    def signal_groups(sig: int) -> set[int]:
        alive = set()
        for group in groups:
            try:
                os.killpg(group, sig)
                alive.add(group)
            except ProcessLookupError:
                continue
        return alive

    groups = signal_groups(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while groups and time.monotonic() < deadline:
        time.sleep(0.1)
        groups = signal_groups(0)
    signal_groups(signal.SIGKILL)


def phase_eta_seconds(events: list[dict[str, Any]]) -> float | None:
    """Time left in the phase the events end with, at the pace of its items so far (None if it counts none)."""
    last = events[-1]
    first = last
    for event in reversed(events):
        if event.get("event") != "phase" or event.get("phase") != last.get("phase"):
            break
        first = event
    done, total = last.get("done"), last.get("total")
    if not (isinstance(done, int) and isinstance(total, int) and done > (first.get("done") or 0)):
        return None
    rate = (last["time"] - first["time"]) / (done - (first.get("done") or 0))
    return max(0.0, rate * (total - done))


def job_rows(db: Database) -> list[dict[str, Any]]:
    """Jobs for the queue table, newest first, with their latest progress."""
    rows = []
    with transaction(db) as s:
        for job in s.scalars(select(Job).order_by(Job.id.desc())):
            events = read_progress(Path(job.run_dir)) if job.run_dir else []
            last = next((e for e in reversed(events) if e.get("event") in ("step", "eval", "train_end")), {})
            phase = events[-1] if events and events[-1].get("event") == "phase" else {}
            phase_eta = phase_eta_seconds(events) if phase else None
            snapshot = s.get(Snapshot, job.snapshot_id) if job.snapshot_id else None
            counts = (snapshot.counts or {}) if snapshot else {}
            kind = JOB_KINDS.get(job.kind)
            # The output is shown once the job succeeded: before that the folder may hold half of it.
            result = read_result(Path(job.run_dir)) if job.status == JobStatus.succeeded else {}
            rows.append({"id": job.id, "kind": job.kind, "status": job.status.value, "device": job.device,
                         "run_dir": job.run_dir, "out": (job.config or {}).get("out"),
                         "unit": kind.unit if kind else "step",
                         "step": last.get("step"), "total_steps": last.get("total_steps"),
                         "loss": last.get("loss"), "eta_s": last.get("eta_s"),
                         "labels": None if "prompts" in counts else counts.get("rows"),
                         "prompts": counts.get("prompts"),
                         "output": result.get("output") or result.get("out_dir"),
                         "produces": kind.produces if kind else None,
                         "phase": phase.get("phase"), "phase_done": phase.get("done"),
                         "phase_total": phase.get("total"), "phase_eta_s": phase_eta,
                         "reason": job.error.splitlines()[0] if job.error else None,
                         "error": job.error})
    return rows
