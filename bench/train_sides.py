"""One side of the training benchmark, run in its own process by :mod:`bench.train`.

Each ``run_*`` function trains one way (prefstudio's ``train_dpo`` / ``train_reward_model``, or
TRL's ``DPOTrainer`` / ``RewardTrainer``) on the JSONL file the parent wrote, and returns a JSON-able
dict: the wall-clock time of the whole run (model load, data preparation, reference pass,
training, saving), the parts of it that can be told apart, the loss at every optimizer step, the
process's CPU time and its peak resident memory. Heavy imports happen inside the functions, so a
side's peak RSS only counts what that side loads (the timer starts after the imports).

Both sides see the same rows in the same order: prefstudio shuffles each epoch with
:func:`alignment.training.loop.epoch_batches`; the TRL side is given the rows already in that
order and reads them sequentially (``train_sampling_strategy="sequential"``).
"""
from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIDES = ("ours-dpo", "trl-dpo", "ours-rm", "trl-rm")


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (VmHWM; ru_maxrss where /proc is missing)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def rss_bytes() -> int | None:
    rss = _status_kib("VmRSS")
    return None if rss is None else rss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def setup_process(threads: int, seed: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def shuffled_like_ours(rows: list[dict], batch_size: int, seed: int) -> list[dict]:
    """``rows`` in the order prefstudio's loop visits them in its first epoch."""
    from alignment.training.loop import epoch_batches

    order = [i for batch in epoch_batches(len(rows), batch_size, seed, 0) for i in batch]
    return [rows[i] for i in order]


def finish(result: dict[str, Any], started: float, cpu_started: float) -> dict[str, Any]:
    """Add wall, CPU and memory figures measured at the end of the run."""
    result["wall_s"] = time.perf_counter() - started
    result["cpu_s"] = cpu_seconds() - cpu_started
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["loadavg_end"] = os.getloadavg()
    try:
        result["allocator"] = "jemalloc" if "libjemalloc" in Path("/proc/self/maps").read_text() else "glibc"
    except OSError:
        result["allocator"] = "unknown"
    return result


def _timed(fn: Callable, sink: dict[str, float], key: str) -> Callable:
    """``fn`` wrapped so the seconds each call takes are added to ``sink[key]``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - t
    return wrapper


# --------------------------------------------------------------------------------------------
# prefstudio
# --------------------------------------------------------------------------------------------

def _run_ours(spec: dict[str, Any], method: str) -> dict[str, Any]:
    setup_process(spec["threads"], spec["seed"])
    from alignment.training import DPOConfig, RewardConfig
    from alignment.training.callbacks import Callback

    timings: dict[str, float] = {}
    if method == "dpo":
        import alignment.training.dpo as entry
        import alignment.training.skeleton as skeleton

        # The reference pass is one call inside the trainer skeleton; wrapping it here times it exactly.
        skeleton.cached_reference_logps = _timed(skeleton.cached_reference_logps, timings, "reference_s")
        run, config_cls, lr = entry.train_dpo, DPOConfig, spec["dpo_lr"]
        extra = {"beta": spec["beta"]}
    else:
        import alignment.training.reward as entry

        run, config_cls, lr = entry.train_reward_model, RewardConfig, spec["rm_lr"]
        extra = {}

    class Recorder(Callback):
        def __init__(self) -> None:
            self.events: list[tuple[str, float, dict]] = []

        def on_event(self, event: str, state: dict) -> None:
            self.events.append((event, time.perf_counter(), dict(state)))

    recorder = Recorder()
    if spec.get("ours_gradient_checkpointing") is not None:
        extra["gradient_checkpointing"] = spec["ours_gradient_checkpointing"]  # only where the config has it
    config = config_cls(
        data=spec["data"], out=str(Path(spec["workdir"]) / f"ours-{method}"), model="default",
        max_steps=spec["steps"], lr=lr, batch_size=spec["batch_size"], max_length=spec["max_length"],
        lora_r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=spec["lora_dropout"],
        eval_fraction=0.0, seed=spec["seed"], device="cpu", logging_steps=1, **extra,
    )
    rss_before = rss_bytes()
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    trained = run(config, [recorder])
    ended = time.perf_counter()

    begin = next(t for e, t, _ in recorder.events if e == "train_begin")
    begin_state = next(s for e, _, s in recorder.events if e == "train_begin")
    steps = [(t, s) for e, t, s in recorder.events if e == "step"]
    last_step = steps[-1][0] if steps else begin
    result = {
        "n_train": begin_state.get("n_train"),
        "steps": trained.steps,
        "losses": [s.get("loss") for _, s in steps],
        "step_s": [round(b - a, 3) for a, b in zip([begin] + [t for t, _ in steps[:-1]], [t for t, _ in steps])],
        "setup_s": begin - started - timings.get("reference_s", 0.0),  # load, data, LoRA wrap
        "reference_s": timings.get("reference_s"),
        "train_s": last_step - begin,  # the optimisation loop
        "finish_s": ended - last_step,  # final save
        "rss_after_imports_bytes": rss_before,
        "gradient_checkpointing": bool(getattr(config, "gradient_checkpointing", False)),
        "micro_batch_size": config.resolved_micro_batch_size(),
        "final_metrics": trained.metrics,
    }
    return finish(result, started, cpu_started)


def run_ours_dpo(spec: dict[str, Any]) -> dict[str, Any]:
    return _run_ours(spec, "dpo")


def run_ours_rm(spec: dict[str, Any]) -> dict[str, Any]:
    return _run_ours(spec, "rm")


# --------------------------------------------------------------------------------------------
# TRL
# --------------------------------------------------------------------------------------------

def _trl_common_args(spec: dict[str, Any], name: str, lr: float) -> dict[str, Any]:
    """TrainingArguments shared by both TRL trainers, matching prefstudio's loop.

    Constant learning rate without warm-up (prefstudio's default; TrainingArguments defaults to a
    linear decay), fp32 on the CPU (TRL would default to bf16), LoRA dropout kept (TRL's
    ``disable_dropout=True`` would set the LoRA dropout to 0), sequential sampling over rows
    already shuffled like prefstudio's first epoch, one log per step, no saving, no reporting.
    Gradient checkpointing stays TRL's default (on) unless the spec says otherwise.
    """
    args = dict(
        output_dir=str(Path(spec["workdir"]) / name),
        per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        max_steps=spec["steps"], learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, max_length=spec["max_length"], seed=spec["seed"],
        bf16=False, fp16=False, use_cpu=True, disable_dropout=False,
        train_sampling_strategy="sequential", logging_steps=1, save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )
    if spec.get("trl_gradient_checkpointing") is not None:
        args["gradient_checkpointing"] = spec["trl_gradient_checkpointing"]
    return args


def _lora(spec: dict[str, Any], reward: bool) -> Any:
    """The same LoRA settings prefstudio's ``alignment.training.lora.lora_config`` builds."""
    from peft import LoraConfig, TaskType

    return LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=spec["lora_dropout"],
                      target_modules="all-linear", bias="none",
                      task_type=TaskType.SEQ_CLS if reward else TaskType.CAUSAL_LM,
                      modules_to_save=["score"] if reward else None)


def _trl_recorder() -> Any:
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.begin: float | None = None
            self.step_ends: list[float] = []
            self.losses: dict[int, float] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses[state.global_step] = float(logs["loss"])

    return Recorder()


def _no_grad_forward_timer(module: Any, sink: dict[str, float], key: str) -> None:
    """Add the time of every forward of ``module`` run without gradients to ``sink[key]``.

    In TRL's DPO step with a PEFT model the reference log-probs come from the same module called
    under ``torch.no_grad()`` with the adapter disabled; the policy forward runs with gradients.
    """
    import torch

    starts: list[float] = []

    def pre(mod, args):
        starts.append(time.perf_counter())

    def post(mod, args, output):
        start = starts.pop()
        if not torch.is_grad_enabled():
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - start

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def _trl_result(recorder: Any, trainer: Any, started: float, built: float, ended: float,
                timings: dict[str, float], rss_before: int | None) -> dict[str, Any]:
    steps = sorted(recorder.losses)
    begin = recorder.begin or built
    ends = recorder.step_ends
    precompute = timings.get("precompute_s")
    return {
        "n_train": len(trainer.train_dataset),
        "steps": trainer.state.global_step,
        "losses": [recorder.losses[s] for s in steps],
        "step_s": [round(b - a, 3) for a, b in zip([begin] + ends[:-1], ends)],
        # building the trainer: model load, LoRA wrap, tokenising (and the precomputed reference pass)
        "setup_s": built - started - (precompute or 0.0),
        "reference_s": precompute if precompute is not None else timings.get("ref_forward_s"),
        "reference_inside_steps": precompute is None,
        "train_s": (ends[-1] if ends else ended) - begin,
        "finish_s": ended - (ends[-1] if ends else ended),
        "rss_after_imports_bytes": rss_before,
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "disable_dropout": bool(trainer.args.disable_dropout),
        "optim": str(trainer.args.optim),
    }


def run_trl_dpo(spec: dict[str, Any]) -> dict[str, Any]:
    setup_process(spec["threads"], spec["seed"])
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignment.training.lora import base_model_location

    location = base_model_location("default")  # the converted HF folder prefstudio trains from
    rows = shuffled_like_ours(read_rows(spec["data"]), spec["batch_size"], spec["seed"])
    timings: dict[str, float] = {}
    if spec.get("precompute_ref"):
        DPOTrainer._precompute_ref_logps = _timed(DPOTrainer._precompute_ref_logps, timings, "precompute_s")
    recorder = _trl_recorder()

    rss_before = rss_bytes()
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    args = DPOConfig(**_trl_common_args(spec, "trl-dpo", spec["dpo_lr"]), beta=spec["beta"],
                     loss_type=["sigmoid"], precompute_ref_log_probs=bool(spec.get("precompute_ref")))
    trainer = DPOTrainer(model=location, args=args, train_dataset=Dataset.from_list(rows),
                         peft_config=_lora(spec, reward=False), callbacks=[recorder])
    if not spec.get("precompute_ref"):
        _no_grad_forward_timer(trainer.model, timings, "ref_forward_s")
    built = time.perf_counter()
    trainer.train()
    ended = time.perf_counter()
    result = _trl_result(recorder, trainer, started, built, ended, timings, rss_before)
    result["precompute_ref_log_probs"] = bool(spec.get("precompute_ref"))
    return finish(result, started, cpu_started)


def run_trl_rm(spec: dict[str, Any]) -> dict[str, Any]:
    setup_process(spec["threads"], spec["seed"])
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from alignment.training.lora import base_model_location

    location = base_model_location("default")
    rows = shuffled_like_ours(read_rows(spec["data"]), spec["batch_size"], spec["seed"])
    timings: dict[str, float] = {}
    recorder = _trl_recorder()

    rss_before = rss_bytes()
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    args = RewardConfig(**_trl_common_args(spec, "trl-rm", spec["rm_lr"]))
    trainer = RewardTrainer(model=location, args=args, train_dataset=Dataset.from_list(rows),
                            peft_config=_lora(spec, reward=True), callbacks=[recorder])
    built = time.perf_counter()
    trainer.train()
    ended = time.perf_counter()
    return finish(_trl_result(recorder, trainer, started, built, ended, timings, rss_before), started, cpu_started)


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ours-dpo": run_ours_dpo,
    "trl-dpo": run_trl_dpo,
    "ours-rm": run_ours_rm,
    "trl-rm": run_trl_rm,
}


def run_side(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    if side not in RUNNERS:
        raise ValueError(f"unknown side {side!r}; expected one of {', '.join(RUNNERS)}")
    result = RUNNERS[side](spec)
    result["side"] = side
    result["loadavg_start"] = spec.get("_loadavg_start")
    return result
