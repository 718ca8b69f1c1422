"""Build training rows in TRL's dataset formats and write them as JSONL or a ``datasets`` folder.

Row builders are pure functions over (prompt messages, is_chat, texts). The standard (string)
variants render a chat prompt as an HH transcript ending in "\\n\\nAssistant:", so an HH-RLHF pair
comes back as ``prompt + " " + chosen`` == the original transcript. The conversational variants
keep the prompt as messages and wrap each model output as ``[{"role": "assistant", ...}]``, as TRL's
conversational formats do.

``datasets`` is imported only inside ``write_rows(..., as_datasets=True)``: it is heavy, and this
package must stay importable without any ML stack.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from storage.hh import ASSISTANT_TAG, render_hh_dialogue

X = TypeVar("X")


# --------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------


def prompt_text(messages: list[dict], is_chat: bool) -> str:
    """The prompt as one string: the user text of a plain prompt, an HH transcript for a chat."""
    if not is_chat:
        if len(messages) != 1 or messages[0]["role"] != "user":
            raise ValueError("a non-chat prompt is a single user message")
        return messages[0]["content"]
    return render_hh_dialogue(messages) + ASSISTANT_TAG


def _copy_messages(messages: list[dict]) -> list[dict]:
    """The prompt as messages (a plain prompt is already one user message); copies, never aliases."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _prompt_for(messages: list[dict], is_chat: bool):
    return _copy_messages(messages) if is_chat else prompt_text(messages, is_chat)


def _output_for(text: str, is_chat: bool):
    return _assistant(text) if is_chat else text


# --------------------------------------------------------------------------------------------------
# Row builders
# --------------------------------------------------------------------------------------------------


def trl_pair_row(prompt: list[dict], is_chat: bool, chosen: str, rejected: str) -> dict:
    """TRL standard preference: {"prompt", "chosen", "rejected"} strings."""
    return {"prompt": prompt_text(prompt, is_chat), "chosen": chosen, "rejected": rejected}


def trl_chat_pair_row(prompt: list[dict], is_chat: bool, chosen: str, rejected: str) -> dict:
    """TRL conversational preference: prompt messages, chosen/rejected as one assistant message each."""
    return {"prompt": _copy_messages(prompt), "chosen": _assistant(chosen),
            "rejected": _assistant(rejected)}


def listwise_row(prompt: list[dict], is_chat: bool, completions_best_first: Sequence[str],
                 ranks: Sequence[int]) -> dict:
    """{"prompt", "completions", "ranks"}: ranks[i] is completion i's place, 0 = best, equal = tie.

    ``is_chat`` picks the conversational form (prompt messages, completions as assistant messages)
    or the standard one (strings).
    """
    if len(completions_best_first) != len(ranks):
        raise ValueError(f"{len(completions_best_first)} completions but {len(ranks)} ranks")
    if any(r < 0 for r in ranks) or list(ranks) != sorted(ranks):
        raise ValueError(f"ranks must be non-negative and ordered best first, got {list(ranks)}")
    return {"prompt": _prompt_for(prompt, is_chat),
            "completions": [_output_for(c, is_chat) for c in completions_best_first],
            "ranks": list(ranks)}


def rating_row(prompt: list[dict], is_chat: bool, completion: str, rating) -> dict:
    """{"prompt", "completion", "rating"} for a single rated completion (standard or conversational)."""
    return {"prompt": _prompt_for(prompt, is_chat), "completion": _output_for(completion, is_chat),
            "rating": rating}


def sft_row(prompt: list[dict], is_chat: bool, completion: str) -> dict:
    """TRL prompt-completion: {"prompt", "completion"} (standard or conversational)."""
    return {"prompt": _prompt_for(prompt, is_chat), "completion": _output_for(completion, is_chat)}


def ranking_to_pairs(groups: Sequence[Sequence[X]]) -> list[tuple[X, X]]:
    """(better, worse) for every two items in different groups; groups are best first, a group is a tie.

    A strict ranking of K items (K groups of one) gives K(K-1)/2 pairs; ties give none between them.
    """
    pairs = []
    for i, better_group in enumerate(groups):
        for worse_group in groups[i + 1:]:
            pairs.extend((better, worse) for better in better_group for worse in worse_group)
    return pairs


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def write_rows(rows: Iterable[dict], out_path: str | os.PathLike, as_datasets: bool = False) -> int:
    """Write rows as UTF-8 JSONL, or as a folder ``datasets.load_from_disk`` reads; returns the count.

    A datasets folder needs at least one row (ValueError otherwise); an empty JSONL file is fine.

    Either way the result appears at ``out_path`` only when complete (written beside it, then renamed),
    so a crash never leaves a half-written export that looks finished.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if as_datasets:
        return _write_datasets_folder(list(rows), out_path)
    return _write_jsonl(rows, out_path)


def _write_jsonl(rows: Iterable[dict], out_path: Path) -> int:
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _write_datasets_folder(rows: list[dict], out_path: Path) -> int:
    if not rows:
        # datasets cannot infer columns from nothing, and an empty folder would not load back.
        raise ValueError("no rows to write: a datasets folder needs at least one row")
    import datasets  # lazily: heavy, and only this path needs it

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
    try:
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
        _replace_folder(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(rows)


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old export there is moved aside first and deleted after."""
    if not target.exists():
        os.replace(new, target)
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
