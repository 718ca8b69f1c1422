"""Rollouts (alignment.rl.rollouts): prompt files, sampling K per prompt, and packed scoring of the sampled ids."""
from __future__ import annotations

import json

import pytest
import torch

from alignment.logprobs import completion_logps_naive, packed_token_logps
from alignment.rl.rollouts import load_prompts, pack_rollout, sample_rollout, to_padded
from alignment.sampling import SamplingParams
from alignment.training.data import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_prompt_file_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Hi?", "answer": "4"},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "old answer"}]},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]},
    ])
    first, second, third = load_prompts(path)
    assert first.prompt == "Hi?" and first.prompt_messages == [{"role": "user", "content": "Hi?"}]
    assert first.columns == {"answer": "4"}
    assert second.prompt_messages == [{"role": "user", "content": "Q"}]  # the assistant turn is the policy's
    assert [m["role"] for m in third.prompt_messages] == ["system", "user"]
    with pytest.raises(DataError, match=r"p2.jsonl:2: missing 'prompt'"):
        load_prompts(write_jsonl(tmp_path / "p2.jsonl", [{"prompt": "a"}, {"question": "b"}]))


def test_to_padded_restores_completions():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    padded, mask = to_padded(values, torch.tensor([0, 0, 0, 1, 2, 2]), 4)
    assert padded.tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0], [0, 0, 0]]
    assert mask.sum(-1).tolist() == [3, 1, 2, 0]


def test_packed_rollout_scores_exactly_the_sampled_tokens(tiny_model_dir, tmp_path):
    from alignment.rl.trainer import load_rl_policy, policy_backend
    from alignment.training.config import GRPOConfig

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi"}, {"prompt": "Tell me a long story please"}])
    config = GRPOConfig(model=str(tiny_model_dir), data=str(path), out=str(tmp_path / "run"), reward_rule=["eos"],
                        device="cpu", lora_r=4, lora_alpha=8)
    policy = load_rl_policy(config)
    backend = policy_backend(policy, max_batch_rows=8)
    prompts = load_prompts(path)
    rollout = sample_rollout(backend, prompts, 3, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=5, seed=3))
    assert rollout.k == 3 and len(rollout.flat) == 6
    assert all(len(s.token_ids) == s.num_tokens for s in rollout.flat)
    # the tokens the loss sees are the sampled ids (plus EOS when the model stopped)
    batch = pack_rollout(rollout, policy.tokenizer.pad_token_id)
    assert batch["targets"].tolist() == [t for ids in rollout.completion_ids() for t in ids]
    model = policy.model.eval()
    with torch.no_grad():
        packed = torch.zeros(6).index_add(0, batch["segments"], packed_token_logps(model, **batch))
        # the same completions scored one row each, with the full-vocabulary log-softmax
        for i, ids in enumerate(rollout.completion_ids()):
            prompt = rollout.prompt_ids[i // 3]
            row = torch.tensor([prompt + ids])
            completion_mask = torch.tensor([[0] * len(prompt) + [1] * len(ids)])
            naive = completion_logps_naive(model, row, torch.ones_like(row), completion_mask)
            assert packed[i].item() == pytest.approx(naive.item(), abs=1e-3)
