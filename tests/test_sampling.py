"""Sampling settings, chat rendering and batched K-sample generation (alignment.sampling, alignment.chat).

Generation runs on the tiny random Llama with the real SmolLM2 tokenizer: outputs are gibberish,
but shapes, seeding, padding and token accounting behave as with the real model.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from alignment.chat import render_prompt
from alignment.models import clear_model_cache, get_model, load_model
from alignment.sampling import GenerationBackend, Sample, SamplingParams, TransformersBackend, backend_for

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = [
    QUESTION,
    [{"role": "user", "content": "Write a haiku about rain."}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name three primes."}],
]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def backend_with(loaded, max_batch_rows: int = 8) -> TransformersBackend:
    return TransformersBackend(loaded, max_batch_rows=max_batch_rows)


def texts(result: list[list[Sample]]) -> list[list[str]]:
    return [[sample.text for sample in samples] for samples in result]


# -- SamplingParams --------------------------------------------------------------------------

def test_sampling_params_defaults_and_dict():
    params = SamplingParams()
    assert params.to_dict() == {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 256, "seed": None}
    assert not params.greedy
    assert SamplingParams(temperature=0).greedy


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 4097}, "max_new_tokens"),
    ({"max_new_tokens": 12.5}, "max_new_tokens"),
    ({"seed": "42"}, "seed"),
    ({"seed": True}, "seed"),
])
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_sampling_params_are_frozen():
    with pytest.raises(AttributeError):
        SamplingParams().temperature = 1.0  # type: ignore[misc]


# -- chat rendering --------------------------------------------------------------------------

def test_multi_turn_conversation_uses_the_chat_template(loaded):
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
    ]
    prompt = render_prompt(loaded.tokenizer, conversation)
    assert prompt == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_template_adds_its_default_system_prompt(loaded):
    prompt = render_prompt(loaded.tokenizer, QUESTION)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_fallback_without_chat_template():
    conversation = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    prompt = render_prompt(SimpleNamespace(chat_template=None), conversation)
    assert prompt == "System: Be kind.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Bye\n\nAssistant:"


@pytest.mark.parametrize("messages, message", [
    ([], "non-empty"),
    ([{"role": "robot", "content": "hi"}], "role"),
    ([{"role": "user", "content": 42}], "content must be a str"),
    (["hello"], "must be a dict"),
])
def test_invalid_messages_are_rejected(loaded, messages, message):
    with pytest.raises(ValueError, match=message):
        render_prompt(loaded.tokenizer, messages)


# -- batched generation ----------------------------------------------------------------------

def count_generate_calls(monkeypatch, loaded) -> list[int]:
    """Spy on model.generate; returns the list of batch sizes it was called with."""
    batch_sizes: list[int] = []
    real_generate = loaded.model.generate

    def spy(**kwargs):
        batch_sizes.append(kwargs["input_ids"].shape[0])
        return real_generate(**kwargs)

    monkeypatch.setattr(loaded.model, "generate", spy)
    return batch_sizes


@pytest.mark.parametrize("prompts, k, max_batch_rows, expected_batches", [
    (PROMPTS, 4, 5, [5, 5, 2]),  # 12 rows split over several batches
    (PROMPTS[:1], 3, 8, [3]),  # fewer rows than one batch
])
def test_k_samples_per_prompt(loaded, monkeypatch, prompts, k, max_batch_rows, expected_batches):
    batch_sizes = count_generate_calls(monkeypatch, loaded)
    result = backend_with(loaded, max_batch_rows).sample(prompts, k, SamplingParams(max_new_tokens=4, seed=0))
    assert len(result) == len(prompts)
    assert all(len(samples) == k for samples in result)
    assert all(isinstance(s, Sample) and isinstance(s.text, str) for samples in result for s in samples)
    assert batch_sizes == expected_batches


def test_same_seed_reproduces_and_different_seeds_differ(loaded):
    backend = backend_with(loaded, max_batch_rows=4)
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=123)
    first = texts(backend.sample(PROMPTS, 2, params))
    assert texts(backend.sample(PROMPTS, 2, params)) == first
    assert texts(backend.sample(PROMPTS, 2, SamplingParams(temperature=1.0, max_new_tokens=8, seed=124))) != first


def test_repeated_prompt_rows_differ_across_batches(loaded):
    # One prompt, K=4 in batches of 2: both batches hold identical rows, yet must not repeat.
    [samples] = backend_with(loaded, max_batch_rows=2).sample(
        [QUESTION], 4, SamplingParams(temperature=1.0, max_new_tokens=8, seed=7))
    assert len({s.text for s in samples}) == 4


def test_greedy_is_deterministic_without_seed(loaded):
    backend = backend_with(loaded)
    params = SamplingParams(temperature=0, max_new_tokens=6)
    first = texts(backend.sample(PROMPTS, 2, params))
    assert texts(backend.sample(PROMPTS, 2, params)) == first
    assert all(len(set(samples)) == 1 for samples in first)


def test_max_new_tokens_is_respected(loaded):
    result = backend_with(loaded).sample(PROMPTS, 2, SamplingParams(max_new_tokens=5, seed=1))
    for sample in (s for samples in result for s in samples):
        assert sample.num_tokens <= 5
        if sample.finish_reason == "length":
            assert sample.num_tokens == 5
    # A random tiny model practically never emits <|im_end|> within 5 tokens.
    assert any(s.finish_reason == "length" for samples in result for s in samples)


def test_stopped_rows_exclude_eos_and_padding(loaded, monkeypatch):
    """Row 0 stops after 2 tokens (then is padded with eos, as SmolLM2's pad == eos); row 1 runs
    the full length."""
    eos = loaded.tokenizer.eos_token_id
    hello = loaded.tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    word = loaded.tokenizer(" again", add_special_tokens=False)["input_ids"]
    assert len(hello) == 2 and len(word) == 1

    def fake_generate(input_ids, attention_mask, **kwargs):
        n = kwargs["max_new_tokens"]
        new = torch.tensor([hello + [eos] * (n - 2), word * n])
        return torch.cat([input_ids, new], dim=1)

    monkeypatch.setattr(loaded.model, "generate", fake_generate)
    [samples] = backend_with(loaded).sample([QUESTION], 2, SamplingParams(max_new_tokens=6))
    assert samples[0] == Sample(text="Hello world", num_tokens=2, finish_reason="stop")
    assert samples[1] == Sample(text=" again" * 6, num_tokens=6, finish_reason="length")


def test_long_prompt_is_left_truncated_with_a_warning(loaded, caplog):
    long_prompt = [{"role": "user", "content": "tell me about rain " * 400 + "THE END"}]  # > 1024 tokens
    with caplog.at_level(logging.WARNING, logger="alignment.sampling"):
        [[sample]] = backend_with(loaded).sample([long_prompt], 1, SamplingParams(max_new_tokens=4, seed=0))
    assert sample.num_tokens <= 4
    assert "dropping its first" in caplog.text


def test_max_new_tokens_beyond_context_is_an_error(loaded):
    with pytest.raises(ValueError, match="no room for the prompt"):
        backend_with(loaded).sample([QUESTION], 1, SamplingParams(max_new_tokens=1024))


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_k_must_be_positive(loaded, k):
    with pytest.raises(ValueError, match="k must be"):
        backend_with(loaded).sample([QUESTION], k, SamplingParams())


def test_max_batch_rows_must_be_positive(loaded):
    with pytest.raises(ValueError, match="max_batch_rows"):
        TransformersBackend(loaded, max_batch_rows=0)


# -- backend plumbing ------------------------------------------------------------------------

def test_backend_for_uses_the_shared_model(tiny_model_dir):
    clear_model_cache()
    try:
        backend = backend_for(str(tiny_model_dir), max_batch_rows=3)
        assert backend.loaded is get_model(str(tiny_model_dir))
        assert backend.max_batch_rows == 3
        assert backend.name == f"transformers:{tiny_model_dir.name}"
    finally:
        clear_model_cache()


def test_generation_backend_is_an_interface():
    with pytest.raises(TypeError):
        GenerationBackend()  # type: ignore[abstract]

    class Echo(GenerationBackend):
        name = "echo"

        def sample(self, prompts, k, params):
            return [[Sample(p[-1]["content"], 0, "stop")] * k for p in prompts]

    assert Echo().sample([QUESTION], 2, SamplingParams())[0][1].text == QUESTION[0]["content"]
