"""The optimisation loop shared by DPO, PL-DPO and the reward model, and the run folder's layout.

This module owns: the optimizer (AdamW over the trainable LoRA/head parameters) and its schedule,
the per-epoch seeded shuffling, gradient accumulation, step-based stopping (``max_steps``),
progress events, resumable checkpoints, and writing the final adapter + metrics.

A method plugs in a :class:`Task`: how to turn example indices into a batch and a batch into a
loss. Everything else is here, in :func:`fit`, which reads top to bottom.

``accelerate``: the model (wrapped in a :class:`ForwardModule` so one call is one forward, as
DistributedDataParallel requires), the optimizer and each epoch's DataLoader go through
``Accelerator.prepare`` and the backward through ``Accelerator.backward``. On one CPU or GPU that
is a no-op wrapper; under ``accelerate launch`` (:mod:`alignment.training.distributed`) each
process gets every ``num_processes``-th batch of every epoch, DDP averages the gradients once per
optimizer step, the logged metrics are averaged over the processes, and only the main process
writes checkpoints.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from accelerate.utils import send_to_device

from alignment.packing import PACKED_INPUTS
from alignment.run_folder import (
    METRICS_FILE, OPTIMIZER_FILE, PROGRESS_FILE, RNG_FILE, SCHEDULER_FILE, STATE_FILE, checkpoint_dir,
)
from alignment.training.callbacks import Callback, emit, eta_seconds
from alignment.training.distributed import check_backend, mean_over_processes
from alignment.training.memory import lean_allocator

#: The batch keys a model forward takes (shared-prefix batches; the rest, e.g. "index", is bookkeeping).
MODEL_INPUTS = PACKED_INPUTS


@dataclass
class TrainResult:
    """What a training run produced: its folder, optimizer steps done, last train and held-out metrics."""

    out_dir: Path
    steps: int
    metrics: dict[str, float]
    eval_metrics: dict[str, float]


@dataclass
class Task:
    """A method's part of the loop.

    ``collate(indices)`` builds a batch of the training examples at ``indices`` (tensors; keep an
    ``"index"`` tensor to look up per-example caches). ``rollout(model, indices, forward_size)``,
    when given, builds the whole batch instead, from the model being trained (methods that sample
    their own data, all of a step's prompts in one go: the model is in eval mode and gradients are
    off while it runs), already cut into forward chunks of about ``forward_size`` examples, each
    with its share of the batch. ``loss(forward, batch)`` returns
    the mean loss and float metrics for logging. ``checkpoint_files`` names run-folder files
    copied into each checkpoint (e.g. the reference cache); ``save_extra(folder)`` writes the
    method's own state beside the adapter in each checkpoint (e.g. PPO's value head).
    """

    name: str
    n_train: int
    collate: Callable[[list[int]], dict[str, Tensor]]
    loss: Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, dict[str, float]]]
    checkpoint_files: Sequence[str] = ()
    begin_info: dict[str, Any] = field(default_factory=dict)
    rollout: Callable[[nn.Module, list[int], int], list[tuple[dict[str, Tensor], float]]] | None = None
    save_extra: Callable[[Path], None] | None = None

    def chunks(self, model: nn.Module, indices: list[int], forward_size: int
               ) -> list[tuple[Callable[[], dict[str, Tensor]], float]]:
        """The batch at ``indices`` as forward chunks, each a thunk that builds it and its share of
        the batch: fixed examples collated ``forward_size`` at a time when the chunk's turn comes (one
        chunk's tensors alive at a time), or a batch rolled out by ``model`` as a whole."""
        if self.rollout is None:
            starts = range(0, len(indices), forward_size)
            return [(functools.partial(self.collate, indices[start:start + forward_size]),
                     len(indices[start:start + forward_size]) / len(indices)) for start in starts]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                parts = self.rollout(model, indices, forward_size)
        finally:
            model.train(was_training)
        return [(functools.partial(dict, part), share) for part, share in parts]


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The part of a batch a model forward takes (:data:`MODEL_INPUTS`)."""
    return {k: batch[k] for k in MODEL_INPUTS}


class ForwardModule(nn.Module):
    """``fn(model, **batch)`` as a module, so the whole forward goes through ``__call__``.

    Distributed wrappers (DDP) only synchronise gradients for computation run through their own
    ``forward``; helpers like ``completion_logps`` call submodules directly, so they are wrapped here.
    """

    def __init__(self, model: nn.Module, fn: Callable[..., Tensor]):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, **batch: Tensor) -> Tensor:
        return self.fn(self.model, **batch)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------

def make_accelerator(device: str) -> Any:
    from accelerate import Accelerator

    return Accelerator(cpu=not device.startswith("cuda"))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's shuffled index batches: a pure function of (seed, epoch), so a resume replays it."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "linear":
            span = max(1, total_steps - warmup_steps)
            return max(0.0, 1 - (step - warmup_steps) / span)
        return 1.0

    return factor


def steps_per_epoch(micro_batches: int, grad_accum: int) -> int:
    return math.ceil(micro_batches / grad_accum)


def total_steps(config: Any, per_epoch: int) -> int:
    return config.max_steps if config.max_steps is not None else config.epochs * per_epoch


def mean_metrics(history: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for h in history for k in h}
    return {k: sum(h[k] for h in history if k in h) / sum(1 for h in history if k in h) for k in sorted(keys)}


def save_checkpoint(run_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any,
                    extra_files: Sequence[str], state: dict[str, Any],
                    save_extra: Callable[[Path], None] | None = None) -> Path:
    """Adapter + optimizer + scheduler + loop position (+ named run files, + the method's own
    state) in ``checkpoint-<step>``."""
    path = checkpoint_dir(run_dir, step)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    if save_extra is not None:
        save_extra(path)
    torch.save(optimizer.state_dict(), path / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), path / SCHEDULER_FILE)
    torch.save(torch.get_rng_state(), path / RNG_FILE)
    for name in extra_files:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, path / name)
    (path / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2) + "\n", encoding="utf-8")
    return path


def load_checkpoint_state(path: Path) -> dict[str, Any]:
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise ValueError(f"{path} is not a checkpoint folder (no {STATE_FILE})")
    return json.loads(state_file.read_text(encoding="utf-8"))


def restore_adapter(model: Any, path: Path) -> None:
    """Load a checkpoint's adapter (LoRA weights and any saved head) into the wrapped model."""
    from peft import load_peft_weights, set_peft_model_state_dict

    weights = load_peft_weights(str(path), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"checkpoint {path} does not fit this model (unexpected keys: {unexpected[:3]}...)")


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    steps: int
    total_steps: int
    metrics: dict[str, float]
    accelerator: Any
    started: float  # time.monotonic() at the start of fit
    start_step: int = 0

    def state(self, task_name: str, **extra: Any) -> dict[str, Any]:
        """An event state after training (for the eval / save / train_end events)."""
        elapsed = time.monotonic() - self.started
        return {"method": task_name, "step": self.steps, "total_steps": self.total_steps,
                "elapsed_s": round(elapsed, 3), "eta_s": 0.0, **extra}


def accumulate_batch(task: Task, forward: nn.Module, accelerator: Any, indices: list[int], forward_size: int,
                     scale: float, step: int, sync: bool = True) -> dict[str, float]:
    """Forward and backward one batch in chunks of ``forward_size`` examples; its mean loss and metrics.

    The methods' losses are means over examples, so the batch's gradient is the sum of each
    chunk's mean-loss gradient weighted by its share of the batch: the same gradient as one
    forward over the whole batch, with only one chunk's activations alive at a time.

    With several processes, DDP averages the gradients in each backward it synchronises: only the
    last chunk's, when ``sync`` (the batch ends an optimizer step), so every process synchronises
    exactly once per step even when a short last batch gives it fewer chunks than the others.
    """
    totals: dict[str, float] = {}
    chunks = task.chunks(accelerator.unwrap_model(forward).model, indices, forward_size)
    for position, (build, share) in enumerate(chunks):
        synchronise = sync and position == len(chunks) - 1
        with contextlib.nullcontext() if synchronise else accelerator.no_sync(forward):
            batch = send_to_device(build(), accelerator.device)
            loss, metrics = task.loss(forward, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{task.name}: loss is {loss.item()} at step {step + 1}")
            accelerator.backward(loss * (share * scale))
        for key, value in {"loss": loss.item(), **metrics}.items():
            totals[key] = totals.get(key, 0.0) + value * share
    return totals


def fit(config: Any, model: nn.Module, forward_fn: Callable[..., Tensor], task: Task,
        callbacks: Sequence[Callback], run_dir: Path, accelerator: Any = None) -> FitResult:
    """Train ``model`` (a PEFT model) on ``task`` with ``forward_fn(model, **batch)``.

    Steps: (a) accelerator, optimizer and schedule; (b) resume position; (c) for each epoch, the
    seeded batches, skipping those a resumed run already did; (d) forward, loss / accumulation
    window, backward; (e) at the end of a window: clip, optimizer and schedule step, report,
    checkpoint; stop at ``total_steps``.
    """
    started = time.monotonic()

    # (a) Accelerator, optimizer over what LoRA left trainable, learning-rate schedule.
    if accelerator is None:
        accelerator = make_accelerator(config.resolved_device())
        check_backend(accelerator, config)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters (is the LoRA wrapping missing?)")
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    # Under `accelerate launch` each process gets every num_processes-th batch (padded to equal counts).
    micro_per_epoch = math.ceil(math.ceil(task.n_train / config.batch_size) / accelerator.num_processes)
    per_epoch = steps_per_epoch(micro_per_epoch, config.grad_accum)
    total = total_steps(config, per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.lr_schedule, config.warmup_steps, total))

    # (b) Resume: adapter weights, optimizer and schedule state, and the step to continue from.
    step = 0
    if config.resume_from:
        resume = Path(config.resume_from)
        state = load_checkpoint_state(resume)
        step = int(state["step"])
        layout = {"n_train": task.n_train, "batch_size": config.batch_size, "grad_accum": config.grad_accum,
                  "seed": config.seed}
        changed = {k: (state[k], v) for k, v in layout.items() if k in state and state[k] != v}
        if changed:
            raise ValueError(f"cannot resume from {resume}: the data order would differ "
                             f"({', '.join(f'{k} was {a}, now {b}' for k, (a, b) in changed.items())})")
        restore_adapter(model, resume)
        optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
        scheduler.load_state_dict(torch.load(resume / SCHEDULER_FILE, weights_only=True))
        if (resume / RNG_FILE).is_file():  # dropout masks continue as they would have
            torch.set_rng_state(torch.load(resume / RNG_FILE, weights_only=True))
    start_step = step
    forward = ForwardModule(model, forward_fn)
    forward, optimizer = accelerator.prepare(forward, optimizer)
    forward_size = config.resolved_micro_batch_size()
    model.train()

    def report(event: str, **extra: Any) -> None:
        elapsed = time.monotonic() - started
        emit(callbacks, event, {"method": task.name, "step": step, "total_steps": total,
                                "elapsed_s": round(elapsed, 3),
                                "eta_s": eta_seconds(step, total, elapsed, start_step), **extra})

    report("train_begin", loss=None, metrics={}, epochs=math.ceil(total / per_epoch),
           steps_per_epoch=per_epoch, n_train=task.n_train, resumed_from=config.resume_from, **task.begin_info)

    last_metrics: dict[str, float] = {}
    window: list[dict[str, float]] = []  # metrics of the micro-batches since the last report
    # Saving memory (checkpointing) on the CPU: also hand freed activations back to the system.
    lean = bool(getattr(config, "gradient_checkpointing", False)) and accelerator.device.type == "cpu"
    with lean_allocator(enabled=lean):
        epoch = step // per_epoch
        while step < total:
            # (c) This epoch's batches; a resumed run skips the windows it already did.
            batches = epoch_batches(task.n_train, config.batch_size, config.seed, epoch)
            # The loader hands out index lists; they are tokenised per forward chunk below.
            loader = torch.utils.data.DataLoader(range(task.n_train), batch_sampler=batches, collate_fn=list)
            loader = accelerator.prepare_data_loader(loader)
            n_micro = len(loader)
            skip = (step - epoch * per_epoch) * config.grad_accum
            if skip:
                loader = accelerator.skip_first_batches(loader, skip)

            for micro, indices in enumerate(loader, start=skip):
                # (d) Forward and backward, scaled by the size of this accumulation window.
                window_start = micro - micro % config.grad_accum
                window_size = min(config.grad_accum, n_micro - window_start)
                ends_step = micro + 1 == window_start + window_size
                window.append(accumulate_batch(task, forward, accelerator, [int(i) for i in indices],
                                               forward_size, scale=1 / window_size, step=step, sync=ends_step))
                if not ends_step:
                    continue

                # (e) Optimizer step, report, checkpoint.
                if config.max_grad_norm is not None:
                    norm = accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                    if norm is not None:  # the norm before clipping (DeepSpeed clips inside and says None)
                        window[-1]["grad_norm"] = float(norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % config.logging_steps == 0 or step == total:
                    last_metrics = mean_over_processes(accelerator, mean_metrics(window))
                    window = []
                    report("step", loss=last_metrics.get("loss"), metrics=last_metrics, epoch=epoch,
                           lr=scheduler.get_last_lr()[0])
                if config.save_steps and step % config.save_steps == 0 and step < total:
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        path = save_checkpoint(
                            run_dir, step, accelerator.unwrap_model(forward).model, optimizer, scheduler,
                            task.checkpoint_files,
                            {"epoch": epoch, "total_steps": total, "method": task.name, "n_train": task.n_train,
                             "batch_size": config.batch_size, "grad_accum": config.grad_accum, "seed": config.seed},
                            task.save_extra)
                        report("save", loss=last_metrics.get("loss"), metrics=last_metrics, path=str(path),
                               kind="checkpoint")
                if step >= total:
                    break
            epoch += 1

    if window:  # steps since the last report
        last_metrics = mean_over_processes(accelerator, mean_metrics(window))
    return FitResult(step, total, last_metrics, accelerator, started, start_step)


@torch.no_grad()
def rows_per_item(model: nn.Module, forward_fn: Callable[..., Tensor], items: Sequence[Any],
                  make_batch: Callable[[Sequence[Any]], dict], per_item: Callable[[Tensor, dict], list[Tensor]],
                  batch_size: int, device: Any,
                  progress: Callable[[int, int], None] | None = None) -> list[Tensor]:
    """``forward_fn`` over ``items`` in eval mode, without gradients: one 1-D tensor per item
    (``progress(done, total)`` hears of each batch)."""
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        for start in range(0, len(items), batch_size):
            batch = make_batch(items[start:start + batch_size])
            rows = forward_fn(model, **send_to_device(model_inputs(batch), device))
            out.extend(t.float().cpu() for t in per_item(rows, batch))
            if progress is not None:
                progress(len(out), len(items))
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# Finishing a run
# --------------------------------------------------------------------------------------------

def prepare_run_dir(config: Any, is_main_process: bool = True) -> Path:
    """Create the run folder; a fresh (not resumed) run starts a new progress file (the main process's)."""
    run_dir = Path(config.out).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not config.resume_from and is_main_process:
        (run_dir / PROGRESS_FILE).unlink(missing_ok=True)
    return run_dir


def save_final(run_dir: Path, model: Any, tokenizer: Any, config: Any, steps: int,
               metrics: dict[str, float], eval_metrics: dict[str, float], extra: dict[str, Any]) -> None:
    """The standard PEFT adapter folder (``PeftModel.from_pretrained(base, run_dir)`` loads it),
    the tokenizer, the resolved config and ``metrics.json``."""
    model.save_pretrained(run_dir)
    tokenizer.save_pretrained(run_dir)
    config.save(run_dir)
    summary = {"method": config.method, "steps": steps, "train": metrics, "eval": eval_metrics, **extra}
    (run_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
