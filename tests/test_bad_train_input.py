"""`app.py train` with bad inputs and values (issue 12, items 13 and 18): a one-line report and exit
code 2 within seconds, before the model loads; a full disk while saving is one line too. Real
subprocesses, real files, the tiny test model."""
from __future__ import annotations

import resource
from pathlib import Path

import pytest

from tests.test_bad_input import tiny_disk  # noqa: F401  (a fixture)
from tests.test_cli import app, write_jsonl

PAIRS = [{"prompt": f"Question {i}?", "chosen": f"A helpful answer {i}.", "rejected": f"No {i}."} for i in range(8)]


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_refused(*args, reason: str, within: float = 15) -> str:
    """Refused with one line, having spent less than `within` CPU seconds: no model was loaded (CPU time,
    not wall time: the shared test machine may be busy)."""
    started = child_cpu_seconds()
    result = app("train", *args, timeout=300)
    took = child_cpu_seconds() - started
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert reason in result.stderr, result.stderr
    assert took < within, f"refused only after {took:.0f} CPU seconds"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return result.stderr


def test_a_model_that_is_a_plain_file_is_refused(pairs_file, tmp_path):
    train_refused("dpo", "--data", pairs_file, "--model", "/etc/passwd", "--out", tmp_path / "o",
                  reason="/etc/passwd is not a model")


def test_a_model_folder_without_a_model_is_refused(pairs_file, tmp_path):
    train_refused("dpo", "--data", pairs_file, "--model", "/etc", "--out", tmp_path / "o",
                  reason="model folder /etc holds no model (no config.json)")


def test_data_that_is_not_preference_data_is_refused_with_its_line(tiny_model_dir, tmp_path):
    train_refused("rm", "--data", "/etc/passwd", "--model", tiny_model_dir, "--out", tmp_path / "o",
                  reason="/etc/passwd:1: invalid JSON")


def test_binary_data_is_refused(tiny_model_dir, tmp_path):
    data = tmp_path / "weights.jsonl"
    data.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    train_refused("dpo", "--data", data, "--model", tiny_model_dir, "--out", tmp_path / "o",
                  reason="is not UTF-8 text")


def test_resuming_from_a_folder_that_is_no_checkpoint_is_refused_before_loading(pairs_file, tmp_path):
    # The default model takes most of a minute to load: the refusal must come before it.
    train_refused("dpo", "--data", pairs_file, "--resume-from", "/etc", "--out", tmp_path / "o",
                  reason="cannot resume: /etc is not a checkpoint folder")


def test_lora_target_modules_that_the_model_lacks_are_named_with_those_it_has(tiny_model_dir, pairs_file, tmp_path):
    from annotation.services.training import train_headless
    from storage.errors import InputError

    with pytest.raises(InputError) as caught:
        train_headless("dpo", {"data": str(pairs_file), "out": str(tmp_path / "o"), "model": str(tiny_model_dir),
                               "target_modules": ["q_proj", "query_key_value"]}, progress_bar=False)
    message = str(caught.value)
    assert message.startswith("LoRA target module(s) query_key_value not found in ")
    assert "its linear layers are: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in message
    assert not (tmp_path / "o").exists()


def test_max_length_beyond_the_models_context_is_refused(tiny_model_dir, pairs_file, tmp_path):
    train_refused("dpo", "--data", pairs_file, "--model", tiny_model_dir, "--out", tmp_path / "o",
                  "--max-length", 100_000, reason="max_length 100,000 is longer than")


@pytest.mark.parametrize("flag, value, reason", [
    ("--lora-r", 1_000_000, "lora_r must be a whole number from 1 to 1,024, got 1000000"),
    ("--batch-size", 1_000_000_000, "batch_size must be a whole number from 1 to 4,096"),
    ("--max-length", 1_000_000_000, "max_length must be a whole number from 16 to 131,072"),
])
def test_absurd_sizes_are_refused_at_once(pairs_file, tmp_path, flag, value, reason):
    train_refused("dpo", "--data", pairs_file, "--out", tmp_path / "o", flag, value, reason=reason)


@pytest.mark.parametrize("field, value, reason", [
    ("weight_decay", float("inf"), "weight_decay must be a finite number >= 0, got inf"),
    ("max_grad_norm", float("inf"), "max_grad_norm must be a finite number > 0"),
    ("max_grad_norm", float("nan"), "max_grad_norm must be a finite number > 0"),
    ("lora_alpha", float("nan"), "lora_alpha must be > 0"),
    ("epochs", 1.5, "epochs must be a whole number from 1 to 1,000, got 1.5"),
    ("seed", 2**40, "seed must be a whole number from 0 to 4,294,967,295"),
])
def test_non_finite_and_fractional_settings_are_refused(pairs_file, tmp_path, field, value, reason):
    from alignment.training.config import DPOConfig

    with pytest.raises(ValueError) as caught:
        DPOConfig(data=str(pairs_file), out=str(tmp_path / "o"), **{field: value})
    assert reason in str(caught.value)


def test_a_full_disk_while_saving_the_adapter_is_one_line(tiny_model_dir, pairs_file, tiny_disk):  # noqa: F811
    result = app("train", "rm", "--data", pairs_file, "--model", tiny_model_dir, "--out", tiny_disk / "rm",
                 "--max-steps", 1, "--batch-size", 2, "--max-length", 32, "--lora-r", 2, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: no space left on the device" in result.stderr
