"""Frozen label snapshots: the exact rows a training job reads, written once and never changed.

A snapshot selects a project's labels (optionally by annotator, date range, and only those a
reviewer accepted), writes them in the
format the method trains on, and records the filters and counts, so a trained model can always be
traced back to the labels behind it (label -> snapshot -> adapter). Pairwise methods read
`pairs.jsonl`: pairwise labels without ties or "both bad", plus every ranking expanded into all its
pairs; listwise DPO reads `rankings.jsonl`: rankings kept whole.

A best-of-N job reads prompts instead: :func:`create_prompt_snapshot` freezes the project's prompts
(all of them, or only those nobody has labelled yet; optionally the first few) into `prompts.jsonl`,
so prompts added while the job waits in the queue never change what it runs on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from storage.errors import InputError
from storage.exporters import write_rows
from storage.exporting import LabelFilter, export_rows
from storage.models import PairwiseLabel, Project, Prompt, Ranking, Rating, Response, Snapshot

# Which export formats make up each kind of snapshot, and the file they are written to.
SNAPSHOT_KINDS = {
    "pairs": ("pairs.jsonl", ("trl-chat", "pairs-from-rankings-chat")),
    "rankings": ("rankings.jsonl", ("listwise-chat",)),
}
PROMPTS_FILE = "prompts.jsonl"
#: Which of a project's prompts a prompt snapshot takes: every one, or those without any label yet.
PROMPT_SELECTIONS = ("all", "unlabelled")


@dataclass
class SnapshotFilters:
    annotators: list[str] | None = None
    since: str | None = None  # ISO dates, inclusive
    until: str | None = None
    accepted_only: bool = False  # only labels a reviewer accepted or corrected (with the correction)

    def label_filter(self) -> LabelFilter:
        try:
            since = datetime.fromisoformat(self.since) if self.since else None
            until = datetime.fromisoformat(self.until) if self.until else None
        except ValueError as exc:
            raise InputError(f"dates must be ISO dates like 2026-11-24: {exc}") from None
        return LabelFilter(annotators=self.annotators or None, since=since, until=until,
                           accepted_only=bool(self.accepted_only))


def create_snapshot(session: Session, project: Project, kind: str, out_dir: Path,
                    filters: SnapshotFilters | None = None, min_rows: int = 1) -> Snapshot:
    """Write the selected labels to `out_dir` and record the snapshot (in the caller's transaction)."""
    if kind not in SNAPSHOT_KINDS:
        raise InputError(f"unknown snapshot kind {kind!r}: use {' or '.join(SNAPSHOT_KINDS)}")
    filters = filters or SnapshotFilters()
    file_name, formats = SNAPSHOT_KINDS[kind]
    rows, counts = [], {}
    for fmt in formats:
        part = export_rows(session, project, fmt, filters.label_filter())
        counts[fmt] = len(part)
        rows.extend(part)
    if len(rows) < min_rows:
        raise InputError(f"project {project.name!r} has {len(rows)} usable {kind} for training (at least "
                         f"{min_rows} needed): label more, or widen the filters")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out_dir / file_name)
    snapshot = Snapshot(project_id=project.id, filters=asdict(filters), counts={**counts, "rows": len(rows)},
                        path=str(out_dir / file_name))
    session.add(snapshot)
    session.flush()
    return snapshot


def create_prompt_snapshot(session: Session, project: Project, out_dir: Path, selection: str = "all",
                           limit: int | None = None) -> Snapshot:
    """Write the selected prompts (oldest first) to `out_dir/prompts.jsonl` and record the snapshot.

    Rows are what `import` reads back: {"prompt": text} for a plain prompt, {"messages": [...]} for a
    chat, plus "prompt_id". Runs in the caller's transaction; bad settings or no prompt raise InputError.
    """
    if selection not in PROMPT_SELECTIONS:
        raise InputError(f"prompts must be one of {', '.join(PROMPT_SELECTIONS)}, got {selection!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"max_prompts must be a whole number >= 1 or empty for all, got {limit!r}")
    stmt = select(Prompt).where(Prompt.project_id == project.id).order_by(Prompt.id)
    if selection == "unlabelled":
        stmt = stmt.where(Prompt.id.not_in(labelled_prompt_ids()))
    prompts = session.scalars(stmt.limit(limit)).all()
    if not prompts:
        which = "prompts" if selection == "all" else "prompts without labels (every prompt has one)"
        raise InputError(f"project {project.name!r} has no {which}: add prompts, or pick another selection")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows([_prompt_row(p) for p in prompts], out_dir / PROMPTS_FILE)
    snapshot = Snapshot(project_id=project.id, filters={"prompts": selection, "max_prompts": limit},
                        counts={"prompts": len(prompts), "rows": len(prompts)}, path=str(out_dir / PROMPTS_FILE))
    session.add(snapshot)
    session.flush()
    return snapshot


def labelled_prompt_ids():
    """Ids of prompts with any label: a pairwise label, a ranking, or a rating of one of their responses."""
    return union(select(PairwiseLabel.prompt_id), select(Ranking.prompt_id),
                 select(Response.prompt_id).join(Rating, Rating.response_id == Response.id))


def _prompt_row(prompt: Prompt) -> dict:
    # A plain prompt goes back as text so that it is read back as plain (is_chat False), not as a chat.
    plain = not prompt.is_chat and len(prompt.messages) == 1
    body = {"prompt": prompt.messages[0]["content"]} if plain else {"messages": prompt.messages}
    return {**body, "prompt_id": prompt.id}
