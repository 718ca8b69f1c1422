"""Training on collected preferences: DPO, Plackett-Luce DPO and Bradley-Terry reward models, with LoRA.

Modules and what they own:

* :mod:`~alignment.training.config` -- one dataclass per method, validation, JSON form;
* :mod:`~alignment.training.data` -- reading TRL JSONL rows, the held-out split, batching;
* :mod:`~alignment.training.lora` -- base weights, LoRA wrapping, the QLoRA (4-bit) path;
* :mod:`~alignment.training.reference` -- reference log-probs computed once and cached;
* :mod:`~alignment.training.loop` -- the optimisation loop, checkpoints, the run folder;
* :mod:`~alignment.training.skeleton` -- the steps every method takes (data, model, reference,
  loop, evaluation, saving) and the :class:`~alignment.training.skeleton.Method` a method fills in;
* :mod:`~alignment.training.callbacks` -- progress events and their listeners;
* :mod:`~alignment.training.dpo`, :mod:`~alignment.training.pl_dpo`, :mod:`~alignment.training.reward`
  -- one :class:`~alignment.training.skeleton.Method` and entry point per method.

Importing this package is light: the entry points are loaded on first use.
"""
from __future__ import annotations

from typing import Any

from alignment.training.callbacks import Callback, EventRecorder, ProgressFile, TqdmCallback
from alignment.training.config import CommonConfig, DPOConfig, PLDPOConfig, RewardConfig

__all__ = [
    "Callback", "CommonConfig", "DPOConfig", "EventRecorder", "PLDPOConfig", "ProgressFile", "RewardConfig",
    "TqdmCallback", "TrainResult", "load_reward_model", "score", "train", "train_dpo", "train_pl_dpo",
    "train_reward_model",
]

_LAZY = {
    "train_dpo": "alignment.training.dpo",
    "train_pl_dpo": "alignment.training.pl_dpo",
    "train_reward_model": "alignment.training.reward",
    "load_reward_model": "alignment.training.reward",
    "score": "alignment.training.reward",
    "TrainResult": "alignment.training.loop",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alignment.training' has no attribute {name!r}")


def train(config: CommonConfig, callbacks=()):
    """Run the method the config is for."""
    if isinstance(config, DPOConfig):
        from alignment.training.dpo import train_dpo

        return train_dpo(config, callbacks)
    if isinstance(config, PLDPOConfig):
        from alignment.training.pl_dpo import train_pl_dpo

        return train_pl_dpo(config, callbacks)
    if isinstance(config, RewardConfig):
        from alignment.training.reward import train_reward_model

        return train_reward_model(config, callbacks)
    raise TypeError(f"no training method for {type(config).__name__}")
