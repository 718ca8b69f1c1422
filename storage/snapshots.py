"""Frozen label snapshots: the exact rows a training job reads, written once and never changed.

A snapshot selects a project's labels (optionally by annotator and date range), writes them in the
format the method trains on, and records the filters and counts, so a trained model can always be
traced back to the labels behind it (label -> snapshot -> adapter). Pairwise methods read
`pairs.jsonl`: pairwise labels without ties or "both bad", plus every ranking expanded into all its
pairs; listwise DPO reads `rankings.jsonl`: rankings kept whole.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from storage.errors import InputError
from storage.exporters import write_rows
from storage.exporting import LabelFilter, export_rows
from storage.models import Project, Snapshot

# Which export formats make up each kind of snapshot, and the file they are written to.
SNAPSHOT_KINDS = {
    "pairs": ("pairs.jsonl", ("trl-chat", "pairs-from-rankings-chat")),
    "rankings": ("rankings.jsonl", ("listwise-chat",)),
}


@dataclass
class SnapshotFilters:
    annotators: list[str] | None = None
    since: str | None = None  # ISO dates, inclusive
    until: str | None = None

    def label_filter(self) -> LabelFilter:
        try:
            since = datetime.fromisoformat(self.since) if self.since else None
            until = datetime.fromisoformat(self.until) if self.until else None
        except ValueError as exc:
            raise InputError(f"dates must be ISO dates like 2026-11-24: {exc}") from None
        return LabelFilter(annotators=self.annotators or None, since=since, until=until)


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
