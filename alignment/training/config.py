"""Training configurations: one dataclass per method, sharing :class:`CommonConfig`.

This module owns what a training run is told to do: every knob, its default, its help text
(``dataclasses.fields(cfg)[i].metadata["help"]``, ready for a CLI), the checks that refuse bad
values with a clear :class:`ValueError`, and the JSON form saved into the run folder.

It loads nothing: no model, no data (it only checks that the data file exists).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from alignment.run_folder import TRAINING_CONFIG


DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "linear")

# Upper limits: far above any run this app makes, low enough that a typo (1e9) is refused at once
# instead of allocating for minutes and dying. Model-specific limits (max_length against the
# model's context, target module names) are checked before the model loads (training/preflight.py).
MAX_EPOCHS = 1000
MAX_STEPS = 10_000_000
MAX_BATCH_SIZE = 4096
MAX_LENGTH = 131_072
MAX_LORA_R = 1024


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and its help text."""
    return field(default=default, metadata={"help": help}, **kwargs)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(kw_only=True)
class CommonConfig:
    """Settings shared by every method (LoRA fine-tuning of a causal LM on preference data)."""

    method: ClassVar[str] = "common"

    data: str = field(metadata={"help": "Path to the training JSONL file (TRL format as exported by prefstudio)."})
    out: str = field(metadata={"help": "Run folder: adapter, tokenizer, config, metrics, progress and checkpoints."})
    model: str = _f("default", "Base model spec: 'default' (embedded SmolLM2-135M-Instruct), a .gguf file, "
                               "a local HF folder or a hub id.")
    epochs: int = _f(1, "Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (overrides epochs; cycles the data).")
    lr: float = _f(1e-4, "AdamW learning rate for the LoRA parameters.")
    lr_schedule: str = _f("constant", f"Learning-rate schedule: one of {', '.join(LR_SCHEDULES)}.")
    warmup_steps: int = _f(0, "Linear warm-up steps from 0 to lr.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float | None = _f(1.0, "Clip the gradient norm to this value (None: no clipping).")
    batch_size: int = _f(4, "Examples per batch (a pair or a ranking counts once); an optimizer step takes "
                            "grad_accum batches.")
    grad_accum: int = _f(1, "Batches accumulated per optimizer step.")
    micro_batch_size: int | None = _f(None, "Examples per forward pass: a batch runs as forward/backward passes of "
                                            "this many with the gradients summed (the same step, less memory). "
                                            "Empty: 1 on the CPU, the whole batch on a GPU.")
    max_length: int = _f(512, "Maximum tokens of prompt + completion; prompts are truncated from the left first.")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA scaling alpha.")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA branch.")
    target_modules: str | list[str] = _f("all-linear", "Modules to adapt: 'all-linear' or a list of module names.")
    eval_fraction: float = _f(0.1, "Share of the data held out for evaluation (split by prompt, seeded).")
    seed: int = _f(0, "Seed for the split, the shuffling, LoRA initialisation and dropout.")
    device: str = _f("auto", "Where to train: 'auto' (CUDA when available), 'cpu' or 'cuda'.")
    load_in_4bit: bool = _f(False, "QLoRA: load the base model in 4-bit NF4 with bitsandbytes (CUDA only).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass: far less memory for "
                                             "about a third more compute (for long sequences; small forward "
                                             "passes, micro_batch_size, are the cheaper saving).")
    logging_steps: int = _f(1, "Report a 'step' event every this many optimizer steps.")
    save_steps: int | None = _f(None, "Write a resumable checkpoint every this many steps (None: only the final save).")
    resume_from: str | None = _f(None, "Checkpoint folder (out/checkpoint-N) to continue from.")

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------------------------------
    # Validation
    # ----------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting and what would be accepted."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must be a non-empty spec: 'default', a .gguf file, a folder or a hub id")
        if not self.data or not Path(self.data).expanduser().is_file():
            raise ValueError(f"data file not found: {self.data!r} (expected a JSONL file)")
        if not self.out:
            raise ValueError("out must name a run folder")
        _check_int("epochs", self.epochs, minimum=1, maximum=MAX_EPOCHS)
        if self.max_steps is not None:
            _check_int("max_steps", self.max_steps, minimum=1, maximum=MAX_STEPS)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        _check_int("warmup_steps", self.warmup_steps, minimum=0, maximum=MAX_STEPS)
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not (_finite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a finite number > 0, or None for no clipping, "
                             f"got {self.max_grad_norm!r}")
        _check_int("batch_size", self.batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
        _check_int("grad_accum", self.grad_accum, minimum=1, maximum=MAX_BATCH_SIZE)
        if self.micro_batch_size is not None:
            _check_int("micro_batch_size", self.micro_batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
        _check_int("max_length", self.max_length, minimum=16, maximum=MAX_LENGTH)
        _check_int("lora_r", self.lora_r, minimum=1, maximum=MAX_LORA_R)
        if not (_finite(self.lora_alpha) and self.lora_alpha > 0):
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        if not (isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1):
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if isinstance(self.target_modules, str) and self.target_modules.strip() != "all-linear":
            # Typed in a form or a CLI flag: "q_proj, v_proj" names two modules.
            self.target_modules = [m for m in re.split(r"[,\s]+", self.target_modules) if m]
        if isinstance(self.target_modules, str):
            if not self.target_modules:
                raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        elif not (isinstance(self.target_modules, (list, tuple)) and self.target_modules
                  and all(isinstance(m, str) and m for m in self.target_modules)):
            raise ValueError(f"target_modules must be 'all-linear' or a non-empty list of module names, "
                             f"got {self.target_modules!r}")
        if not (isinstance(self.eval_fraction, (int, float)) and 0 <= self.eval_fraction < 1):
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction!r}")
        _check_int("seed", self.seed, minimum=0, maximum=2**32 - 1)
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.device == "cuda" and not cuda_available():
            raise ValueError("device='cuda' but no CUDA GPU is available; use device='cpu' or 'auto'")
        if self.load_in_4bit and self.resolved_device() != "cuda":
            raise ValueError("load_in_4bit (QLoRA) needs a CUDA GPU; this run would train on the CPU. "
                             "Set load_in_4bit=False to train LoRA in float32 on the CPU.")
        _check_int("logging_steps", self.logging_steps, minimum=1, maximum=MAX_STEPS)
        if self.save_steps is not None:
            _check_int("save_steps", self.save_steps, minimum=1, maximum=MAX_STEPS)
        if self.resume_from is not None and not Path(self.resume_from).expanduser().is_dir():
            raise ValueError(f"resume_from checkpoint folder not found: {self.resume_from!r}")

    def resolved_device(self) -> str:
        """'cuda' or 'cpu': what ``device`` means on this machine."""
        if self.device == "auto":
            return "cuda" if cuda_available() else "cpu"
        return self.device

    def resolved_micro_batch_size(self) -> int:
        """Examples per forward pass. On the CPU one at a time: activation memory then follows one
        example, and batching more buys little speed there (the matrix products are already large
        enough to keep the cores busy). On a GPU the whole batch, for throughput."""
        if self.micro_batch_size is not None:
            return min(self.micro_batch_size, self.batch_size)
        return 1 if self.resolved_device() == "cpu" else self.batch_size

    # ----------------------------------------------------------------------------------------
    # Serialisation
    # ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with the method and the resolved device."""
        values = asdict(self)
        if isinstance(values["target_modules"], tuple):
            values["target_modules"] = list(values["target_modules"])
        return {"method": self.method, **values, "resolved_device": self.resolved_device()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON; ``path`` may be the run folder (then ``training_config.json``)."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / TRAINING_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Rebuild (and re-validate) a config; derived keys (``method``, ``resolved_device``) are ignored.

        An unknown key is refused rather than silently dropped.
        """
        values = dict(values)
        method = values.pop("method", cls.method)
        values.pop("resolved_device", None)
        if method != cls.method:
            raise ValueError(f"config is for method {method!r}, not {cls.method!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike):
        path = Path(path)
        if path.is_dir():
            path = path / TRAINING_CONFIG
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text (with the default), e.g. for building a CLI."""
        out = {}
        for f in fields(cls):
            default = f.default if f.default is not MISSING else "required"
            out[f.name] = f"{f.metadata.get('help', '')} (default: {default})"
        return out


@dataclass(kw_only=True)
class DPOConfig(CommonConfig):
    """Direct Preference Optimisation on pairwise rows (prompt / chosen / rejected)."""

    method: ClassVar[str] = "dpo"

    lr: float = _f(5e-5, "AdamW learning rate for the LoRA parameters.")
    beta: float = _f(0.1, "DPO temperature: how far the policy may move from the reference (> 0).")
    loss: str = _f("sigmoid", f"DPO loss: one of {', '.join(DPO_LOSS_TYPES)} (ipo on per-token average "
                              f"log-ratios, as in the IPO paper and TRL).")
    label_smoothing: float = _f(0.0, "Conservative DPO: assumed share of flipped labels, in [0, 0.5).")

    def validate(self) -> None:
        super().validate()
        _check_beta(self.beta)
        if self.loss not in DPO_LOSS_TYPES:
            raise ValueError(f"loss must be one of {', '.join(DPO_LOSS_TYPES)}, got {self.loss!r}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 0.5):
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        if self.label_smoothing and self.loss != "sigmoid":
            raise ValueError("label_smoothing only applies to loss='sigmoid'")


@dataclass(kw_only=True)
class PLDPOConfig(CommonConfig):
    """Plackett-Luce DPO on listwise rows (prompt / completions best first / ranks)."""

    method: ClassVar[str] = "pl_dpo"

    lr: float = _f(5e-5, "AdamW learning rate for the LoRA parameters.")
    batch_size: int = _f(2, "Rankings per micro-batch (each holds K completions; CPU default 2).")
    beta: float = _f(0.1, "DPO temperature for the Plackett-Luce loss (> 0). Tied ranks are used, with "
                          "Efron's treatment of ties.")

    def validate(self) -> None:
        super().validate()
        _check_beta(self.beta)


@dataclass(kw_only=True)
class RewardConfig(CommonConfig):
    """A Bradley-Terry reward model: the base model with a scalar head, LoRA-tuned on pairs."""

    method: ClassVar[str] = "reward"

    lr: float = _f(1e-4, "AdamW learning rate for the LoRA parameters and the score head.")
    use_margin: bool = _f(False, "Use each row's 'margin' field (e.g. a rating gap) in the loss; rows "
                                 "without one get margin 0.")


METHODS: dict[str, type[CommonConfig]] = {c.method: c for c in (DPOConfig, PLDPOConfig, RewardConfig)}


def config_from_dict(values: dict[str, Any]) -> CommonConfig:
    """The right config class for a saved dict (by its ``method`` key)."""
    method = values.get("method")
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; expected one of {', '.join(METHODS)}")
    return METHODS[method].from_dict(values)


def _check_int(name: str, value: Any, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a whole number from {minimum} to {maximum:,}, got {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_beta(beta: Any) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
