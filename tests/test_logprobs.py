"""Completion log-probabilities (alignment.logprobs) against the full-logits reference, on the tiny
random Llama with the real SmolLM2 tokenizer, plain and PEFT-wrapped."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from alignment.logprobs import build_completion_batch, completion_logps, completion_logps_naive

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nCount to five, please, slowly."
    "<|im_end|>\n<|im_start|>assistant\n",
]
COMPLETIONS = [
    "Paris.",
    "Hello! How can I help you today? I can answer questions, write text and more.",
    "1 2 3 4 5",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def load_tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_tiny(tiny_model_dir)


@pytest.fixture(scope="module")
def batch(tokenizer):
    return build_completion_batch(tokenizer, PROMPTS, COMPLETIONS, max_length=128)


def lora(tiny_model_dir):
    """The tiny model with LoRA adapters whose B matrices are random, so they change the outputs."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    return get_peft_model(load_tiny(tiny_model_dir), config).eval()


# -- equivalence with the naive implementation -----------------------------------------------

def test_batch_has_different_lengths_and_padding(batch):
    lengths = batch["attention_mask"].sum(-1)
    completion_lengths = batch["completion_mask"].sum(-1)
    assert len(set(lengths.tolist())) == 3 and len(set(completion_lengths.tolist())) == 3
    assert (batch["attention_mask"] == 0).any()


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_chunked_equals_naive(model, batch, chunk_size):
    with torch.no_grad():
        expected = completion_logps_naive(model, **batch)
        got = completion_logps(model, **batch, chunk_size=chunk_size)
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert (got < 0).all()
    assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_gradients_match_naive(tiny_model_dir, batch):
    """With gradients on, chunks are checkpointed; values and weight gradients must not change."""
    model = load_tiny(tiny_model_dir)
    naive = completion_logps_naive(model, **batch)
    naive.sum().backward()
    naive_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    chunked = completion_logps(model, **batch, chunk_size=5)
    chunked.sum().backward()
    assert_close(chunked, naive, atol=1e-4, rtol=1e-5)
    for name, p in model.named_parameters():
        assert_close(p.grad, naive_grads[name], atol=1e-4, rtol=1e-4, msg=name)


def test_rows_without_completion_tokens_score_zero(model, batch):
    completion_mask = batch["completion_mask"].clone()
    completion_mask[1] = 0
    with torch.no_grad():
        got = completion_logps(model, batch["input_ids"], batch["attention_mask"], completion_mask)
        full = completion_logps(model, **batch)
    assert got[1] == 0.0
    assert_close(got[[0, 2]], full[[0, 2]])


def test_peft_model_with_and_without_adapters(tiny_model_dir, model, batch):
    with torch.no_grad():
        base = completion_logps_naive(model, **batch)
    peft_model = lora(tiny_model_dir)
    with torch.no_grad():
        adapted = completion_logps(peft_model, **batch, chunk_size=3)
        assert_close(adapted, completion_logps_naive(peft_model, **batch), atol=1e-4, rtol=1e-5)
        assert not torch.allclose(adapted, base, atol=1e-3)  # the adapters do something
        with peft_model.disable_adapter():
            reference = completion_logps(peft_model, **batch, chunk_size=3)
    assert_close(reference, base, atol=1e-4, rtol=1e-5)


def test_gradient_reaches_lora_parameters_only(tiny_model_dir, batch):
    peft_model = lora(tiny_model_dir)
    peft_model.train()
    completion_logps(peft_model, **batch, chunk_size=4).mean().backward()
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for name, p in trainable.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    frozen = [p for p in peft_model.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)


# -- batching --------------------------------------------------------------------------------

def test_build_completion_batch_masks(tokenizer):
    out = build_completion_batch(tokenizer, ["Q: a?\nA:", "Q: a longer question?\nA:"], [" yes", " no, not at all"], 64)
    assert set(out) == {"input_ids", "attention_mask", "completion_mask"}
    assert all(v.dtype == torch.long and v.shape == out["input_ids"].shape for v in out.values())
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for i, (prompt, completion) in enumerate([("Q: a?\nA:", " yes"), ("Q: a longer question?\nA:", " no, not at all")]):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos]
        n = len(p) + len(c)
        assert out["input_ids"][i, :n].tolist() == p + c
        assert out["input_ids"][i, n:].tolist() == [pad] * (out["input_ids"].shape[1] - n)
        assert out["attention_mask"][i].tolist() == [1] * n + [0] * (out["input_ids"].shape[1] - n)
        assert out["completion_mask"][i].tolist() == [0] * len(p) + [1] * len(c) + [0] * (out["input_ids"].shape[1] - n)


def test_build_completion_batch_does_not_double_eos(tokenizer):
    out = build_completion_batch(tokenizer, ["Q:"], [" done<|im_end|>"], 64)
    ids = out["input_ids"][0].tolist()
    assert ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id


def test_build_completion_batch_truncates_prompt_from_the_left_first(tokenizer):
    prompt = " ".join(f"word{i}" for i in range(100))
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(" the answer", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    out = build_completion_batch(tokenizer, [prompt], [" the answer"], max_length=20)
    ids, mask = out["input_ids"][0].tolist(), out["completion_mask"][0].tolist()
    assert len(ids) == 20
    assert ids == p[-(20 - len(c)):] + c  # the prompt's end survives, the completion is intact
    assert sum(mask) == len(c) and mask[-1] == 1


def test_build_completion_batch_then_truncates_the_completion_from_the_right(tokenizer):
    completion = " ".join(f"token{i}" for i in range(100))
    p = tokenizer("Q: go\nA:", add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    out = build_completion_batch(tokenizer, ["Q: go\nA:", "Hi"], [completion, " ok"], max_length=16)
    assert out["input_ids"].shape == (2, 16)
    ids, mask = out["input_ids"][0].tolist(), out["completion_mask"][0].tolist()
    # one prompt token is kept so the first completion token can be scored; no EOS (cut text)
    assert ids == p[-1:] + c[:15]
    assert mask == [0] + [1] * 15
    assert tokenizer.eos_token_id not in ids
    assert out["attention_mask"].sum(-1).max() <= 16


def test_build_completion_batch_rejects_mismatched_lists(tokenizer):
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        build_completion_batch(tokenizer, ["a", "b"], ["c"], 16)
