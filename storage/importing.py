"""Import a file into a project: all-or-nothing for the user, short write locks for everyone else.

The file-format layer (storage/importers.py) reads every record and collects every error; if there
is even one, nothing is written and the whole list ("line N: reason") goes back to the user. With
`skip_invalid` the valid records are stored and the bad ones are listed in the result instead (for
public data sets with a few broken rows, such as HH-RLHF's four empty chosen replies).

What is stored: prompts once per project (by content hash); a preference pair as its prompt, two
responses (source "import") and a pairwise label from source "import" (chosen shown as A); a ranking
as its prompt, K responses and a ranking label. A pair or ranking repeated in the file, or already
imported into the project before, is stored once and reported as a duplicate, so importing the
same file again adds nothing.

How it is written: a 200k-row file takes minutes to store, and SQLite has one write lock. So the
rows go into a hidden *staging* project (``Project.staging``) in batches, each its own short
transaction, while annotators keep submitting between them. One final short transaction moves the
staged prompts into the target project (a few set-based UPDATEs), which is the moment the import
becomes visible. A failure discards the staging project; a staging project left behind by a killed
process is invisible, and the next import removes it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import and_, delete, exists, insert, select, update
from sqlalchemy.orm import Session, aliased

from storage.db import Database, transaction
from storage.importers import read_import_file
from storage.models import (
    Choice, LabelSource, Mode, PairwiseLabel, Project, Prompt, Ranking, Response, utcnow,
)
from storage.prompts import content_hash
from storage.records import (
    FILE_LEVEL, ImportFailed, ImportReport, PairRecord, PromptRecord, RankingRecord, RecordError,
)

log = logging.getLogger(__name__)

BATCH_RECORDS = 2000  # records per staging transaction: well under a second of write lock each
STALE_STAGING = timedelta(hours=6)  # a staging project this old belongs to an import that died


@dataclass
class ImportResult:
    project: str
    file: str
    format: str
    records: int = 0
    prompts_added: int = 0
    prompts_existing: int = 0
    pairs_added: int = 0
    rankings_added: int = 0
    duplicates: list[RecordError] = field(default_factory=list)  # labels already in the file or the project
    ignored_columns: dict[str, int] = field(default_factory=dict)
    skipped: list[RecordError] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"imported {self.records} records from {self.file} ({self.format}) into {self.project!r}:",
                 f"{self.prompts_added} new prompts"]
        if self.prompts_existing:
            parts.append(f"{self.prompts_existing} prompts already there")
        if self.pairs_added:
            parts.append(f"{self.pairs_added} preference pairs")
        if self.rankings_added:
            parts.append(f"{self.rankings_added} rankings")
        text = parts[0] + " " + ", ".join(parts[1:])
        if self.duplicates:
            text += (f"\n{len(self.duplicates)} duplicate labels not stored again (the same prompt and responses "
                     f"earlier in the file or imported before): " + _lines(self.duplicates))
        for column, rows in sorted(self.ignored_columns.items()):
            text += (f"\ncolumn {column!r} was not stored ({rows} rows): only text columns and single values "
                     "are kept beside the prompt and the responses")
        if self.skipped:
            text += f"\nskipped {len(self.skipped)} bad records:\n" + "\n".join(f"  {e}" for e in self.skipped)
        return text


def _lines(errors: list[RecordError], shown: int = 10) -> str:
    numbers = ", ".join(str(e.line) for e in errors[:shown])
    more = f" and {len(errors) - shown} more" if len(errors) > shown else ""
    return f"line{'s' if len(errors) > 1 else ''} {numbers}{more}"


def read_checked(path: str | Path, fmt: str | None = None, skip_invalid: bool = False) -> ImportReport:
    """Read ``path`` completely (no database involved); raise ImportFailed unless it may be stored."""
    report = read_import_file(path, fmt)
    file_level = [e for e in report.errors if e.line == FILE_LEVEL]
    if report.errors and (not skip_invalid or file_level or not report.records):
        raise ImportFailed(report.errors, file=str(path))
    return report


def import_report(db: Database, report: ImportReport, file_name: str, project_name: str,
                  target: Callable[[Session], Project], batch_records: int = BATCH_RECORDS) -> ImportResult:
    """Store a checked report's records into the project ``target(session)`` returns (it may create it).

    Staged in batches, then committed in one short transaction; on any failure nothing is visible.
    """
    result = ImportResult(project=project_name, file=file_name, format=report.format, records=len(report.records),
                          skipped=list(report.errors), ignored_columns=dict(report.ignored_columns))
    remove_stale_staging(db)
    with transaction(db) as s:
        project = s.scalar(select(Project).where(Project.name == project_name))
        known = _imported_label_keys(s, project.id) if project is not None else set()
        # Hidden by `staging`, not by its name (PostgreSQL text cannot hold the NUL a name could hide behind).
        staging = Project(name=f"(staging import {uuid.uuid4().hex})", mode=Mode.pairwise, k=2, staging=True)
        s.add(staging)
        s.flush()
        staging_id = staging.id
    try:
        records = _new_records(report.records, known, result)
        for start in range(0, len(records), batch_records):
            with transaction(db) as s:
                _stage_batch(s, staging_id, records[start:start + batch_records], file_name)
        with transaction(db) as s:
            project = target(s)
            result.project = project.name
            _commit_staging(s, staging_id, project.id, result)
    except BaseException:
        try:
            discard_staging(db, staging_id)
        except Exception:  # e.g. the disk is full: the rows stay hidden and the next import removes them
            log.warning("could not remove the staging rows of a failed import now", exc_info=True)
        raise
    # Per stored record, as before: its prompt was new, or already there (in the project or the file).
    result.prompts_existing = len(records) - result.prompts_added
    result.pairs_added = sum(isinstance(r, PairRecord) for r in records)
    result.rankings_added = sum(isinstance(r, RankingRecord) for r in records)
    return result


# --------------------------------------------------------------------------------------------------
# Duplicates: a label is its prompt and its responses in order (ties as sets)
# --------------------------------------------------------------------------------------------------


def _label_key(prompt_hash: str, ordered_groups: Iterable[Iterable[str]]) -> str:
    canonical = json.dumps([prompt_hash, [sorted(g) for g in ordered_groups]], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _record_key(record: PairRecord | RankingRecord) -> str:
    digest = content_hash(record.prompt)
    if isinstance(record, PairRecord):
        return _label_key(digest, [[record.chosen], [record.rejected]])
    return _label_key(digest, [[record.completions[i] for i in group] for group in record.groups])


def _imported_label_keys(session: Session, project_id: int) -> set[str]:
    """Keys of the labels imported into the project before (human labels are not duplicates)."""
    a, b = aliased(Response), aliased(Response)
    pairs = (select(Prompt.content_hash, a.text, b.text).join(PairwiseLabel, PairwiseLabel.prompt_id == Prompt.id)
             .join(a, a.id == PairwiseLabel.response_a_id).join(b, b.id == PairwiseLabel.response_b_id)
             .where(Prompt.project_id == project_id, PairwiseLabel.source == LabelSource.imported,
                    PairwiseLabel.choice == Choice.a))
    keys = {_label_key(h, [[chosen], [rejected]]) for h, chosen, rejected in session.execute(pairs)}
    rankings = (select(Prompt.content_hash, Ranking.groups, Ranking.prompt_id).join(Ranking, Ranking.prompt_id == Prompt.id)
                .where(Prompt.project_id == project_id, Ranking.source == LabelSource.imported))
    rows = session.execute(rankings).all()
    if rows:
        texts = dict(session.execute(select(Response.id, Response.text).where(
            Response.prompt_id.in_({prompt_id for _, _, prompt_id in rows}), Response.source == "import")).all())
        keys |= {_label_key(h, [[texts.get(rid, "") for rid in g] for g in groups]) for h, groups, _ in rows}
    return keys


def _new_records(records: list, known: set[str], result: ImportResult) -> list:
    """The records to store: every prompt, and each pair or ranking once (duplicates are reported)."""
    kept = []
    for record in records:
        if not isinstance(record, PromptRecord):
            key = _record_key(record)
            if key in known:
                result.duplicates.append(RecordError(record.line, "duplicate label"))
                continue
            known.add(key)
        kept.append(record)
    return kept


# --------------------------------------------------------------------------------------------------
# Staging and commit
# --------------------------------------------------------------------------------------------------


def _stage_batch(session: Session, staging_id: int, records: list, file_name: str) -> None:
    """Insert one batch of records into the staging project (bulk inserts: one statement per table)."""
    prompt_ids = _stage_prompts(session, staging_id, records)
    model_label = f"import:{file_name}"
    responses, owners = [], []  # owners[i]: (record index, completion index) of responses[i]
    for n, record in enumerate(records):
        texts = ([record.chosen, record.rejected] if isinstance(record, PairRecord)
                 else record.completions if isinstance(record, RankingRecord) else [])
        for position, text in enumerate(texts):
            responses.append({"prompt_id": prompt_ids[n], "position": position, "text": text,
                              "model": model_label, "source": "import", "sampling": {}, "created_at": utcnow()})
            owners.append(n)
    if not responses:
        return
    response_ids = session.scalars(_insert_returning_ids(Response), responses).all()
    ids_of: dict[int, list[int]] = {}
    for n, response_id in zip(owners, response_ids):
        ids_of.setdefault(n, []).append(response_id)
    pairs, rankings = [], []
    for n, record in enumerate(records):
        label = {"prompt_id": prompt_ids[n], "source": LabelSource.imported, "created_at": utcnow()}
        if isinstance(record, PairRecord):
            chosen_id, rejected_id = ids_of[n]
            pairs.append({**label, "response_a_id": chosen_id, "response_b_id": rejected_id, "shown_order": [0, 1],
                          "choice": Choice.a})
        elif isinstance(record, RankingRecord):
            ids = ids_of[n]
            rankings.append({**label, "groups": [[ids[i] for i in group] for group in record.groups],
                             "shown_order": list(range(len(ids)))})
    if pairs:
        session.execute(insert(PairwiseLabel.__table__), pairs)
    if rankings:
        session.execute(insert(Ranking.__table__), rankings)


def _insert_returning_ids(model):
    """A Core INSERT giving back the new ids in the order of the rows (batched into multi-row statements;
    the ORM's bulk path would run one statement per row here)."""
    table = model.__table__
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)


def _stage_prompts(session: Session, staging_id: int, records: list) -> list[int]:
    """The staging prompt id of each record, inserting the prompts not staged yet."""
    hashes = [content_hash(r.messages if isinstance(r, PromptRecord) else r.prompt) for r in records]
    staged = dict(session.execute(select(Prompt.content_hash, Prompt.id).where(
        Prompt.project_id == staging_id, Prompt.content_hash.in_(set(hashes)))).all())
    new: dict[str, dict] = {}
    for digest, record in zip(hashes, records):
        if digest not in staged and digest not in new:
            messages = record.messages if isinstance(record, PromptRecord) else record.prompt
            new[digest] = {"project_id": staging_id, "messages": messages, "is_chat": record.is_chat,
                           "content_hash": digest, "source": "import", "meta": record.meta or {},
                           "created_at": utcnow()}
    if new:
        rows = list(new.values())
        ids = session.scalars(_insert_returning_ids(Prompt), rows).all()
        staged.update(zip(new, ids))
    return [staged[digest] for digest in hashes]


def _commit_staging(session: Session, staging_id: int, project_id: int, result: ImportResult) -> None:
    """Move the staged rows into the project: the one step that makes the import visible.

    A staged prompt the project already has hands its responses and labels to the existing prompt
    and is dropped; the others change project. Set-based statements, so this is short at any size.
    """
    staged, target = aliased(Prompt), aliased(Prompt)
    same_prompt = and_(target.project_id == project_id, target.content_hash == staged.content_hash)
    clashing = select(staged.id).where(staged.project_id == staging_id, exists().where(same_prompt))
    for model in (Response, PairwiseLabel, Ranking):
        existing_id = select(target.id).where(staged.id == model.prompt_id, same_prompt).scalar_subquery()
        session.execute(update(model).where(model.prompt_id.in_(clashing)).values(prompt_id=existing_id)
                        .execution_options(synchronize_session=False))
    session.execute(delete(Prompt).where(Prompt.id.in_(clashing)).execution_options(synchronize_session=False))
    result.prompts_added = session.execute(update(Prompt).where(Prompt.project_id == staging_id)
                                           .values(project_id=project_id)
                                           .execution_options(synchronize_session=False)).rowcount
    session.execute(delete(Project).where(Project.id == staging_id))


def discard_staging(db: Database, staging_id: int, batch_prompts: int = 5000) -> None:
    """Delete a staging project and its rows, a batch of prompts at a time (cascades to their rows)."""
    while True:
        with transaction(db) as s:
            ids = s.scalars(select(Prompt.id).where(Prompt.project_id == staging_id).limit(batch_prompts)).all()
            if not ids:
                s.execute(delete(Project).where(Project.id == staging_id, Project.staging.is_(True)))
                return
            s.execute(delete(Prompt).where(Prompt.id.in_(ids)))


def remove_stale_staging(db: Database) -> None:
    """Remove staging projects left behind by imports that died (killed, machine off)."""
    with transaction(db) as s:
        stale = s.scalars(select(Project.id).where(Project.staging.is_(True),
                                                   Project.created_at < utcnow() - STALE_STAGING)).all()
    for staging_id in stale:
        discard_staging(db, staging_id)
