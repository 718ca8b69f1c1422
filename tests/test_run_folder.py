"""alignment.run_folder: the run folder's file names and model kinds that trainers and readers share."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from alignment.run_folder import ModelKind, read_json, recorded_base_model, saved_training_config
from alignment.training.config import DPOConfig
from storage.db import transaction
from storage.models import TrainedModel


def test_model_kinds_keep_the_strings_existing_databases_hold(db):
    assert [kind.value for kind in ModelKind] == ["policy-adapter", "reward-model"]
    with transaction(db) as s:  # a row written before the enum existed, as a bare string
        s.add(TrainedModel(name="old", kind="reward-model", path="/x", base_model="default", metrics={}))
        s.add(TrainedModel(name="new", kind=ModelKind.POLICY_ADAPTER, path="/y", base_model="default", metrics={}))
    with transaction(db) as s:
        assert s.scalars(select(TrainedModel.name).where(TrainedModel.kind == ModelKind.REWARD_MODEL)).all() == ["old"]
        assert s.scalars(select(TrainedModel.kind).where(TrainedModel.name == "new")).one() == "policy-adapter"


def test_a_saved_config_is_read_back_through_the_contract(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    DPOConfig(data=str(data), out=str(tmp_path / "run"), model="my-base").save(tmp_path / "run")
    assert saved_training_config(tmp_path / "run")["model"] == "my-base"
    assert saved_training_config(tmp_path) is None
    assert recorded_base_model(tmp_path / "run") is None


def test_an_unreadable_file_names_itself(tmp_path):
    bad = tmp_path / "adapter_config.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="adapter_config.json: unreadable"):
        read_json(bad)
    bad.write_text(json.dumps({"base_model_name_or_path": "/models/base"}), encoding="utf-8")
    assert recorded_base_model(tmp_path) == "/models/base"
