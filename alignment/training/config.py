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
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from alignment.run_folder import TRAINING_CONFIG
from alignment.settings import Settings, check_int
from alignment.settings import help_field as _f  # short: it opens every field line below


DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")
LR_SCHEDULES = ("constant", "linear")

# Upper limits: far above any run this app makes, low enough that a typo (1e9) is refused at once
# instead of allocating for minutes and dying. Model-specific limits (max_length against the
# model's context, target module names) are checked before the model loads (training/preflight.py).
MAX_EPOCHS = 1000
MAX_STEPS = 10_000_000
MAX_BATCH_SIZE = 4096
MAX_LENGTH = 131_072
MAX_LORA_R = 1024
MAX_GENERATIONS = 256  # answers sampled per prompt (online RL)
MAX_NEW_TOKENS = 4096  # as alignment.sampling allows
MAX_PROCESSES = 64  # training processes on one machine (one per GPU)


@dataclass(kw_only=True)
class CommonConfig(Settings):
    """Settings shared by every method (LoRA fine-tuning of a causal LM on preference data)."""

    method: ClassVar[str] = "common"
    #: Whether the method has been run and checked with several processes (``processes`` > 1).
    multi_process: ClassVar[bool] = True

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
    processes: int = _f(1, "Training processes (accelerate launch, gradients averaged): one per GPU, or "
                           "several sharing the CPU cores. batch_size is per process, so a step takes "
                           "processes x batch_size examples.")
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
        check_int("epochs", self.epochs, minimum=1, maximum=MAX_EPOCHS)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, minimum=1, maximum=MAX_STEPS)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        check_int("warmup_steps", self.warmup_steps, minimum=0, maximum=MAX_STEPS)
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not (_finite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a finite number > 0, or None for no clipping, "
                             f"got {self.max_grad_norm!r}")
        check_int("batch_size", self.batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
        check_int("grad_accum", self.grad_accum, minimum=1, maximum=MAX_BATCH_SIZE)
        if self.micro_batch_size is not None:
            check_int("micro_batch_size", self.micro_batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
        check_int("max_length", self.max_length, minimum=16, maximum=MAX_LENGTH)
        check_int("lora_r", self.lora_r, minimum=1, maximum=MAX_LORA_R)
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
        check_int("seed", self.seed, minimum=0, maximum=2**32 - 1)
        self.check_device()
        check_int("processes", self.processes, minimum=1, maximum=MAX_PROCESSES)
        if self.processes > 1 and not self.multi_process:
            raise ValueError(f"processes: {self.method} trains in one process for now (several are "
                             f"supported for dpo, pl_dpo and reward)")
        if self.load_in_4bit and self.resolved_device() != "cuda":
            raise ValueError("load_in_4bit (QLoRA) needs a CUDA GPU; this run would train on the CPU. "
                             "Set load_in_4bit=False to train LoRA in float32 on the CPU.")
        check_int("logging_steps", self.logging_steps, minimum=1, maximum=MAX_STEPS)
        if self.save_steps is not None:
            check_int("save_steps", self.save_steps, minimum=1, maximum=MAX_STEPS)
        if self.resume_from is not None and not Path(self.resume_from).expanduser().is_dir():
            raise ValueError(f"resume_from checkpoint folder not found: {self.resume_from!r}")

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
        values = super().to_dict()
        if isinstance(values["target_modules"], tuple):
            values["target_modules"] = list(values["target_modules"])
        return values

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


KL_ESTIMATORS = ("k1", "k3")
ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "rloo")
REWARD_SCALINGS = ("group", "batch", "none")
LOSS_AGGREGATIONS = ("sequence", "token", "constant")


# Online RL counts its batch in prompts, not completions (TRL counts completions, which K must divide):
# any batch size fits any K here, and the form says so.
BATCH_LABEL = "Prompts per step (batch size)"
BATCH_OF_PROMPTS = ("Prompts per step, not completions: each prompt is sampled K times, so a step scores "
                    "batch size x K completions (any batch size fits any K).")


@dataclass(kw_only=True)
class OnlineRLConfig(CommonConfig):
    """Settings shared by the online RL methods: prompts, sampling, rewards and the reference."""

    method: ClassVar[str] = "online_rl"
    multi_process: ClassVar[bool] = False  # rollouts under several processes are not checked yet

    data: str = field(metadata={"help": "Prompt file: JSONL rows with 'prompt' (a string or chat messages) or "
                                        "'messages'; other columns reach the reward functions."})
    lr: float = _f(1e-5, "AdamW learning rate for the LoRA parameters.")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA branch (0: the update scores tokens exactly as the "
                                  "rollout did, so the first importance ratio is 1).")
    max_steps: int | None = _f(None, "Optimizer steps (overrides epochs: one epoch is one pass over the training "
                                     "prompts). A rollout serves several steps when it is reused.")
    batch_size: int = _f(8, BATCH_OF_PROMPTS, label=BATCH_LABEL)
    micro_batch_size: int | None = _f(None, "Prompts per forward pass (with all their completions); empty: 1 on the "
                                            "CPU, the whole batch on a GPU.", label="Prompts per forward pass")
    num_generations: int = _f(1, "Completions sampled per prompt (K).", label="Completions per prompt (K)")
    max_new_tokens: int = _f(64, "Most tokens sampled per completion.")
    temperature: float = _f(1.0, "Sampling temperature of the rollouts (> 0: RL needs samples, not greedy answers).")
    top_p: float = _f(1.0, "Nucleus sampling of the rollouts (1: the full distribution, as the log-probs assume).")
    reward_model: str | None = _f(None, "Reward model folder trained in the app (the --out of `train rm`).")
    reward_model_weight: float = _f(1.0, "Weight of the reward model's score in the total reward.")
    reward_fn: list[str] = _f((), "Reward functions FILE.py:NAME[@WEIGHT], TRL's signature: "
                                  "fn(prompts, completions, **columns) -> one float or None per completion.")
    reward_rule: list[str] = _f((), "Built-in rewards NAME[:ARG][@WEIGHT]: 'regex:PATTERN' (1 on a match), "
                                    "'length:TOKENS' (1 at that length), 'eos' (1 when the answer ended itself).")
    truncation_penalty: float = _f(0.0, "Subtracted from the reward of answers cut at max_new_tokens.")
    init_adapter: str | None = _f(None, "Start from this LoRA adapter (e.g. a DPO or SFT run) and use it, frozen, "
                                        "as the reference; default: a fresh adapter, the bare base as reference.")
    eval_fraction: float = _f(0.1, "Share of the prompts held out to measure the reward before and after training.")
    eval_generations: int = _f(2, "Completions sampled per held-out prompt for the before/after reward.")
    rollouts_shown: int = _f(8, "Completions of each rollout (all of a step's prompts) written with their rewards "
                                "to rollouts.jsonl.")

    def validate(self) -> None:
        super().validate()
        check_int("num_generations", self.num_generations, minimum=1, maximum=MAX_GENERATIONS)
        check_int("max_new_tokens", self.max_new_tokens, minimum=1, maximum=MAX_NEW_TOKENS)
        check_int("eval_generations", self.eval_generations, minimum=1, maximum=MAX_GENERATIONS)
        check_int("rollouts_shown", self.rollouts_shown, minimum=0, maximum=MAX_GENERATIONS)
        if self.batch_size * self.num_generations > MAX_BATCH_SIZE:
            raise ValueError(f"batch_size ({self.batch_size} prompts) x num_generations ({self.num_generations} "
                             f"completions each) = {self.batch_size * self.num_generations:,} completions per step, "
                             f"more than {MAX_BATCH_SIZE:,}: lower one of them")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        for name in ("reward_model_weight", "truncation_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        # A form's text box gives one string: one reward per line.
        self.reward_fn, self.reward_rule = _lines(self.reward_fn), _lines(self.reward_rule)
        if not (self.reward_model or self.reward_fn or self.reward_rule):
            raise ValueError("no reward: give reward_model (a folder from `train rm`), reward_fn (FILE.py:NAME) "
                             "or reward_rule (e.g. 'eos')")
        for spec in self.reward_fn:
            file_name = spec.rpartition(":")[0]  # FILE.py:NAME[@WEIGHT]
            if not file_name or not Path(file_name).expanduser().is_file():
                raise ValueError(f"reward_fn {spec!r}: file not found (expected FILE.py:NAME[@WEIGHT])")
        if self.reward_model and not (Path(self.reward_model).expanduser() / "adapter_config.json").is_file():
            raise ValueError(f"reward_model folder {self.reward_model!r} holds no trained reward model "
                             f"(no adapter_config.json)")
        if self.init_adapter and not (Path(self.init_adapter).expanduser() / "adapter_config.json").is_file():
            raise ValueError(f"init_adapter folder {self.init_adapter!r} holds no LoRA adapter "
                             f"(no adapter_config.json)")


@dataclass(kw_only=True)
class GRPOConfig(OnlineRLConfig):
    """Group Relative Policy Optimisation (Shao et al. 2024): K answers per prompt, each judged
    against the others, no critic."""

    method: ClassVar[str] = "grpo"

    # 3e-4, not the online-RL 1e-5: with LoRA r 16 on the embedded model, 30 steps of the other
    # defaults took a rule reward with a 6-12% base rate to 42% on held-out prompts (1e-4: 13%;
    # docs/benchmarks.md, "GRPO's defaults").
    lr: float = _f(3e-4, "AdamW learning rate for the LoRA parameters.")
    batch_size: int = _f(2, BATCH_OF_PROMPTS, label=BATCH_LABEL)
    num_generations: int = _f(4, "Completions sampled per prompt (K >= 2: the group is the baseline).",
                              label="Completions per prompt (K)")
    beta: float = _f(0.04, "Weight of the k3 KL penalty to the reference (0: no reference pass at all).")
    advantage_estimator: str = _f("grpo", f"One of {', '.join(ADVANTAGE_ESTIMATORS)}: group mean/std (GRPO), "
                                          "group mean only (Dr. GRPO), leave-one-out baseline (RLOO).")
    scale_rewards: str = _f("group", f"Divide advantages by the std of the {'/'.join(REWARD_SCALINGS[:2])} or "
                                     "not at all ('none'; Dr. GRPO uses none).")
    loss_aggregation: str = _f("sequence", f"One of {', '.join(LOSS_AGGREGATIONS)}: mean over each answer then "
                                           "answers (GRPO), over all tokens (DAPO), or sum / max_new_tokens "
                                           "(Dr. GRPO).")
    epsilon: float = _f(0.2, "Clip range of the importance ratio (lower side).")
    epsilon_high: float | None = _f(None, "Upper clip range (DAPO's clip-higher, e.g. 0.28); empty: epsilon.")
    num_iterations: int = _f(1, "Updates per rollout; above 1 the rollout is reused with the importance ratio.")

    def validate(self) -> None:
        super().validate()
        if self.num_generations < 2:
            raise ValueError(f"GRPO needs num_generations (K) >= 2 completions per prompt to compare, "
                             f"got {self.num_generations}")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        _check_choice("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
        _check_choice("scale_rewards", self.scale_rewards, REWARD_SCALINGS)
        _check_choice("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        _check_clip("epsilon", self.epsilon)
        if self.epsilon_high is not None:
            _check_clip("epsilon_high", self.epsilon_high)
        check_int("num_iterations", self.num_iterations, minimum=1, maximum=MAX_EPOCHS)


@dataclass(kw_only=True)
class PPOConfig(OnlineRLConfig):
    """PPO from a reward (Ziegler et al. 2019; Ouyang et al. 2022): LoRA actor, a critic on its own
    LoRA adapter over the same base weights, GAE, and a per-token KL penalty to the reference."""

    method: ClassVar[str] = "ppo"

    gamma: float = _f(1.0, "Discount factor of GAE.")
    lam: float = _f(0.95, "GAE lambda: 1 = Monte Carlo returns, 0 = one-step TD.")
    cliprange: float = _f(0.2, "Clip range of the policy's importance ratio.")
    cliprange_value: float = _f(0.2, "Clip range of the critic's value updates.")
    vf_coef: float = _f(0.1, "Weight of the value loss.")
    kl_coef: float = _f(0.05, "Weight of the per-token KL penalty in the reward (the starting value when "
                              "target_kl is set).")
    kl_estimator: str = _f("k1", f"Per-token KL estimator in the reward: one of {', '.join(KL_ESTIMATORS)}.")
    target_kl: float | None = _f(None, "Adaptive KL controller (Ziegler et al. 2019): steer the KL towards this "
                                       "value; empty: a fixed kl_coef.")
    kl_horizon: int = _f(10_000, "Adaptive KL controller horizon, in rollouts.")
    ppo_epochs: int = _f(4, "Passes over each rollout (PPO epochs).")
    num_mini_batches: int = _f(1, "Mini-batches per PPO epoch: each epoch shuffles the rollout's prompts and "
                                  "takes one optimizer step per share (steps per rollout = ppo_epochs x this).",
                               label="Mini-batches per PPO epoch")
    whiten_advantages: bool = _f(True, "Normalise advantages to mean 0, std 1 over each rollout.")
    critic_from_reward_model: bool = _f(False, "Start the critic as the reward model: its LoRA and its score head "
                                               "as the value head (same base model only).")

    def validate(self) -> None:
        super().validate()
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        _check_clip("cliprange", self.cliprange)
        _check_clip("cliprange_value", self.cliprange_value)
        for name in ("vf_coef", "kl_coef"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        _check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if self.target_kl is not None and not (isinstance(self.target_kl, (int, float)) and self.target_kl > 0):
            raise ValueError(f"target_kl must be > 0 or empty, got {self.target_kl!r}")
        check_int("kl_horizon", self.kl_horizon, minimum=1, maximum=MAX_STEPS)
        check_int("ppo_epochs", self.ppo_epochs, minimum=1, maximum=MAX_EPOCHS)
        check_int("num_mini_batches", self.num_mini_batches, minimum=1)
        if self.num_mini_batches > self.batch_size:
            raise ValueError(f"num_mini_batches ({self.num_mini_batches}) is more than the rollout's {self.batch_size} "
                             f"prompts (batch_size): each mini-batch needs at least one prompt")
        if self.critic_from_reward_model and not self.reward_model:
            raise ValueError("critic_from_reward_model needs reward_model")


METHODS: dict[str, type[CommonConfig]] = {
    c.method: c for c in (DPOConfig, PLDPOConfig, RewardConfig, GRPOConfig, PPOConfig)
}


def config_from_dict(values: dict[str, Any]) -> CommonConfig:
    """The right config class for a saved dict (by its ``method`` key)."""
    method = values.get("method")
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; expected one of {', '.join(METHODS)}")
    return METHODS[method].from_dict(values)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _lines(value: Any) -> list[str]:
    """A list of strings as given, or a text's non-empty lines."""
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return list(value or ())


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_clip(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def _check_beta(beta: Any) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
