"""Online RL end to end on a tiny model: GRPO and PPO learn a rule reward; bad input fails clearly.

The rule: the answer starts with a vowel (``regex:^[aeiouAEIOU]``), true of about 13% of the
tokenizer's tokens, so the base rate is around 10%, as the issue asks of the real-model check. The
tiny model is built with a larger ``initializer_range`` so that its next-token distribution is
peaked like a trained model's (at the default it is nearly uniform over 49k tokens and LoRA cannot
concentrate it in a few dozen steps).
"""
from __future__ import annotations

import json

import pytest

from alignment.rl.rewards import RewardError
from alignment.training.callbacks import ProgressFile
from alignment.training.config import GRPOConfig, PPOConfig
from tests.conftest import build_tiny_model

VOWEL_START = r"regex:^[aeiouAEIOU]"


@pytest.fixture(scope="module")
def peaked_model_dir(tokenizer_dir, tmp_path_factory):
    return build_tiny_model(tokenizer_dir, tmp_path_factory.mktemp("peaked-llama"), initializer_range=0.3)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [{"prompt": f"Tell me about item number {i}."} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def settings(model_dir, prompt_file, out, **overrides):
    values = dict(model=str(model_dir), data=str(prompt_file), out=str(out), device="cpu", max_new_tokens=2,
                  reward_rule=[VOWEL_START], lr=1e-2, lora_r=8, lora_alpha=16, max_length=128,
                  eval_fraction=0.25, eval_generations=8, micro_batch_size=16)
    values.update(overrides)
    return values


def test_grpo_raises_the_held_out_reward(peaked_model_dir, prompt_file, tmp_path):
    from alignment.rl.grpo import train_grpo

    # 16 rollouts of 2 prompts x 8 answers, each serving 4 optimizer steps (num_iterations). With
    # 4 x 4 the run learnt or not depending on the seed and even on torch's thread count (a policy
    # whose first answers never start with a vowel gets groups without signal); 2 x 8 learnt in
    # each of 8 runs (seeds 0-3, one and two threads; reward after 0.67-1.0).
    config = GRPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "grpo", max_steps=64, batch_size=2,
                                   num_generations=8, beta=0.04, num_iterations=4, logging_steps=4))
    result = train_grpo(config)
    before, after = result.eval_metrics["reward_before"], result.eval_metrics["reward_after"]
    assert before < 0.3
    assert after >= before + 0.25, (before, after)

    # The run folder: a standard PEFT adapter, the held-out prompts, and the progress people watch.
    assert (result.out_dir / "adapter_model.safetensors").is_file()
    split = json.loads((result.out_dir / "split.json").read_text())
    assert split["held_out"]["rows"] == result.eval_metrics["n"] >= 5
    steps = [e for e in ProgressFile.read(result.out_dir / "progress.jsonl") if e["event"] == "step"]
    assert len(steps) == 16
    for key in ("reward/mean", "reward/std", "reward/frac_zero_std_groups", "kl", "entropy", "clip_ratio",
                "approx_kl", "completions/mean_length", "rollouts_per_s", "time/generation_s"):
        assert key in steps[-1]["metrics"], key
    # reusing a rollout moves the policy away from the one that sampled it: the ratio is not 1
    assert max(s["metrics"]["approx_kl"] for s in steps) > 0
    logged = [json.loads(line) for line in (result.out_dir / "rollouts.jsonl").read_text().splitlines()]
    assert [r["rollout"] for r in logged] == list(range(1, 17))
    table = logged[-1]["rows"]
    assert len(table) == 8 and {"prompt", "completion", "reward", "finish_reason"} <= set(table[0])  # rollouts_shown


def test_ppo_raises_the_held_out_reward(peaked_model_dir, prompt_file, tmp_path):
    from alignment.rl.ppo import train_ppo

    # 24 rollouts of 8 prompts x 4 answers, each serving 2 PPO epochs of 2 shuffled mini-batches. With
    # one answer per prompt the run learnt in about half the seeds (the same seed-and-threads luck
    # as GRPO's above); this setting learnt in each of 4 runs (seeds 0-3; reward after 0.93-1.0), and
    # so did 8 x 4 answers without mini-batches in 6 runs (one and two threads).
    config = PPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "ppo", max_steps=96, batch_size=8,
                                  num_generations=4, ppo_epochs=2, num_mini_batches=2))
    result = train_ppo(config)
    before, after = result.eval_metrics["reward_before"], result.eval_metrics["reward_after"]
    assert before < 0.3
    assert after >= before + 0.25, (before, after)
    for key in ("value/loss", "value/explained_variance", "policy/clip_ratio", "approx_kl", "kl", "entropy"):
        assert key in result.metrics, key
    # the actor is the standard adapter at the top; the critic sits beside it
    assert (result.out_dir / "adapter_model.safetensors").is_file()
    assert (result.out_dir / "critic" / "adapter_model.safetensors").is_file()
    assert (result.out_dir / "value_head.pt").is_file()


def test_start_adapter_is_the_reference(peaked_model_dir, prompt_file, tmp_path):
    """With init_adapter, the first rollout's policy equals its reference: KL 0 although the
    adapter is far from the base."""
    from alignment.rl.grpo import train_grpo

    rules = tmp_path / "rules.py"  # a reward that always varies within a group, so every step moves the policy
    rules.write_text("def chars(prompts, completions, **columns):\n"
                     "    return [float(len(c)) for c in completions]\n", encoding="utf-8")
    first = train_grpo(GRPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "a", max_steps=3,
                                             batch_size=2, num_generations=4, eval_fraction=0.0, reward_rule=[],
                                             reward_fn=[f"{rules}:chars"])))
    config = GRPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "b", max_steps=1, batch_size=2,
                                   num_generations=4, eval_fraction=0.0, init_adapter=str(first.out_dir)))
    result = train_grpo(config)
    assert result.metrics["kl"] == pytest.approx(0.0, abs=1e-6)
    # and against the bare base (no init_adapter) the same adapter is far away
    assert first.metrics["kl"] > 1e-4


def test_the_rollout_log_holds_each_rounds_answers_with_their_rewards_and_advantages(peaked_model_dir,
                                                                                    prompt_file, tmp_path):
    """What the Train tab's rollout table reads: every chunk of the newest round (2 prompts sampled
    one per forward pass), each answer with its reward and its group-relative advantage."""
    import torch

    from alignment.rl.advantages import group_advantages
    from alignment.rl.grpo import train_grpo
    from alignment.rl.trainer import latest_round, read_rollouts

    rules = tmp_path / "rules.py"
    rules.write_text("def chars(prompts, completions, **columns):\n"
                     "    return [float(len(c)) for c in completions]\n", encoding="utf-8")
    config = GRPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "run", max_steps=2, batch_size=2,
                                   micro_batch_size=1, num_generations=4, eval_fraction=0.0, rollouts_shown=8,
                                   reward_rule=[], reward_fn=[f"{rules}:chars"]))
    result = train_grpo(config)
    # one rollout per step, both prompts sampled together though they train one forward chunk each
    assert [r["round"] for r in read_rollouts(result.out_dir)] == [1, 2]
    rows = latest_round(result.out_dir)
    assert len(rows) == 8
    for group in (rows[:4], rows[4:]):
        rewards = torch.tensor([r["reward"] for r in group])
        assert rewards.tolist() == [float(len(r["completion"])) for r in group]
        expected = group_advantages(rewards.view(1, 4), "grpo", "group").view(-1)
        assert [r["advantage"] for r in group] == pytest.approx(expected.tolist(), abs=1e-3)


def test_ppo_resumes_with_the_critic_its_checkpoint_saved(peaked_model_dir, prompt_file, tmp_path):
    """A checkpoint holds the critic (its LoRA and value head) next to the actor and the optimizer,
    and a resumed run starts from it, not from a fresh critic under the restored optimizer state."""
    import torch
    from peft import load_peft_weights

    from alignment.rl.ppo import CRITIC_ADAPTER, PPO, VALUE_HEAD_FILE, train_ppo

    rules = tmp_path / "rules.py"  # rewards that vary, so the critic's returns (and gradients) are not 0
    rules.write_text("def chars(prompts, completions, **columns):\n"
                     "    return [float(len(c)) for c in completions]\n", encoding="utf-8")
    common = dict(batch_size=2, eval_fraction=0.0, reward_rule=[], reward_fn=[f"{rules}:chars"], ppo_epochs=1)
    train_ppo(PPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "run", max_steps=3, save_steps=2,
                                   **common)))
    checkpoint = tmp_path / "run" / "checkpoint-2"
    saved_head = torch.load(checkpoint / VALUE_HEAD_FILE, weights_only=True)
    saved_lora = load_peft_weights(str(checkpoint / CRITIC_ADAPTER))
    assert saved_head["weight"].abs().sum() > 0  # trained: the fresh head is all zeros
    # fresh lora_B is 0 too; it once stayed 0: leaving the reference pass froze every adapter but the actor
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved_lora.items())

    resumed = PPO(PPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "run", max_steps=3,
                                       resume_from=str(checkpoint), **common)))
    resumed.run_dir = tmp_path / "run"
    resumed.data = resumed.load_data()
    model = resumed.load_model().model
    assert torch.equal(model.value_head.weight.detach().cpu(), saved_head["weight"])
    critic = {k: v for k, v in model.state_dict().items() if f".{CRITIC_ADAPTER}." in k}
    for key, value in saved_lora.items():  # PEFT's saved keys lack the adapter name
        restored = next(v for k, v in critic.items() if k.replace(f".{CRITIC_ADAPTER}.", ".") == key)
        assert torch.equal(restored.cpu(), value)


def test_ppo_epochs_shuffle_the_rollout_into_mini_batches(peaked_model_dir, prompt_file, tmp_path):
    """One rollout of 8 prompts, 2 PPO epochs x 2 mini-batches: 4 optimizer steps on it, each epoch a
    partition of the 8 prompts in a new order, and each repacked mini-batch carries the rows of the
    prepared tensors that belong to its own completions (the policy re-scores them to the same log-probs)."""
    import torch

    from alignment.rl.ppo import PPO
    from alignment.rl.trainer import padded_token_logps
    from alignment.training.skeleton import train

    method = PPO(PPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "run", max_steps=4, batch_size=8,
                                      micro_batch_size=2, ppo_epochs=2, num_mini_batches=2, eval_fraction=0.0)))
    seen = []

    def spy(rollout, batch, groups):
        part = PPO.select(method, rollout, batch, groups)
        was_training = method.trainable.model.training
        method.trainable.model.eval()
        with torch.no_grad():
            logps, mask, _ = padded_token_logps(method.trainable.model, part)
        method.trainable.model.train(was_training)
        if not seen or len(seen[-1]) == 4:  # forward chunks of 2 prompts; a mini-batch takes 2 of them
            seen.append([])
        seen[-1] += part["prompt_index"]
        # each completion's own rows, cut to the chunk's longest completion
        assert part["old_logps"].shape == mask.shape and not (part["old_logps"] * ~mask).any()
        if len(seen) == 1:  # before the first update, the policy re-scores them to the same log-probs
            assert torch.allclose(logps * mask, part["old_logps"] * mask, atol=1e-5)
        return part

    method.select = spy
    result = train(method)
    assert result.steps == 4
    steps = [e for e in ProgressFile.read(result.out_dir / "progress.jsonl") if e["event"] == "step"]
    assert len(steps) == 4
    rounds = [json.loads(line)["round"] for line in (result.out_dir / "rollouts.jsonl").read_text().splitlines()]
    assert rounds == [1]  # one rollout served all four steps
    assert len(seen) == 4 and all(len(share) == 4 for share in seen)
    first_epoch, second_epoch = seen[:2], seen[2:]
    assert sorted(first_epoch[0] + first_epoch[1]) == sorted(second_epoch[0] + second_epoch[1]) == list(range(8))
    assert first_epoch != second_epoch  # shuffled again for the second pass


def test_ppo_critic_starts_as_the_reward_model(tiny_model_dir, tiny_reward_dir, prompt_file, tmp_path):
    """critic_from_reward_model: the critic's LoRA is the reward model's (its rank too, not the
    policy's) and its value head is the reward model's score head."""
    import torch
    from peft import PeftConfig, load_peft_weights

    from alignment.rl.ppo import CRITIC_ADAPTER, PPO

    rm_rank = PeftConfig.from_pretrained(str(tiny_reward_dir)).r
    method = PPO(PPOConfig(**settings(tiny_model_dir, prompt_file, tmp_path / "run", max_steps=1, eval_fraction=0.0,
                                      lora_r=rm_rank + 4, reward_rule=[], reward_model=str(tiny_reward_dir),
                                      critic_from_reward_model=True)))
    method.run_dir = tmp_path / "run"
    method.run_dir.mkdir()
    method.data = method.load_data()
    model = method.load_model().model
    assert model.peft_config[CRITIC_ADAPTER].r == rm_rank != model.peft_config["default"].r
    rm_weights = load_peft_weights(str(tiny_reward_dir))
    critic = {k.replace(f".{CRITIC_ADAPTER}.", "."): v for k, v in model.state_dict().items()
              if f".{CRITIC_ADAPTER}." in k}
    lora_keys = [k for k in rm_weights if ".lora_" in k]
    assert lora_keys and any(rm_weights[k].abs().sum() > 0 for k in lora_keys if "lora_B" in k)
    for key in lora_keys:
        assert torch.equal(critic[key].cpu(), rm_weights[key].cpu()), key
    score = next(v for k, v in rm_weights.items() if k.endswith("score.weight") or "score.modules_to_save" in k)
    assert torch.equal(model.value_head.weight.detach().cpu(), score.float().reshape(1, -1).cpu())


# -- Bad input ---------------------------------------------------------------------------------

def test_bad_settings_are_refused_before_launch(peaked_model_dir, prompt_file, tmp_path):
    base = settings(peaked_model_dir, prompt_file, tmp_path / "x")
    with pytest.raises(ValueError, match=r"GRPO needs num_generations \(K\) >= 2"):
        GRPOConfig(**{**base, "num_generations": 1, "batch_size": 4})
    with pytest.raises(ValueError, match=r"reward_fn 'nowhere.py:score': file not found"):
        GRPOConfig(**{**base, "reward_fn": ["nowhere.py:score"]})
    with pytest.raises(ValueError, match="no reward"):
        PPOConfig(**{**base, "reward_rule": []})
    with pytest.raises(ValueError, match="holds no trained reward model"):
        PPOConfig(**{**base, "reward_model": str(tmp_path)})
    # the batch counts prompts, so any K fits it; only the completions per step are bounded
    GRPOConfig(**{**base, "batch_size": 3, "num_generations": 4})
    with pytest.raises(ValueError, match=r"batch_size \(2048 prompts\) x num_generations \(4 completions each\) "
                                         r"= 8,192 completions per step, more than 4,096"):
        GRPOConfig(**{**base, "batch_size": 2048, "num_generations": 4})
    with pytest.raises(ValueError, match=r"num_mini_batches \(9\) is more than the rollout's 8 prompts"):
        PPOConfig(**{**base, "num_mini_batches": 9})
    PPOConfig(**{**base, "num_mini_batches": 2, "micro_batch_size": 1})  # mini-batches run in forward chunks too


@pytest.mark.parametrize("body, message", [
    ("raise RuntimeError('judge offline')", r"'rules.py:judge' raised on rollout 1: RuntimeError: judge offline"),
    ("return [0.5]", r"'rules.py:judge' on rollout 1 returned 1 values for 8 completions"),
    ("return [float('nan')] * len(completions)", r"'rules.py:judge' on rollout 1 returned nan for completion 0"),
])
def test_a_failing_reward_function_fails_the_run_without_an_adapter(peaked_model_dir, prompt_file, tmp_path,
                                                                    body, message):
    from alignment.rl.grpo import train_grpo

    rules = tmp_path / "rules.py"
    rules.write_text(f"def judge(prompts, completions, **columns):\n    {body}\n", encoding="utf-8")
    config = GRPOConfig(**settings(peaked_model_dir, prompt_file, tmp_path / "run", max_steps=2, batch_size=2,
                                   num_generations=4, eval_fraction=0.0, reward_rule=[],
                                   reward_fn=[f"{rules}:judge"]))
    with pytest.raises(RewardError, match=message):
        train_grpo(config)
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "run" / "adapter_config.json").exists()
