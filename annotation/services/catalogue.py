"""The model catalogue: which models the app can answer with, and what each one is called.

This module owns

* :class:`ModelOption`, :func:`model_options`, :func:`resolve_models`: the models to pick from for
  a side-by-side comparison or an arena match (the base model(s) and every trained policy
  adapter), each picked by a key: ``base:<spec>`` for a base model alone, ``trained:<id>`` for a
  trained policy adapter (on the base model it was trained on). Keys keep model paths out of the
  browser's choices and let a stale choice (a deleted model) fail with a clear message;
* :func:`trained_choices`, :func:`reward_options`: trained models of one kind as (label, folder)
  choices;
* names: :func:`model_identity` (what makes two models the same), :func:`display_name` and
  :func:`distinct_names` (how a model is named in the UI, at the arena's reveal and on the
  leaderboard), from :func:`trained_adapter_names`.

It reads the database; it loads no model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from alignment.run_folder import ModelKind
from storage.db import Database, transaction
from storage.errors import InputError
from storage.models import TrainedModel


def model_identity(model: str, adapter: str | None) -> tuple[str, str | None]:
    """(base model spec, adapter folder or None), normalised so the same model compares equal."""
    model = (model or "").strip()
    adapter = (adapter or "").strip() or None
    return model, os.path.normpath(adapter) if adapter else None


def base_name(spec: str) -> str:
    """A base model's short name: a folder's own name, else the spec ('default', a hub id)."""
    return Path(spec).name if spec and Path(spec).expanduser().is_absolute() else spec


def display_name(model: str, adapter: str | None, trained: dict[str, str] | None = None) -> str:
    """How a model is named at the reveal and on the leaderboard: the TrainedModel's name for a known
    adapter, else 'base + adapter folder name', else the base model's short name."""
    if not adapter:
        return base_name(model)
    known = (trained or {}).get(os.path.normpath(adapter))
    return known or f"{base_name(model)} + {Path(adapter).name}"


def trained_adapter_names(session) -> dict[str, str]:
    """Adapter folder -> TrainedModel name, for the policy adapters the app trained."""
    rows = session.execute(select(TrainedModel.path, TrainedModel.name)
                           .where(TrainedModel.kind == ModelKind.POLICY_ADAPTER))
    return {os.path.normpath(path): name for path, name in rows}


def distinct_names(identities: set[tuple[str, str | None]],
                   trained: dict[str, str]) -> dict[tuple[str, str | None], str]:
    """A distinct display name per identity (the same adapter on two base models gets its base added)."""
    names = {identity: display_name(*identity, trained) for identity in identities}
    taken: dict[str, int] = {}
    for name in names.values():
        taken[name] = taken.get(name, 0) + 1
    return {identity: name if taken[name] == 1 else f"{name} (on {identity[0]})" if identity[1] else identity[0]
            for identity, name in names.items()}


@dataclass(frozen=True)
class ModelOption:
    key: str  # base:<spec> | trained:<id>
    name: str  # shown in the UI, at the arena's reveal and on the leaderboard
    model: str  # base model spec
    adapter: str | None = None  # adapter folder, None for the base model alone


def model_options(db: Database, default_model: str = "default") -> list[ModelOption]:
    """The base model(s) and every trained policy adapter: the app's base model first, then each other
    base an adapter was trained on, then the adapters, newest first."""
    with transaction(db) as s:
        adapters = s.scalars(select(TrainedModel).where(TrainedModel.kind == ModelKind.POLICY_ADAPTER)
                             .order_by(TrainedModel.id.desc())).all()
        trained = trained_adapter_names(s)
    bases = list(dict.fromkeys([default_model, *(m.base_model for m in adapters)]))
    options = [ModelOption(f"base:{spec}", display_name(spec, None), spec) for spec in bases]
    options += [ModelOption(f"trained:{m.id}", display_name(m.base_model, m.path, trained), m.base_model, m.path)
                for m in adapters]
    return options


def resolve_models(db: Database, keys: list[str], default_model: str = "default") -> list[ModelOption]:
    """The options for these keys, in order; InputError for none picked, an unknown key or a repeat."""
    keys = [k for k in (keys or []) if k]
    if not keys:
        raise InputError("pick the models to compare")
    options = {o.key: o for o in model_options(db, default_model)}
    picked = []
    for key in keys:
        if key not in options:
            raise InputError(f"unknown model {key!r}: refresh the list (was it deleted?)")
        option = options[key]
        if option in picked:
            raise InputError(f"{option.name} is picked twice: pick different models")
        picked.append(option)
    return picked


def trained_choices(db: Database, kind: ModelKind) -> list[tuple[str, str]]:
    """(label, folder) of every trained model of ``kind``, newest first: the choices of a folder picker."""
    with transaction(db) as s:
        rows = s.execute(select(TrainedModel.name, TrainedModel.job_id, TrainedModel.path)
                         .where(TrainedModel.kind == kind).order_by(TrainedModel.id.desc())).all()
    return [(f"{name} (job {job})", path) for name, job, path in rows]


def reward_options(db: Database) -> list[tuple[str, str]]:
    """(label, folder) of every trained reward model, newest first."""
    return trained_choices(db, ModelKind.REWARD_MODEL)
