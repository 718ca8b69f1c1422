"""A Bradley-Terry reward model: the base LM with a scalar head, LoRA-tuned on preference pairs.

:class:`Reward` is the method's part of :func:`alignment.training.skeleton.train`: preference
pairs, the scoring model with LoRA (its ``score`` head fully trained and saved with the adapter),
the Bradley-Terry loss, held-out accuracy. :func:`load_reward_model` and :func:`score` serve the
trained model (best-of-N, comparison views).

The head reads each sequence at its last non-padding token (transformers' sequence
classification pooling; the pad id is set on the model's config), i.e. at the last token of the
response.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from alignment.chat import Messages
from alignment.logprobs import packed_hidden_states
from alignment.losses import bradley_terry_loss, implicit_reward_accuracy
from alignment.run_folder import ADAPTER_CONFIG, TRAINING_CONFIG, recorded_base_model, saved_training_config
from alignment.training.config import RewardConfig
from alignment.training.data import PreferencePair, PromptCache, response_batch
from alignment.training.lora import (
    REWARD_HEAD, TrainableModel, base_model_location, load_base_model, load_reward_backbone, load_tokenizer,
)
from alignment.training.loop import TrainResult, model_inputs
from alignment.training.skeleton import PairMethod, train


class RewardModel(NamedTuple):
    """A loaded reward model: ``model, tokenizer = load_reward_model(path)`` also works."""

    model: Any
    tokenizer: Any


def rewards(model: Any, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor | None = None) -> Tensor:
    """One scalar reward per row, ``[B]`` float32 (``completion_mask`` is not needed)."""
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.squeeze(-1).float()


def packed_rewards(model: Any, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                   last_index: Tensor, **_: Tensor) -> Tensor:
    """One reward per completion of a shared-prefix batch (:mod:`alignment.packing`), ``[S]`` float32.

    The score head reads the hidden state where transformers' sequence classification pools each
    ``prompt + completion`` (its last non-pad token), so the rewards equal :func:`rewards` on the
    unpacked rows; the prompt is computed once for all its completions.
    """
    hidden = packed_hidden_states(model, input_ids, attention_mask, position_ids)
    pooled = hidden[last_index[:, 0], last_index[:, 1]]  # [S, H]
    return score_head(model)(pooled).squeeze(-1).float()


def score_head(model: Any) -> Any:
    """The scalar head (for a PEFT model, its trained copy saved with the adapter)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, REWARD_HEAD)


def reward_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, float]:
    """Accuracy (chosen scored strictly higher), mean margin and mean rewards."""
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/accuracies": implicit_reward_accuracy(chosen, rejected),
        "rewards/margins": (chosen - rejected).mean().item(),
    }


def _margins(pairs: Sequence[PreferencePair]) -> Tensor:
    return torch.tensor([p.margin if p.margin is not None else 0.0 for p in pairs], dtype=torch.float32)


class Reward(PairMethod):
    """A Bradley-Terry reward model (:func:`bradley_terry_loss`), optionally with per-pair margins
    (each pair's optional "margin")."""

    name = "reward"
    forward = staticmethod(packed_rewards)

    def load_model(self) -> TrainableModel:
        """The base weights with a 1-output head, LoRA + the head trainable."""
        return load_reward_backbone(self.config)

    def collate(self, indices: list[int]) -> dict:
        batch = super().collate(indices)
        batch["margin"] = _margins([self.data.train[i] for i in indices])
        return batch

    def loss(self, forward: Any, batch: dict) -> tuple[Tensor, dict[str, float]]:
        """Chosen and rejected of a batch scored in one forward."""
        scores = forward(**model_inputs(batch))
        chosen, rejected = scores.view(-1, 2).unbind(-1)
        margin = batch["margin"].to(scores.device) if self.config.use_margin else None
        losses = bradley_terry_loss(chosen, rejected, margin=margin)
        return losses.mean(), reward_metrics(chosen.detach(), rejected.detach())

    def eval_metrics(self, rows: list[Tensor]) -> dict[str, float]:
        """Held-out accuracy and mean margin (and the loss)."""
        table = torch.stack(rows)
        margin = _margins(self.data.held_out) if self.config.use_margin else None
        eval_loss = bradley_terry_loss(table[:, 0], table[:, 1], margin=margin).mean().item()
        return {"loss": eval_loss, **reward_metrics(table[:, 0], table[:, 1]), "n": len(rows)}


def train_reward_model(config: RewardConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA reward model with the Bradley-Terry loss (optionally with per-pair margins)."""
    return train(Reward(config), callbacks)


# --------------------------------------------------------------------------------------------
# Serving a trained reward model
# --------------------------------------------------------------------------------------------

def _base_location_for(run_dir: Path) -> str:
    """The base weights of a saved reward model: the adapter's recorded folder, else the config's spec."""
    recorded = recorded_base_model(run_dir)
    if recorded and Path(recorded).is_dir():
        return recorded
    spec = (saved_training_config(run_dir) or {}).get("model")
    if spec:
        return base_model_location(spec)
    raise ValueError(f"{run_dir}: cannot tell which base model this reward model adapts "
                     f"(no usable {ADAPTER_CONFIG} or {TRAINING_CONFIG})")


def load_reward_model(path: str | Path, device: str | None = None, base: str | None = None) -> RewardModel:
    """Load a reward model saved by :func:`train_reward_model` (``base`` overrides the base weights' location)."""
    from peft import PeftModel

    run_dir = Path(path).expanduser()
    if not (run_dir / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{run_dir} is not a saved reward model (no {ADAPTER_CONFIG})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(str(run_dir))
    location = base or _base_location_for(run_dir)
    backbone = load_base_model(location, device=device, reward=True, pad_token_id=tokenizer.pad_token_id)
    model = PeftModel.from_pretrained(backbone, str(run_dir)).to(device)
    model.eval()
    return RewardModel(model, tokenizer)


@torch.no_grad()
def score(reward_model: Any, tokenizer: Any, prompts_messages: Sequence[Messages], responses: Sequence[str],
          batch_size: int = 8, max_length: int = 1024) -> list[float]:
    """The reward of each (prompt messages, response) pair, in order."""
    if len(prompts_messages) != len(responses):
        raise ValueError(f"{len(prompts_messages)} prompts but {len(responses)} responses")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(reward_model, RewardModel):
        reward_model = reward_model.model
    device = next(reward_model.parameters()).device
    was_training = reward_model.training
    reward_model.eval()
    render = PromptCache(tokenizer)
    out: list[float] = []
    try:
        for start in range(0, len(responses), batch_size):
            batch = response_batch(tokenizer, prompts_messages[start:start + batch_size],
                                   responses[start:start + batch_size], max_length, render)
            out.extend(rewards(reward_model, batch["input_ids"].to(device),
                               batch["attention_mask"].to(device)).tolist())
    finally:
        reward_model.train(was_training)
    return out
