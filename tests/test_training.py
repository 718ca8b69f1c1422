"""alignment.training: configs, data loading, DPO / PL-DPO / reward-model runs on a tiny Llama, resume,
the QLoRA path, and an end-to-end check that DPO and the reward model learn a checkable preference.

Everything runs on the CPU in float32 with a 2-layer random model and the real SmolLM2 tokenizer.
"""
from __future__ import annotations

import io
import json
import math
import random
import warnings
from pathlib import Path

import pytest
import torch

from alignment.training import (
    DPOConfig, EventRecorder, PLDPOConfig, ProgressFile, RewardConfig, TqdmCallback, load_reward_model, score,
    train_dpo, train_pl_dpo, train_reward_model,
)
from alignment.training import data as tdata
from alignment.training import heldout, lora, reference
from tests.conftest import build_tiny_model

# Short sequences and no dropout: fast, and deterministic enough to compare runs exactly.
FAST = dict(max_length=64, lora_r=4, lora_alpha=8, lora_dropout=0.0)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pair_rows(n: int) -> list[dict]:
    return [{"prompt": f"Question {i}: is it true?", "chosen": "Sure, yes", "rejected": "No, never"} for i in range(n)]


def adapter_tensors(model) -> dict[str, torch.Tensor]:
    """LoRA and saved-head tensors of a PEFT model, keyed by name (trainable or not)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n}


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, bad, message", [
    (DPOConfig, {"lr": 0}, "lr must be"),
    (DPOConfig, {"beta": -0.1}, "beta must be"),
    (DPOConfig, {"loss": "kto"}, "loss must be one of sigmoid, ipo, hinge"),
    (DPOConfig, {"label_smoothing": 0.6}, "label_smoothing"),
    (DPOConfig, {"loss": "ipo", "label_smoothing": 0.1}, "only applies to loss='sigmoid'"),
    (DPOConfig, {"eval_fraction": 1.0}, r"eval_fraction must be in \[0, 1\)"),
    (DPOConfig, {"eval_fraction": -0.1}, "eval_fraction"),
    (DPOConfig, {"batch_size": 0}, "batch_size must be a whole number from 1 to 4,096"),
    (DPOConfig, {"max_length": 8}, "max_length must be a whole number from 16 to 131,072"),
    (DPOConfig, {"grad_accum": 0}, "grad_accum"),
    (DPOConfig, {"device": "tpu"}, "device must be one of auto, cpu, cuda"),
    (DPOConfig, {"max_steps": 0}, "max_steps"),
    (DPOConfig, {"lora_dropout": 1.0}, "lora_dropout"),
    (DPOConfig, {"target_modules": []}, "target_modules"),
    (DPOConfig, {"resume_from": "/no/such/checkpoint"}, "resume_from checkpoint folder not found"),
    (PLDPOConfig, {"beta": 0}, "beta must be"),
    (RewardConfig, {"lr": float("nan")}, "lr must be"),
])
def test_config_refuses_bad_values(pairs_file, tmp_path, cls, bad, message):
    with pytest.raises(ValueError, match=message):
        cls(data=str(pairs_file), out=str(tmp_path / "run"), **bad)


def test_config_checks_data_file_and_4bit(tmp_path, pairs_file):
    with pytest.raises(ValueError, match="data file not found"):
        DPOConfig(data=str(tmp_path / "missing.jsonl"), out=str(tmp_path / "run"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="load_in_4bit .*needs a CUDA GPU"):
            DPOConfig(data=str(pairs_file), out=str(tmp_path / "run"), load_in_4bit=True)


def test_config_round_trips_and_documents_every_field(tmp_path, pairs_file):
    config = RewardConfig(data=str(pairs_file), out=str(tmp_path / "run"), use_margin=True, target_modules=["q_proj"])
    path = config.save(tmp_path / "run")
    saved = json.loads(path.read_text())
    assert saved["method"] == "reward" and saved["resolved_device"] in {"cpu", "cuda"}
    assert RewardConfig.from_dict(saved) == config
    with pytest.raises(ValueError, match="not 'dpo'"):
        DPOConfig.from_dict(saved)
    with pytest.raises(ValueError, match="unknown DPOConfig settings: nope"):
        DPOConfig.from_dict({"data": str(pairs_file), "out": "x", "nope": 1})
    for cls in (DPOConfig, PLDPOConfig, RewardConfig):
        assert all(text.strip() and not text.startswith(" (") for text in cls.help().values())
    defaults = DPOConfig(data=str(pairs_file), out="x")
    assert (defaults.model, defaults.batch_size, defaults.max_length, defaults.lora_r, defaults.beta) == \
        ("default", 4, 512, 16, 0.1)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def test_load_pairs_standard_conversational_and_hh(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Hi there", "chosen": "a", "rejected": "b", "margin": 2},
        {"prompt": [{"role": "system", "content": "Be kind"}, {"role": "user", "content": "Hey"}],
         "chosen": [{"role": "assistant", "content": "c"}], "rejected": [{"role": "assistant", "content": "d"}]},
        {"prompt": "\n\nHuman: one\n\nAssistant: two\n\nHuman: three\n\nAssistant:", "chosen": " x", "rejected": " y"},
    ])
    first, chat, hh = tdata.load_pairs(path)
    assert first.prompt_messages == [{"role": "user", "content": "Hi there"}] and first.margin == 2.0
    assert chat.prompt_messages[0]["role"] == "system" and (chat.chosen, chat.rejected) == ("c", "d")
    assert hh.prompt_messages == [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
                                  {"role": "user", "content": "three"}]


@pytest.mark.parametrize("row, message", [
    ("{not json", "invalid JSON"),
    ({"prompt": "p", "chosen": "a"}, "missing rejected"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "role 'assistant'"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt must be"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}, "margin must be a number"),
])
def test_bad_pair_rows_name_their_line(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(pair_rows(1)[0]) + "\n\n" + (row if isinstance(row, str) else json.dumps(row)) + "\n")
    with pytest.raises(tdata.DataError, match=rf"bad.jsonl:3: .*{message}"):
        tdata.load_pairs(path)


def test_rankings_keep_their_ties_best_first(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [
        {"prompt": "a", "completions": ["x", "y", "z"], "ranks": [0, 1, 2]},
        {"prompt": "b", "completions": ["x", "y", "z"], "ranks": [1, 0, 1]},
        {"prompt": [{"role": "user", "content": "c"}],
         "completions": [[{"role": "assistant", "content": "w"}], [{"role": "assistant", "content": "v"}]],
         "ranks": [1, 0]},
    ])
    loaded = tdata.load_rankings(path)
    assert len(loaded) == 3 and loaded.with_ties == 1
    assert (loaded.rankings[1].completions, loaded.rankings[1].ranks) == (["y", "x", "z"], [0, 1, 1])
    assert loaded.rankings[2].completions == ["v", "w"]  # re-ordered best first
    with pytest.raises(tdata.DataError, match="l.jsonl:1: .*at least 2"):
        tdata.load_rankings(write_jsonl(tmp_path / "l.jsonl", [{"prompt": "a", "completions": ["x"], "ranks": [0]}]))


def prompts(names) -> list:
    return [tdata.PreferencePair([{"role": "user", "content": name}], "a", "b") for name in names]


def test_split_is_by_prompt_and_deterministic():
    items = prompts(f"p{i % 10}" for i in range(40))
    train, held = tdata.split(items, 0.2, seed=3)
    assert (train, held) == tdata.split(items, 0.2, seed=3) and held and train
    assert {tdata.prompt_key(x) for x in train}.isdisjoint({tdata.prompt_key(x) for x in held})
    assert len(held) % 4 == 0  # each prompt's 4 rows on one side
    assert tdata.split(items, 0.0, seed=3) == (items, [])


def test_split_holds_out_about_the_fraction_and_adding_rows_moves_no_prompt():
    items = prompts(f"question {i}" for i in range(2000))
    train, held = tdata.split(items, 0.1, seed=0)
    assert 0.085 <= len(held) / len(items) <= 0.115  # binomial(2000, 0.1): sd 0.0067
    held_keys = {tdata.prompt_key(x) for x in held}

    # New labels (new prompts, and more rows for old ones), in any order: no old prompt changes side.
    grown = prompts(f"new question {i}" for i in range(500)) + items + items[:300]
    random.Random(1).shuffle(grown)
    grown_train, grown_held = tdata.split(grown, 0.1, seed=0)
    grown_held_keys = {tdata.prompt_key(x) for x in grown_held}
    old_keys = {tdata.prompt_key(x) for x in items}
    assert grown_held_keys & old_keys == held_keys
    assert 0.085 <= len(grown_held_keys) / 2500 <= 0.115
    # Another seed is another split.
    assert {tdata.prompt_key(x) for x in tdata.split(items, 0.1, seed=1)[1]} != held_keys


def test_split_of_a_small_set_keeps_a_prompt_on_each_side():
    for n in range(2, 12):
        for seed in range(5):
            train, held = tdata.split(prompts(map(str, range(n))), 0.5, seed)
            assert train and held
    assert tdata.split(prompts(["only"]), 0.5, seed=0) == (prompts(["only"]), [])


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------

def count_reference_rows(monkeypatch) -> list[int]:
    """Counts the completions scored by the reference pass (adapter disabled)."""
    rows: list[int] = []
    real = reference.packed_completion_logps

    def counting(model, **batch):
        rows.append(batch["last_index"].shape[0])
        return real(model, **batch)

    monkeypatch.setattr(reference, "packed_completion_logps", counting)
    return rows


def test_dpo_two_steps_over_two_epochs(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ref_rows = count_reference_rows(monkeypatch)
    recorder = EventRecorder()

    def broken_listener(event, state):
        raise RuntimeError("a broken progress bar must not stop training")

    # 3 pairs: 2 train + 1 held out with seed 1; batch 2 -> 1 step per epoch, 2 epochs -> 2 steps.
    config = DPOConfig(model=str(tiny_model_dir), data=str(pairs_file), out=str(tmp_path / "dpo"), epochs=2,
                       batch_size=2, eval_fraction=0.34, seed=1, lr=1e-2, **FAST)
    train, held_out = tdata.split(tdata.load_pairs(pairs_file), 0.34, seed=1)
    assert (len(train), len(held_out)) == (2, 1)
    initial = adapter_tensors(lora.load_policy(config).model)
    result = train_dpo(config, callbacks=[recorder, broken_listener])

    assert result.steps == 2 and math.isfinite(result.metrics["loss"])
    assert set(result.eval_metrics) >= {"rewards/accuracies", "rewards/margins", "loss"}
    # The reference pass ran once per example (2 completions per pair: chosen and rejected), not per epoch.
    assert sum(ref_rows) == 2 * 3
    begin = recorder.of("train_begin")[0]
    assert (begin["reference"], begin["epochs"], begin["n_train"], begin["n_eval"]) == ("computed", 2, 2, 1)
    # Before training, the reference pass reports its progress (batch 2: 2 of 3 pairs, then 3).
    assert [e for e, _ in recorder.events] == ["phase", "phase", "train_begin", "step", "step", "eval", "save",
                                               "train_end"]
    assert [(p["phase"], p["done"], p["total"]) for p in recorder.of("phase")] == [("reference pass", 2, 3),
                                                                                  ("reference pass", 3, 3)]
    assert [s["epoch"] for s in recorder.of("step")] == [0, 1]

    # The run folder is a standard PEFT adapter folder, and its weights moved away from the init.
    out = result.out_dir
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training_config.json",
            "metrics.json", "reference_logps.pt", "split.json"} <= {p.name for p in out.iterdir()}
    # split.json records which prompts were held out, by content hash, with the counts and settings.
    recorded = json.loads((out / "split.json").read_text())
    assert recorded["held_out"] == {"rows": 1, "prompts": 1, "prompt_sha256": [tdata.prompt_sha256(held_out[0])]}
    assert recorded["train"]["prompt_sha256"] == sorted(tdata.prompt_sha256(p) for p in train)
    assert (recorded["eval_fraction"], recorded["seed"]) == (0.34, 1)
    assert heldout.read_split(out).held_out_prompts == {tdata.prompt_sha256(held_out[0])}
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))
    trained = adapter_tensors(loaded)
    assert trained.keys() == initial.keys() and trained
    assert all(not torch.equal(trained[k], initial[k]) for k in trained if "lora_B" in k)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2

    progress = ProgressFile.read(out / "progress.jsonl")
    steps = [r for r in progress if r["event"] == "step"]
    assert [r["step"] for r in steps] == [1, 2] and all(r["total_steps"] == 2 for r in steps)
    assert all({"loss", "metrics", "elapsed_s", "eta_s", "time"} <= r.keys() for r in progress)

    # A second run over the same data reuses the cached reference log-probs.
    ref_rows.clear()
    train_dpo(config)
    assert ref_rows == []


def test_reward_model_two_steps_trains_lora_and_head_and_scores(tiny_model_dir, tmp_path):
    rows = [dict(r, margin=1.0) for r in pair_rows(6)]
    config = RewardConfig(model=str(tiny_model_dir), data=str(write_jsonl(tmp_path / "p.jsonl", rows)),
                          out=str(tmp_path / "rm"), max_steps=2, batch_size=2, lr=1e-2, use_margin=True, **FAST)
    initial = adapter_tensors(lora.load_reward_backbone(config).model)
    result = train_reward_model(config)
    assert result.steps == 2 and math.isfinite(result.metrics["loss"])
    assert set(result.eval_metrics) >= {"rewards/accuracies", "rewards/margins"}

    model, tokenizer = load_reward_model(result.out_dir)
    trained = adapter_tensors(model)
    assert trained.keys() == initial.keys()
    head = [k for k in trained if "score" in k]
    assert head and all(not torch.equal(trained[k], initial[k]) for k in head)
    assert all(not torch.equal(trained[k], initial[k]) for k in trained if "lora_B" in k)

    prompts = [[{"role": "user", "content": "Question 1: is it true?"}]] * 3
    scores = score(model, tokenizer, prompts, ["Sure, yes", "No, never", ""], batch_size=2)
    assert len(scores) == 3 and all(isinstance(s, float) and math.isfinite(s) for s in scores)
    # Batching and padding do not change a score.
    assert score(model, tokenizer, prompts[:1], ["No, never"], batch_size=1)[0] == pytest.approx(scores[1], abs=1e-4)


def test_pl_dpo_two_steps_trains_on_rankings_with_ties(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Name a colour {i}", "completions": ["Blue.", "Red, I think.", "Bread"][: 2 + i % 2],
             "ranks": [0, 1, 2][: 2 + i % 2]} for i in range(6)]
    rows += [{"prompt": "tie", "completions": ["a", "b"], "ranks": [0, 0]},
             {"prompt": "tie below", "completions": ["a", "b", "c"], "ranks": [0, 1, 1]}]
    recorder, bar_output = EventRecorder(), io.StringIO()
    config = PLDPOConfig(model=str(tiny_model_dir), data=str(write_jsonl(tmp_path / "l.jsonl", rows)),
                         out=str(tmp_path / "pl"), max_steps=2, batch_size=2, grad_accum=2, eval_fraction=0.3,
                         lr=1e-2, **FAST)
    result = train_pl_dpo(config, callbacks=[recorder, TqdmCallback(file=bar_output, mininterval=0)])
    assert result.steps == 2 and math.isfinite(result.metrics["loss"])
    begin = recorder.of("train_begin")[0]
    assert begin["with_ties"] == 2 and begin["n_train"] + begin["n_eval"] == len(rows)  # every ranking used
    recorded = json.loads((result.out_dir / "split.json").read_text())
    assert recorded["train"]["rows"] + recorded["held_out"]["rows"] == len(rows)
    assert (result.out_dir / "adapter_model.safetensors").is_file()
    assert "2/2" in bar_output.getvalue() and "eval @ step 2" in bar_output.getvalue()


@pytest.mark.parametrize("method", ["dpo", "reward"])
def test_forward_chunks_give_the_same_step_as_one_forward(tiny_model_dir, tmp_path, method):
    """micro_batch_size splits a batch into forward/backward passes; the optimizer step is the same."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    train, config_class = (train_dpo, DPOConfig) if method == "dpo" else (train_reward_model, RewardConfig)
    results = {}
    for micro in (1, 3, None):
        config = config_class(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / f"{method}-{micro}"),
                              max_steps=1, batch_size=4, micro_batch_size=micro, eval_fraction=0.0, lr=1e-2,
                              device="cpu", **FAST)
        results[micro] = train(config)
    from safetensors.torch import load_file

    weights = {m: load_file(r.out_dir / "adapter_model.safetensors") for m, r in results.items()}
    assert weights[1].keys() == weights[None].keys()
    for name in weights[None]:
        assert torch.allclose(weights[1][name], weights[None][name], atol=1e-5), name
        assert torch.allclose(weights[3][name], weights[None][name], atol=1e-5), name
    assert results[1].metrics["loss"] == pytest.approx(results[None].metrics["loss"], abs=1e-5)


def test_resume_from_checkpoint_continues_to_the_same_weights(tiny_model_dir, tmp_path, monkeypatch):
    from peft import load_peft_weights

    data = str(write_jsonl(tmp_path / "p.jsonl", pair_rows(8)))
    common = dict(model=str(tiny_model_dir), data=data, max_steps=2, batch_size=2, eval_fraction=0.25, lr=1e-2,
                  seed=1, **FAST)
    straight = train_dpo(DPOConfig(out=str(tmp_path / "a"), save_steps=1, **common))
    checkpoint = straight.out_dir / "checkpoint-1"
    assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json", "reference_logps.pt"} <= \
        {p.name for p in checkpoint.iterdir()}
    assert not (straight.out_dir / "checkpoint-2").exists()  # the final save is the run folder itself

    ref_rows = count_reference_rows(monkeypatch)
    recorder = EventRecorder()
    resumed = train_dpo(DPOConfig(out=str(tmp_path / "b"), resume_from=str(checkpoint), **common), [recorder])
    assert resumed.steps == 2 and [s["step"] for s in recorder.of("step")] == [2]
    assert ref_rows == [] and recorder.of("train_begin")[0]["reference"] == "cached"
    a, b = load_peft_weights(str(straight.out_dir)), load_peft_weights(str(resumed.out_dir))
    with pytest.raises(ValueError, match="batch_size was 2, now 3"):
        train_dpo(DPOConfig(out=str(tmp_path / "c"), resume_from=str(checkpoint), **{**common, "batch_size": 3}))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# --------------------------------------------------------------------------------------------
# QLoRA (4-bit) path
# --------------------------------------------------------------------------------------------

def test_4bit_is_refused_without_cuda_before_loading(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = DPOConfig(model=str(tiny_model_dir), data=str(pairs_file), out=str(tmp_path / "q"), **FAST)
    config.load_in_4bit = True  # as if validation had been bypassed

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded a model before refusing 4-bit on the CPU")

    monkeypatch.setattr(lora, "base_model_location", must_not_load)
    monkeypatch.setattr(lora, "load_base_model", must_not_load)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        lora.load_policy(config)


def test_qlora_code_path_with_real_bitsandbytes_on_cpu(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    """The real QLoRA loading path (bitsandbytes 4-bit NF4 + prepare_model_for_kbit_training + LoRA).

    bitsandbytes >= 0.45 ships CPU kernels, so loading and a training-mode forward/backward run here.
    Training runs still refuse 4-bit on the CPU: once a Linear4bit runs in eval mode without grad
    (as the reference pass does) on an AVX512-BF16 CPU, bitsandbytes repacks its weight for a
    CPU inference kernel that has no autograd, and later backward passes silently lose gradients.
    """
    bnb = pytest.importorskip("bitsandbytes")
    from alignment.logprobs import build_completion_batch, completion_logps

    quant = lora.quantization_config()
    assert (quant.load_in_4bit, quant.bnb_4bit_quant_type, quant.bnb_4bit_compute_dtype) == (True, "nf4", torch.bfloat16)

    prepared = []
    real_prepare = lora.prepare_for_kbit

    def spy(model, **kwargs):
        prepared.append(model)
        return real_prepare(model, **kwargs)

    monkeypatch.setattr(lora, "prepare_for_kbit", spy)
    monkeypatch.setattr(lora, "require_cuda_for_4bit", lambda device: None)  # the guard is tested above
    config = DPOConfig(model=str(tiny_model_dir), data=str(pairs_file), out=str(tmp_path / "q"), **FAST)
    config.load_in_4bit = True
    policy = lora.load_policy(config)
    model = policy.model

    assert prepared and model.base_model.model.is_loaded_in_4bit
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 2 * 7  # all projections, 2 layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    batch = build_completion_batch(policy.tokenizer, ["Is it true?", "Say something"], ["Sure, yes", "No"], 32)
    model.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*autograd kernel was not registered.*")
        logps = completion_logps(model, **batch)
        with torch.no_grad(), model.disable_adapter():
            reference_logps = completion_logps(model, **batch)
        logps.sum().backward()
    assert torch.isfinite(logps).all() and torch.allclose(logps.detach(), reference_logps)  # LoRA B starts at 0
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


# --------------------------------------------------------------------------------------------
# End to end: the preference is learnt
# --------------------------------------------------------------------------------------------

FILLER_WORDS = ("apple river stone cloud green music paper window garden silver orange table forest candle "
                "mirror bridge").split()


def synthetic_yes_no_pairs(n: int, seed: int) -> list[dict]:
    """Chosen answers end with " yes", rejected ones with " no"; the filler words differ at random."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c, d = rng.sample(FILLER_WORDS, 4)
        rows.append({"prompt": f"Is the {a} near the {b}? ({i})", "chosen": f"The {c} says yes",
                     "rejected": f"The {d} says no"})
    return rows


def test_dpo_and_reward_model_learn_a_checkable_preference(tokenizer_dir, tmp_path):
    model_dir = build_tiny_model(tokenizer_dir, tmp_path / "tiny", seed=1)
    data = str(write_jsonl(tmp_path / "yes_no.jsonl", synthetic_yes_no_pairs(80, seed=0)))
    common = dict(model=str(model_dir), data=data, eval_fraction=0.2, max_steps=8, batch_size=8, lr=2e-3, **FAST)
    held_out = tdata.split(tdata.load_pairs(data), 0.2, seed=0)[1]
    assert len(held_out) == 16  # each of the 80 prompts is held out with probability 0.2

    dpo = train_dpo(DPOConfig(out=str(tmp_path / "dpo"), **common))
    assert dpo.eval_metrics["n"] == len(held_out)
    # Before training every implicit reward is 0 (accuracy 0, loss ln 2): all of this was learnt.
    assert dpo.eval_metrics["rewards/accuracies"] >= 0.8
    assert dpo.eval_metrics["rewards/margins"] > 0 and dpo.eval_metrics["loss"] < math.log(2)

    rm = train_reward_model(RewardConfig(out=str(tmp_path / "rm"), **common))
    # A random head scores both sides about alike (loss ~ ln 2); a low loss means the gap was learnt.
    assert rm.eval_metrics["rewards/accuracies"] >= 0.8
    assert rm.eval_metrics["rewards/margins"] > 0 and rm.eval_metrics["loss"] < 0.5
    model, tokenizer = load_reward_model(rm.out_dir)
    prompt = [[{"role": "user", "content": "Is the lamp near the door?"}]] * 2
    yes, no = score(model, tokenizer, prompt, ["The cat says yes", "The cat says no"])
    assert yes > no


def synthetic_yes_maybe_no_rankings(n: int, seed: int) -> list[dict]:
    """Rankings "... yes" > "... maybe" > "... no" (filler words at random); every third ties maybe and no."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c, d, e = rng.sample(FILLER_WORDS, 5)
        completions = [f"The {c} says yes", f"The {d} says maybe", f"The {e} says no"]
        order = rng.sample(range(3), 3)  # shown in random order; ranks say which is best
        rows.append({"prompt": f"Is the {a} near the {b}? ({i})", "completions": [completions[k] for k in order],
                     "ranks": [min(k, 1) if i % 3 == 0 else k for k in order]})
    return rows


def test_pl_dpo_learns_a_checkable_ranking(tokenizer_dir, tmp_path):
    model_dir = build_tiny_model(tokenizer_dir, tmp_path / "tiny", seed=1)
    data = str(write_jsonl(tmp_path / "ranks.jsonl", synthetic_yes_maybe_no_rankings(80, seed=0)))
    config = PLDPOConfig(model=str(model_dir), data=data, out=str(tmp_path / "pl"), eval_fraction=0.2, max_steps=8,
                         batch_size=8, lr=2e-3, **FAST)
    held_out = tdata.split(tdata.load_rankings(data).rankings, 0.2, seed=0)[1]
    result = train_pl_dpo(config)
    assert result.eval_metrics["n"] == len(held_out) >= 10
    # Before training every implicit reward is 0, so no adjacent ranked pair is in order (accuracy 0);
    # chance would be 0.5. The held-out pairs (ties skipped) are ordered far better than that.
    assert result.eval_metrics["rewards/accuracies"] >= 0.85
    assert result.eval_metrics["rewards/margins"] > 0
