"""alignment.training.skeleton: the six steps every method shares, and the rollout hook that lets a
method (PPO, GRPO) sample each batch from the policy being trained instead of reading fixed examples.

DPO, PL-DPO and the reward model run through the skeleton in tests/test_training.py; here a small
REINFORCE method on a tiny Llama checks what a rollout method is promised: its rollout runs with the
current policy in eval mode and without gradients, once per forward chunk of whole prompts, and its
loss then trains the policy in train mode.
"""
from __future__ import annotations

import json
import math

import torch

from alignment.packing import pack_shared_prefix
from alignment.training import EventRecorder
from alignment.training.config import CommonConfig
from alignment.training.loop import model_inputs
from alignment.training.skeleton import Data, Method, train

FAST = dict(max_length=64, lora_r=4, lora_alpha=8, lora_dropout=0.0)
PROMPTS = ["Say yes.", "Say no.", "Count to three.", "Name a colour."]


class ToyReinforce(Method):
    """Two sampled answers per prompt; the longer one gets advantage +1, the other -1 (REINFORCE)."""

    name = "toy_reinforce"
    rollouts = True

    def __init__(self, config):
        super().__init__(config)
        self.rollout_calls: list[tuple[list[int], bool, bool]] = []  # (prompts, model.training, grad enabled)
        self.loss_modes: list[bool] = []

    def load_data(self) -> Data:
        return Data(PROMPTS, [])

    def rollout(self, model, indices, forward_size):
        self.rollout_calls.append((list(indices), model.training, torch.is_grad_enabled()))
        groups = []
        for i in indices:
            prompt_ids = self.tokenizer(self.data.train[i], add_special_tokens=False)["input_ids"]
            output = model.generate(input_ids=torch.tensor([prompt_ids] * 2), max_new_tokens=4, do_sample=True,
                                    pad_token_id=self.tokenizer.eos_token_id)
            answers = [row[len(prompt_ids):] for row in output.tolist()]
            longer = int(len(answers[1]) > len(answers[0]))
            groups.append(((prompt_ids, answers), [1.0 if k == longer else -1.0 for k in range(2)]))
        chunks = []
        for start in range(0, len(groups), forward_size):
            part = groups[start:start + forward_size]
            batch = pack_shared_prefix([rows for rows, _ in part], pad=self.tokenizer.eos_token_id)
            batch["advantages"] = torch.tensor([a for _, advantages in part for a in advantages])
            chunks.append((batch, len(part) / len(groups)))
        return chunks

    def loss(self, forward, batch):
        self.loss_modes.append(self.trainable.model.training)
        logps = forward(**model_inputs(batch))
        loss = -(batch["advantages"].to(logps.device) * logps).mean()
        return loss, {"logps": logps.mean().item()}


def test_a_rollout_method_samples_each_batch_from_the_policy_being_trained(tiny_model_dir, tmp_path):
    data = tmp_path / "unused.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    config = CommonConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "run"), max_steps=2,
                          batch_size=2, micro_batch_size=1, lr=1e-2, **FAST)
    method, recorder = ToyReinforce(config), EventRecorder()
    torch.manual_seed(0)
    result = train(method, callbacks=[recorder])

    # 2 steps x 2 prompts: one rollout per step, of both its prompts, in eval mode without
    # gradients; then one forward chunk per prompt, each loss in train mode.
    assert [len(prompts) for prompts, _, _ in method.rollout_calls] == [2, 2]
    assert len(set(method.rollout_calls[0][0])) == 2
    assert all(not training and not grad for _, training, grad in method.rollout_calls)
    assert method.loss_modes == [True] * 4
    assert result.steps == 2 and math.isfinite(result.metrics["loss"])

    # The skeleton's other steps ran as for any method: no held-out rows, so no eval event.
    assert [e for e, _ in recorder.events] == ["train_begin", "step", "step", "save", "train_end"]
    assert recorder.of("train_begin")[0]["n_train"] == len(PROMPTS)
    summary = json.loads((result.out_dir / "metrics.json").read_text())
    assert (summary["steps"], summary["n_train"], summary["n_eval"]) == (2, 4, 0)
    trained = {n: p for n, p in method.trainable.model.named_parameters() if "lora_B" in n}
    assert trained and all(p.abs().sum() > 0 for p in trained.values())  # lora_B starts at zero
