"""Reference-model log-probabilities: computed once per run, cached on disk, reused every epoch.

DPO and PL-DPO compare the policy with a frozen reference. With LoRA the reference is the same
network with its adapter switched off (``model.disable_adapter()``), so no second copy of the
weights is held; and since the reference never changes, its log-probabilities for every training
and held-out example are computed once, before the first step, and saved beside the run
(``reference_logps.pt``, also copied into each checkpoint) so a resumed run skips the pass.

A cache is only reused when its fingerprint (data file hash, base model, max_length, split, seed)
matches the run; otherwise it is recomputed.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignment.logprobs import packed_completion_logps
from alignment.run_folder import REFERENCE_FILE
from alignment.training.distributed import rows_over_processes
from alignment.training.loop import rows_per_item

log = logging.getLogger(__name__)

def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(config: Any, base_location: str, n_train: int, n_eval: int) -> dict[str, Any]:
    """What the cached numbers depend on; a cache with another fingerprint is ignored."""
    return {
        "method": config.method,
        "data_sha256": file_sha256(config.data),
        "base_model": base_location,
        "max_length": config.max_length,
        "layout": "shared-prefix",  # how prompts are cut when too long (alignment.packing)
        "split": "prompt-hash",  # how prompts are assigned to train / held-out (data.split)
        "eval_fraction": config.eval_fraction,
        "seed": config.seed,
        "n_train": n_train,
        "n_eval": n_eval,
    }


def compute_reference_logps(
    model: Any,
    items: Sequence[Any],
    make_batch: Callable[[Sequence[Any]], dict],
    per_item: Callable[[Tensor, dict], list[Tensor]],
    batch_size: int,
    device: str | torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> list[Tensor]:
    """One reference pass over ``items``: per item, a 1-D tensor of completion log-probs.

    ``make_batch(chunk)`` tokenises a chunk of items; ``per_item(row_logps, batch)`` splits the
    batch's per-row log-probs back into one tensor per item; ``progress(done, total)`` hears of each
    batch (on a large set the pass takes minutes, all before the first training step). Runs under
    ``torch.no_grad()`` with the adapter disabled and dropout off; the model's training mode is
    restored afterwards.
    """
    with model.disable_adapter():
        return rows_per_item(model, packed_completion_logps, items, make_batch, per_item, batch_size, device,
                             progress)


def pad_rows(rows: list[Tensor]) -> Tensor:
    """Stack 1-D tensors of possibly different lengths into ``[N, max_len]`` (zeros after the end)."""
    if not rows:
        return torch.zeros(0, 0)
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


def load_cache(candidates: Sequence[Path], expected: dict[str, Any]) -> dict[str, Tensor] | None:
    """The first cache file among ``candidates`` whose fingerprint matches, else None."""
    for path in candidates:
        if not path.is_file():
            continue
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a corrupt cache is recomputed, not fatal
            log.warning("ignoring unreadable reference cache %s: %s", path, exc)
            continue
        if cached.get("fingerprint") == expected:
            return {"train": cached["train"], "eval": cached["eval"]}
        log.info("reference cache %s is for other data or settings; recomputing", path)
    return None


def save_cache(path: Path, expected: dict[str, Any], train: Tensor, evaluation: Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"fingerprint": expected, "train": train, "eval": evaluation}, tmp)
    tmp.replace(path)


def cached_reference_logps(
    model: Any,
    train_items: Sequence[Any],
    eval_items: Sequence[Any],
    make_batch: Callable[[Sequence[Any]], dict],
    per_item: Callable[[Tensor, dict], list[Tensor]],
    *,
    config: Any,
    base_location: str,
    run_dir: Path,
    device: str | torch.device,
    accelerator: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Tensor], str]:
    """``({"train": [N, K], "eval": [M, K]}, "cached" | "computed")`` for the run.

    Looks in the checkpoint being resumed, then in the run folder; computes and saves otherwise.
    With several processes (``accelerator``) each computes every ``num_processes``-th example,
    all get the whole table, and the main process saves it.
    """
    is_main_process = accelerator is None or accelerator.is_main_process
    expected = fingerprint(config, base_location, len(train_items), len(eval_items))
    candidates = [Path(config.resume_from) / REFERENCE_FILE] if config.resume_from else []
    candidates.append(run_dir / REFERENCE_FILE)
    cached = load_cache(candidates, expected)
    if cached is not None:
        if is_main_process and not (run_dir / REFERENCE_FILE).is_file():
            save_cache(run_dir / REFERENCE_FILE, expected, cached["train"], cached["eval"])
        return cached, "cached"

    rows = rows_over_processes(accelerator, list(train_items) + list(eval_items), lambda share, on_batch:
                               compute_reference_logps(model, share, make_batch, per_item, config.batch_size,
                                                       device, on_batch), progress)
    table = pad_rows(rows)
    result = {"train": table[:len(train_items)], "eval": table[len(train_items):]}
    if is_main_process:
        save_cache(run_dir / REFERENCE_FILE, expected, result["train"], result["eval"])
    return result, "computed"
