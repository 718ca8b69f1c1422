"""Headless training (`app.py train ...`): the same methods and configs as the background jobs,
run in the foreground with a progress bar, from a project's labels or from a TRL JSONL file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alignment.rl.rewards import RewardError
from alignment.training.data import DataError
from alignment.training.preflight import check_training_inputs
from annotation.jobs.kinds import JOB_KINDS
from annotation.jobs.runner import build_config
from annotation.services.projects import find_project
from storage.db import Database, transaction
from storage.errors import InputError
from storage.snapshots import SnapshotFilters, create_prompt_snapshot, create_snapshot


def training_kind(kind_name: str):
    """The job kind of a training method; InputError naming the methods for anything else."""
    kind = JOB_KINDS.get(kind_name)
    if kind is None or not kind.trains:
        methods = ", ".join(k.name for k in JOB_KINDS.values() if k.trains)
        hint = " (best-of-N runs with `app.py bon`)" if kind is not None else ""
        raise InputError(f"unknown method {kind_name!r}: use {methods}{hint}")
    return kind


def snapshot_project(kind_name: str, out: str, db: Database, project: str,
                     filters: SnapshotFilters | None = None) -> str:
    """The project's labels (or prompts) for a training run, frozen into OUT/snapshot: its data file."""
    kind = training_kind(kind_name)
    with transaction(db) as s:
        out_dir = Path(out) / "snapshot"
        snapshot = (create_prompt_snapshot(s, find_project(s, project), out_dir) if kind.snapshot == "prompts"
                    else create_snapshot(s, find_project(s, project), kind.snapshot, out_dir, filters))
        return snapshot.path


def headless_config(kind_name: str, values: dict[str, Any], db: Database | None = None, project: str | None = None,
                    filters: SnapshotFilters | None = None):
    """The checked config of a headless run of `values` (config fields); `project` snapshots its
    labels into OUT/snapshot first. Bad values raise InputError before any model loads."""
    training_kind(kind_name)
    values = {k: v for k, v in values.items() if v is not None}
    if project is not None:
        if db is None:
            raise InputError("--project needs --db")
        values["data"] = snapshot_project(kind_name, values["out"], db, project, filters)
    elif not values.get("data"):
        raise InputError("give the labels to train on: --data FILE, or --db DB --project NAME")
    config = build_config(kind_name, values)
    try:
        check_training_inputs(config)  # seconds, before the model loads for a minute
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot read the model: {exc}") from None
    return config


def train_headless(kind_name: str, values: dict[str, Any], db: Database | None = None, project: str | None = None,
                   filters: SnapshotFilters | None = None, progress_bar: bool = True):
    """Train with `values` (config fields); `project` snapshots its labels into OUT/snapshot first."""
    kind = training_kind(kind_name)
    config = headless_config(kind_name, values, db, project, filters)
    callbacks = []
    if progress_bar:
        from alignment.training.callbacks import TqdmCallback

        callbacks.append(TqdmCallback())
    try:
        return kind.run(config, callbacks=callbacks)
    except (RewardError, DataError) as exc:  # a reward function or data file that fails: one clear line
        raise InputError(f"{exc}; no adapter was saved") from None

