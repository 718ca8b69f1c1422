"""Training with several processes (``accelerate launch``): starting them, and what differs inside them.

This module owns

* the launch command (:func:`launch_command`): ``python -m accelerate.commands.launch
  --num_processes N ...`` around a script or a module, on the CPU (gloo) or on the GPUs (NCCL),
  and how a process tells it was started that way (:func:`launched`, :func:`process_rank`; they
  read the launcher's environment, so they work before torch is imported);
* splitting per-example work over the processes and putting the results back in order
  (:func:`rows_over_processes`: the reference pass and the held-out evaluation each do a share);
* averaging the logged metrics over the processes (:func:`mean_over_processes`), so a step's loss
  is the loss of the whole global batch, as one process would have logged it.

The rest of multi-process training lives where it belongs: the loop hands each process every
``num_processes``-th batch and lets DDP average the gradients (:mod:`alignment.training.loop`), and
only the main process writes the run folder, reports progress and saves
(:mod:`alignment.training.skeleton`). ``batch_size`` is per process: N processes with batch B take
the same optimizer step as one process with batch N x B.
"""
from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: Set by ``accelerate launch`` (torchrun) in every process it starts.
RANK_VARIABLE, WORLD_VARIABLE = "RANK", "WORLD_SIZE"


def launched() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` / torchrun."""
    return process_count() > 1


def process_count() -> int:
    """How many processes the launcher started (1 without one)."""
    return int(os.environ.get(WORLD_VARIABLE, "1"))


def process_rank() -> int:
    """This process's rank (0 when it runs alone): the main process, rank 0, writes the run folder."""
    return int(os.environ.get(RANK_VARIABLE, "0"))


def free_port() -> int:
    """A loopback port free now, for the processes' rendezvous (two jobs at once must not share one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(processes: int, target: Sequence[str], module: bool = False) -> list[str]:
    """The command that runs ``target`` (a script and its arguments, or with ``module`` a module
    name and its arguments) in ``processes`` processes on this machine.

    ``--multi_gpu`` names accelerate's torchrun launcher, which starts the processes; each then
    trains where its config says: on the CPU (``Accelerator(cpu=True)``: gloo) or one GPU each
    (NCCL). (accelerate's ``--cpu`` flag would start a single process: several CPU processes go
    through mpirun there.)"""
    if processes < 2:
        raise ValueError(f"a launch takes 2 or more processes, got {processes}")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "--multi_gpu"]
    if module:
        command.append("--module")
    return [*command, *target]


def rows_over_processes(accelerator: Any | None, items: Sequence[Any],
                        compute: Callable[[Sequence[Any], Callable[[int, int], None] | None], list[Any]],
                        progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """``compute(items, progress)`` (one result per item) with the items shared out over the
    processes, every ``num_processes``-th to each; every process gets all the results, in order.

    ``progress(done, total)`` hears of the main process's share, scaled to the whole (the others
    move at the same pace). ``accelerator`` None: one process does it all.
    """
    world = 1 if accelerator is None else accelerator.num_processes
    if world == 1:
        return compute(items, progress)
    rank = accelerator.process_index
    share = items[rank::world]
    scaled = None
    if progress is not None and accelerator.is_main_process:
        scaled = lambda done, total: progress(min(done * world, len(items)), len(items))  # noqa: E731
    rows = compute(share, scaled)
    from accelerate.utils import gather_object

    shares = gather_object([rows])  # [rows of rank 0, rows of rank 1, ...]
    return [shares[i % world][i // world] for i in range(len(items))]


def mean_over_processes(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes (every process must call this at the same step).

    The methods' metrics are means over a batch's examples and every process has a batch of the
    same size (but for a short last batch), so this is the metric of the global batch.
    """
    if accelerator.num_processes == 1 or not metrics:
        return metrics
    import torch

    names = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64, device=accelerator.device)
    return dict(zip(names, accelerator.reduce(values, reduction="mean").tolist()))


def check_backend(accelerator: Any, config: Any) -> None:
    """Refuse, before the first step, what the loop cannot do under the launcher's backend, and give
    DeepSpeed the batch size it would otherwise read from a DataLoader (never run here: no GPU).

    ZeRO-3 and FSDP shard the weights themselves over the processes; the reference pass, the
    held-out evaluation and the final save read whole weights outside the prepared model, so they
    are refused until those steps gather them. ZeRO-2 steps its optimizer in each backward: one
    backward per step, so no accumulation and no smaller forward passes.
    """
    backend = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if backend == "FSDP" or (plugin is not None and plugin.zero_stage == 3):
        raise NotImplementedError(f"training under {'FSDP' if backend == 'FSDP' else 'DeepSpeed ZeRO-3'} is not "
                                  f"supported yet (the weights are sharded); use DDP or ZeRO-2")
    if plugin is not None:
        if config.grad_accum != 1 or config.resolved_micro_batch_size() != config.batch_size:
            raise ValueError("under DeepSpeed set grad_accum=1 and leave micro_batch_size empty (one backward per "
                             "step); raise batch_size or the number of processes instead")
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
        plugin.deepspeed_config["gradient_accumulation_steps"] = 1
