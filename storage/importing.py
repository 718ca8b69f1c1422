"""Import a file into a project, all-or-nothing.

The file-format layer (storage/importers.py) reads every record and collects every error; if there
is even one, nothing is written and the whole list ("line N: reason") goes back to the user. With
`skip_invalid` the valid records are stored and the bad ones are listed in the result instead (for
public data sets with a few broken rows, such as HH-RLHF's four empty chosen replies). Valid
prompts are stored once per project (by content hash). A preference pair becomes its prompt, two
responses (source "import") and a pairwise label from source "import": chosen shown as A.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.importers import read_import_file
from storage.models import Choice, LabelSource, PairwiseLabel, Project, Prompt, Response
from storage.prompts import content_hash
from storage.records import FILE_LEVEL, ImportFailed, PairRecord, PromptRecord, RecordError


@dataclass
class ImportResult:
    project: str
    file: str
    format: str
    records: int = 0
    prompts_added: int = 0
    prompts_existing: int = 0
    pairs_added: int = 0
    skipped: list[RecordError] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"imported {self.records} records from {self.file} ({self.format}) into {self.project!r}:",
                 f"{self.prompts_added} new prompts"]
        if self.prompts_existing:
            parts.append(f"{self.prompts_existing} prompts already there")
        if self.pairs_added:
            parts.append(f"{self.pairs_added} preference pairs")
        text = parts[0] + " " + ", ".join(parts[1:])
        if self.skipped:
            text += f"\nskipped {len(self.skipped)} bad records:\n" + "\n".join(f"  {e}" for e in self.skipped)
        return text


def import_records(session: Session, project: Project, path: str | Path, fmt: str | None = None,
                   skip_invalid: bool = False) -> ImportResult:
    """Read `path` and store its records in `project` inside the caller's transaction."""
    report = read_import_file(path, fmt)
    file_level = [e for e in report.errors if e.line == FILE_LEVEL]
    if report.errors and (not skip_invalid or file_level or not report.records):
        raise ImportFailed(report.errors)
    result = ImportResult(project=project.name, file=Path(path).name, format=report.format,
                          records=len(report.records), skipped=list(report.errors))
    prompts = {h: pid for h, pid in session.execute(
        select(Prompt.content_hash, Prompt.id).where(Prompt.project_id == project.id))}
    source_label = f"import:{Path(path).name}"
    for record in report.records:
        messages = record.messages if isinstance(record, PromptRecord) else record.prompt
        prompt_id = _prompt_id(session, project, prompts, messages, record.is_chat, record.meta, result)
        if isinstance(record, PairRecord):
            _add_pair(session, prompt_id, record, source_label)
            result.pairs_added += 1
    session.flush()
    return result


def _prompt_id(session: Session, project: Project, known: dict[str, int], messages: list[dict], is_chat: bool,
               meta: dict, result: ImportResult) -> int:
    digest = content_hash(messages)
    if digest in known:
        result.prompts_existing += 1
        return known[digest]
    prompt = Prompt(project_id=project.id, messages=messages, is_chat=is_chat, content_hash=digest,
                    source="import", meta=meta or {})
    session.add(prompt)
    session.flush()
    known[digest] = prompt.id
    result.prompts_added += 1
    return prompt.id


def _add_pair(session: Session, prompt_id: int, record: PairRecord, source_label: str) -> None:
    chosen = Response(prompt_id=prompt_id, position=0, text=record.chosen, model=source_label, source="import",
                      sampling={})
    rejected = Response(prompt_id=prompt_id, position=1, text=record.rejected, model=source_label, source="import",
                        sampling={})
    session.add_all([chosen, rejected])
    session.flush()
    session.add(PairwiseLabel(prompt_id=prompt_id, response_a_id=chosen.id, response_b_id=rejected.id,
                              shown_order=[0, 1], choice=Choice.a, source=LabelSource.imported))
