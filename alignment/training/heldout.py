"""The held-out record of a training run: which prompts it trained on and which it held out.

Every training run writes ``split.json`` into its run folder when it splits its data
(:func:`record_split`): the content hash (:func:`alignment.training.data.prompt_sha256`) of each
train and held-out prompt, the counts, and the ``eval_fraction`` / ``seed`` it split with. Anything
that later needs "the prompts this model did not see" reads that record (:func:`read_split`)
instead of splitting the data again, so the answer stays right when the data file grows, and
two runs can be compared by prompt content even when they trained on different files (e.g. does
a reward model's training set overlap a policy's held-out prompts?).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.run_folder import SPLIT_FILE, read_json
from alignment.training.data import prompt_sha256, split


@dataclass(frozen=True)
class SplitRecord:
    """A run's split: the content hashes of its train and held-out prompts."""

    train_prompts: frozenset[str]
    held_out_prompts: frozenset[str]
    eval_fraction: float
    seed: int

    def to_dict(self, train_rows: int, held_out_rows: int) -> dict[str, Any]:
        return {
            "prompt_hash": "sha256 of the prompt's chat messages as JSON with sorted keys",
            "eval_fraction": self.eval_fraction, "seed": self.seed,
            "train": {"rows": train_rows, "prompts": len(self.train_prompts),
                      "prompt_sha256": sorted(self.train_prompts)},
            "held_out": {"rows": held_out_rows, "prompts": len(self.held_out_prompts),
                         "prompt_sha256": sorted(self.held_out_prompts)},
        }


def record_split(run_dir: Path, train: Sequence[Any], held_out: Sequence[Any], eval_fraction: float,
                 seed: int) -> SplitRecord:
    """Write ``split.json`` for the items a run trains on and holds out; returns the record."""
    record = SplitRecord(frozenset(map(prompt_sha256, train)), frozenset(map(prompt_sha256, held_out)),
                         float(eval_fraction), int(seed))
    path = Path(run_dir) / SPLIT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # each process of a multi-GPU run writes its own
    tmp.write_text(json.dumps(record.to_dict(len(train), len(held_out)), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return record


def split_for_run(items: Sequence[Any], config: Any, run_dir: Path) -> tuple[list[Any], list[Any]]:
    """A training run's (train, held-out) split of ``items`` by prompt, recorded in its run folder."""
    train, held_out = split(items, config.eval_fraction, config.seed)
    record_split(run_dir, train, held_out, config.eval_fraction, config.seed)
    return train, held_out


def read_split(run_dir: str | Path) -> SplitRecord:
    """The split a run recorded; ValueError when it has none (trained before runs recorded it)."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {SPLIT_FILE} (trained before runs recorded their held-out prompts)")
    values = read_json(path)
    try:
        return SplitRecord(frozenset(values["train"]["prompt_sha256"]),
                           frozenset(values["held_out"]["prompt_sha256"]),
                           float(values["eval_fraction"]), int(values["seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a split record ({exc!r})") from None


def held_out_items(items: Sequence[Any], record: SplitRecord) -> list[Any]:
    """The items whose prompt the recorded run held out, in order."""
    return [item for item in items if prompt_sha256(item) in record.held_out_prompts]
