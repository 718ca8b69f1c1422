"""Shared-prefix packing (alignment.packing): one row per prompt with all its completions gives the
same log-probabilities, gradients and rewards as separate ``prompt + completion`` rows."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from alignment.logprobs import build_completion_batch, completion_logps, packed_completion_logps
from alignment.packing import PACKED_INPUTS, build_shared_prefix_batch

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nCount to five.<|im_end|>\n"
    "<|im_start|>assistant\n",
]
COMPLETIONS = [
    ["Paris.", "It is Paris, a city on the Seine, and has been the capital for centuries.", "Lyon"],
    ["1 2 3 4 5", "One, two, three, four, five.", "no"],
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(base, config).eval()


def unpacked(tokenizer, max_length=128):
    """The same completions as separate rows, prompt-major like the packed segments."""
    prompts = [p for p, group in zip(PROMPTS, COMPLETIONS) for _ in group]
    return build_completion_batch(tokenizer, prompts, [c for group in COMPLETIONS for c in group], max_length)


def test_layout_positions_restart_and_completions_do_not_see_each_other(tokenizer):
    batch = build_shared_prefix_batch(tokenizer, PROMPTS, COMPLETIONS, max_length=128)
    assert set(batch) == set(PACKED_INPUTS)
    prompt_len = len(tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"])
    first = len(tokenizer(COMPLETIONS[0][0], add_special_tokens=False)["input_ids"]) + 1  # + EOS
    second_start = prompt_len + first
    # the second completion sits at the positions it would have right after the prompt
    assert batch["position_ids"][0, second_start].item() == prompt_len
    mask = batch["attention_mask"][0, 0]
    assert mask[second_start, :prompt_len].all()  # sees the whole prompt
    assert not mask[second_start, prompt_len:second_start].any()  # not the first completion
    assert not mask[prompt_len, prompt_len + 1:].any()  # causal
    # its first token is predicted from the prompt's last token, not from the completion before it
    first_of_second = (batch["segments"] == 1).nonzero()[0, 0]
    assert batch["score_index"][first_of_second].tolist() == [0, prompt_len - 1]
    assert len(batch["last_index"]) == 6 and batch["segments"].max().item() == 5


def test_packed_log_probs_and_gradients_equal_unpacked(tiny_model_dir, tokenizer):
    model = lora_model(tiny_model_dir)
    packed = build_shared_prefix_batch(tokenizer, PROMPTS, COMPLETIONS, max_length=128)
    rows = unpacked(tokenizer)

    got = packed_completion_logps(model, **packed, chunk_size=7)
    expected = completion_logps(model, **rows)
    assert_close(got, expected, atol=1e-4, rtol=1e-5)
    with model.disable_adapter(), torch.no_grad():  # the reference pass packs the same way
        assert_close(packed_completion_logps(model, **packed),
                     completion_logps(model, **rows), atol=1e-4, rtol=1e-5)

    weights = torch.linspace(-1, 1, len(got))
    grads = []
    for logps in (got, expected):
        model.zero_grad()
        (logps * weights).sum().backward(retain_graph=False)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name in grads[0]:
        assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-4, msg=name)


def test_truncation_cuts_the_shared_prompt_once_from_the_left(tiny_model_dir, tokenizer):
    model = lora_model(tiny_model_dir)
    long_prompt = PROMPTS[1] * 6
    packed = build_shared_prefix_batch(tokenizer, [long_prompt], [["short", "a somewhat longer answer here"]], 40)
    prompt_tokens = packed["score_index"][0, 1].item() + 1  # the first completion token's predictor
    longest = len(tokenizer("a somewhat longer answer here", add_special_tokens=False)["input_ids"]) + 1
    assert prompt_tokens + longest == 40 and packed["input_ids"].shape[1] > 40
    # the longest completion scores as it would unpacked with the same cut
    with torch.no_grad():
        got = packed_completion_logps(model, **packed)[1]
        rows = build_completion_batch(tokenizer, [long_prompt], ["a somewhat longer answer here"], 40)
        assert_close(got, completion_logps(model, **rows)[0], atol=1e-4, rtol=1e-5)


def test_packed_rewards_equal_the_sequence_classifier_on_separate_rows(tiny_reward_dir, tokenizer):
    from alignment.training.reward import load_reward_model, packed_rewards, rewards

    model, _ = load_reward_model(tiny_reward_dir)
    packed = build_shared_prefix_batch(tokenizer, PROMPTS, COMPLETIONS, max_length=128)
    rows = unpacked(tokenizer)
    with torch.no_grad():
        assert_close(packed_rewards(model, **packed), rewards(model, rows["input_ids"], rows["attention_mask"]),
                     atol=1e-4, rtol=1e-5)


def test_bad_inputs_are_refused(tokenizer):
    with pytest.raises(ValueError, match="same, non-zero number"):
        build_shared_prefix_batch(tokenizer, PROMPTS, [["a", "b"], ["c"]], 64)
    with pytest.raises(ValueError, match="2 prompts but 1"):
        build_shared_prefix_batch(tokenizer, PROMPTS, [["a"]], 64)
    with pytest.raises(ValueError, match="at least 2"):
        build_shared_prefix_batch(tokenizer, PROMPTS, COMPLETIONS, 1)
