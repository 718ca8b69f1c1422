"""Rewards for online RL (alignment.rl.rewards): user files, built-ins, the reward model, and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from alignment.rl.rewards import (
    RewardError, RewardModelReward, WeightedReward, builtin_reward, combine_rewards, load_reward_fn,
)

PROMPTS = ["Say hi", "Say hi", "Count", "Count"]
COMPLETIONS = ["hi there", "hello", "1 2 3", "one two"]
COLUMNS = {"finish_reasons": ["stop", "length", "stop", "stop"], "completion_lengths": [2, 8, 5, 2],
           "group_size": 2, "prompt_messages": [[{"role": "user", "content": p}] for p in PROMPTS]}


def write(tmp_path, source: str):
    path = tmp_path / "rules.py"
    path.write_text(source, encoding="utf-8")
    return path


def test_user_function_with_trl_signature_and_weights(tmp_path):
    path = write(tmp_path, "def has_digit(prompts, completions, **kwargs):\n"
                           "    return [1.0 if any(c.isdigit() for c in t) else 0.0 for t in completions]\n"
                           "def not_for_counting(prompts, completions, **kwargs):\n"
                           "    return [None if p == 'Count' else 0.5 for p in prompts]\n")
    digit = load_reward_fn(f"{path}:has_digit")
    assert digit.name == "rules.py:has_digit" and digit.weight == 1.0
    other = load_reward_fn(f"{path}:not_for_counting@2")
    assert other.weight == 2.0
    total, per_function = combine_rewards([digit, other], PROMPTS, COMPLETIONS, COLUMNS, rollout=0)
    # has_digit [0, 0, 1, 0] + 2 · [0.5, 0.5, None, None]
    assert total.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert math.isnan(per_function["rules.py:not_for_counting"][2])


def test_builtin_rules_and_truncation_penalty():
    regex = builtin_reward(r"regex:\d")
    length = builtin_reward("length:4@0.5")
    eos = builtin_reward("eos")
    assert regex.fn(PROMPTS, COMPLETIONS, **COLUMNS) == [0.0, 0.0, 1.0, 0.0]
    # 1 − |n − 4|/4 for n = 2, 8, 5, 2 -> 0.5, 0 (clipped), 0.75, 0.5
    assert length.fn(PROMPTS, COMPLETIONS, **COLUMNS) == [0.5, 0.0, 0.75, 0.5]
    assert eos.fn(PROMPTS, COMPLETIONS, **COLUMNS) == [1.0, 0.0, 1.0, 1.0]
    total, _ = combine_rewards([regex, length, eos], PROMPTS, COMPLETIONS, COLUMNS, rollout=3,
                               truncation_penalty=1.0)
    # regex + 0.5·length + eos − 1·[cut]
    assert total.tolist() == [0.25 + 1, 0 + 0 + 0 - 1, 1 + 0.375 + 1, 0.25 + 1]
    with pytest.raises(RewardError, match="unknown built-in reward 'regexp'"):
        builtin_reward("regexp:a")
    with pytest.raises(RewardError, match="bad regex"):
        builtin_reward("regex:(")
    with pytest.raises(RewardError, match="at least 1 token"):
        builtin_reward("length:zero")


def test_loading_errors_name_the_file_and_function(tmp_path):
    with pytest.raises(RewardError, match="file not found"):
        load_reward_fn(f"{tmp_path}/missing.py:f")
    with pytest.raises(RewardError, match="FILE.py:NAME"):
        load_reward_fn("rules.py")
    path = write(tmp_path, "x = 3\n")
    with pytest.raises(RewardError, match="defines no 'f'"):
        load_reward_fn(f"{path}:f")
    with pytest.raises(RewardError, match="not callable"):
        load_reward_fn(f"{path}:x")
    bad = tmp_path / "broken.py"
    bad.write_text("import nonexistent_module_xyz\n", encoding="utf-8")
    with pytest.raises(RewardError, match="importing reward file .*broken.py failed: ModuleNotFoundError"):
        load_reward_fn(f"{bad}:f")


@pytest.mark.parametrize("body, message", [
    ("raise KeyError('answer')", r"reward function 'bad' raised on rollout 7: KeyError: 'answer'"),
    ("return [1.0]", r"reward function 'bad' on rollout 7 returned 1 values for 4 completions"),
    ("return [1.0, float('nan'), 0.0, 0.0]", r"'bad' on rollout 7 returned nan for completion 1"),
    ("return [1.0, 0.0, float('inf'), 0.0]", r"'bad' on rollout 7 returned inf for completion 2"),
    ("return 1.0", r"'bad' on rollout 7 returned float; expected a list of 4"),
    ("return ['a', 1, 1, 1]", r"returned 'a' for completion 0"),
    ("return [None] * 4", r"on rollout 7 no reward function gave a value .* completion 0"),
])
def test_bad_reward_values_are_clear_errors(body, message):
    namespace: dict = {}
    exec(f"def bad(prompts, completions, **kw):\n    {body}\n", namespace)
    with pytest.raises(RewardError, match=message):
        combine_rewards([WeightedReward("bad", namespace["bad"])], PROMPTS, COMPLETIONS, COLUMNS, rollout=7)


def test_reward_model_scores_text_as_packed_groups(tiny_reward_dir):
    from alignment.training.reward import load_reward_model, score

    reward = RewardModelReward(tiny_reward_dir, device="cpu")
    values = reward(PROMPTS, COMPLETIONS, **COLUMNS)
    # the packed scores equal the reward model's plain one-row-per-answer scores
    model, tokenizer = load_reward_model(tiny_reward_dir, device="cpu")
    expected = score(model, tokenizer, COLUMNS["prompt_messages"], COMPLETIONS)
    assert torch.allclose(torch.tensor(values), torch.tensor(expected), atol=1e-4)
    with pytest.raises(RewardError, match="no adapter_config.json"):
        RewardModelReward(tiny_reward_dir.parent, device="cpu")
