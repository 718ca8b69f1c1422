"""`app.py train ppo|grpo` as a user runs it: every knob in --help, a run from a prompt file, bad input."""
from __future__ import annotations

import json

from tests.test_cli import app, write_jsonl


def test_help_lists_every_online_rl_knob():
    from dataclasses import fields

    from alignment.training.config import GRPOConfig, PPOConfig

    result = app("train", "--help")
    assert result.returncode == 0, result.stderr
    for config in (GRPOConfig, PPOConfig):
        for f in fields(config):
            if f.name != "data":  # given as --prompts (or --data), or --project
                assert f"--{f.name.replace('_', '-')}" in result.stdout, f.name
    assert "--prompts" in result.stdout and "ppo: 1, grpo: 4" in result.stdout


def test_train_grpo_from_a_prompt_file_then_bad_input(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {i}"} for i in range(6)]
                          + [{"messages": [{"role": "user", "content": "Hello?"}]}])
    out = tmp_path / "grpo"
    done = app("train", "grpo", "--prompts", prompts, "--model", tiny_model_dir, "--out", out, "--max-steps", 2,
               "--batch-size", 2, "--num-generations", 2, "--max-new-tokens", 4, "--reward-rule", "length:2",
               "--reward-rule", r"regex:\w@0.5", "--lora-r", 4, "--eval-fraction", 0.3, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trained grpo: 2 steps" in done.stdout
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["method"] == "grpo" and saved["reward_rule"] == ["length:2", r"regex:\w@0.5"]
    assert (out / "adapter_model.safetensors").is_file()

    # a PPO knob on a GRPO run, K < 2, a missing reward file: refused before anything loads
    refused = app("train", "grpo", "--prompts", prompts, "--out", tmp_path / "x", "--reward-rule", "eos",
                  "--vf-coef", 0.5)
    assert refused.returncode == 2 and "--vf-coef is a ppo setting" in refused.stderr
    refused = app("train", "grpo", "--prompts", prompts, "--out", tmp_path / "x", "--reward-rule", "eos",
                  "--num-generations", 1)
    assert refused.returncode == 2 and "GRPO needs num_generations (K) >= 2" in refused.stderr
    refused = app("train", "ppo", "--prompts", prompts, "--out", tmp_path / "x", "--reward-fn", "nope.py:f")
    assert refused.returncode == 2 and "reward_fn 'nope.py:f': file not found" in refused.stderr

    # a reward function that raises ends the run with one line naming it and the rollout; no adapter
    rules = tmp_path / "rules.py"
    rules.write_text("def judge(prompts, completions, **kw):\n    raise KeyError('score')\n", encoding="utf-8")
    failed = app("train", "grpo", "--prompts", prompts, "--model", tiny_model_dir, "--out", tmp_path / "bad",
                 "--max-steps", 1, "--batch-size", 2, "--num-generations", 2, "--max-new-tokens", 2,
                 "--reward-fn", f"{rules}:judge", "--lora-r", 4, "--eval-fraction", 0, timeout=300)
    assert failed.returncode == 2
    assert "error: reward function 'rules.py:judge' raised on rollout 1: KeyError: 'score'" in failed.stderr
    assert "no adapter was saved" in failed.stderr
    assert not (tmp_path / "bad" / "adapter_config.json").exists()
