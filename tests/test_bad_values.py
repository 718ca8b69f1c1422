"""Values refused where they are entered (issue 12, item 18): names with control characters, NaN,
infinite and fractional ratings and ranks, form numbers Gradio would have rounded, and a training
job whose LoRA targets the model lacks. Real SQLite files, the real services and job runner."""
from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from alignment.training.config import DPOConfig
from annotation.jobs.runner import JobRequest, JobRunner
from annotation.services import labelling
from annotation.services.projects import ProjectSettings, create_project, ensure_user, project_names
from annotation.ui.forms import build_form, form_values
from storage.db import transaction
from storage.errors import InputError
from storage.models import Job, Rating, Ranking, User
from tests.factories import make_items, make_project
from tests.test_jobs import labelled_project, tiny_config


def count(db, model) -> int:
    with transaction(db) as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "new\nline", "broken \ud800"])
def test_a_project_name_with_an_invisible_character_is_refused(db, name):
    with pytest.raises(InputError, match="project name contains the invisible character U\\+"):
        create_project(db, ProjectSettings(name=name))
    assert project_names(db) == []


def test_an_annotator_name_with_a_control_character_is_refused(db):
    with pytest.raises(InputError, match="annotator name contains the invisible character U\\+0000"):
        with transaction(db) as s:
            ensure_user(s, "dave\x00")
    assert count(db, User) == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2.7, "2.7", "three", None, True])
def test_a_rating_that_is_not_a_whole_number_is_refused_and_nothing_stored(db, bad):
    make_project(db, "rate", mode="pointwise", k=2)
    make_items(db, "rate", 1)
    view = labelling.next_item(db, "rate", "ann")
    with pytest.raises(InputError, match="every rating must be a whole number from 1 to 5, got"):
        labelling.submit_ratings(db, view, [4, bad])
    assert count(db, Rating) == 0


def test_whole_ratings_given_as_floats_or_text_are_stored_as_integers(db):
    make_project(db, "rate", mode="pointwise", k=2)
    make_items(db, "rate", 1)
    view = labelling.next_item(db, "rate", "ann")
    labelling.submit_ratings(db, view, [4.0, "2"])
    with transaction(db) as s:
        assert sorted(s.scalars(select(Rating.score))) == [2, 4]


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2.5, None])
def test_a_rank_that_is_not_a_whole_number_is_refused(db, bad):
    make_project(db, "rank", mode="listwise", k=3)
    make_items(db, "rank", 1)
    view = labelling.next_item(db, "rank", "ann")
    with pytest.raises(InputError, match="every response needs a rank: a whole number, got"):
        labelling.groups_from_ranks(view, [1, bad, 2])
    assert count(db, Ranking) == 0


def test_the_train_form_refuses_fractional_and_infinite_numbers_instead_of_rounding_them():
    form = build_form(DPOConfig, exclude=("data", "out"))
    # What Gradio hands the server for a typed 1.5: the value itself (precision=0 used to make it 2).
    epochs = form["epochs"].preprocess(1.5)
    assert epochs == 1.5
    with pytest.raises(ValueError, match="^Epochs must be a whole number, not 1.5$"):
        form_values(DPOConfig, {"epochs": epochs})
    with pytest.raises(ValueError, match="^LoRA rank must be a whole number, not inf$"):
        form_values(DPOConfig, {"lora_r": math.inf})
    with pytest.raises(ValueError, match="^Weight decay must be a finite number, not inf$"):
        form_values(DPOConfig, {"weight_decay": math.inf})
    with pytest.raises(ValueError, match=r"^Gradient clipping \(max norm\) must be a finite number, not nan$"):
        form_values(DPOConfig, {"max_grad_norm": "nan"})
    assert form_values(DPOConfig, {"epochs": form["epochs"].preprocess(3.0), "lr": 1e-4}) == {"epochs": 3, "lr": 1e-4}


def test_a_training_job_naming_modules_the_model_lacks_is_refused_at_launch(db, tmp_path, tiny_model_dir):
    labelled_project(db)
    runner = JobRunner(db, tmp_path / "runs")  # not started: a refused job must not even be queued
    with pytest.raises(InputError) as caught:
        runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir, target_modules="q_proj, attn.c_attn")))
    assert str(caught.value).startswith("LoRA target module(s) attn.c_attn not found in ")
    assert "its linear layers are: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" \
        in str(caught.value)
    assert count(db, Job) == 0 and not any((tmp_path / "runs").glob("job-*"))
    job_id = runner.submit(JobRequest("dpo", "p", tiny_config(tiny_model_dir, target_modules="q_proj, v_proj")))
    with transaction(db) as s:
        assert s.get(Job, job_id).config["target_modules"] == ["q_proj", "v_proj"]
