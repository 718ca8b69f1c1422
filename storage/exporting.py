"""Export a project's labels as training data in TRL's formats.

Formats:
- ``trl``: ``prompt``/``chosen``/``rejected`` strings (TRL standard preference format);
- ``trl-chat``: the same in TRL's conversational format (prompt as messages);
- ``listwise``: prompt + completions best first + ranks (equal ranks are ties);
- ``ratings``: prompt + completion + rating (1-5);
- ``sft``: rewrites written after "both bad", as TRL prompt/completion rows;
- ``pairs-from-rankings``: every ranking expanded into its K(K-1)/2 (chosen, rejected) pairs.
Ties and "both bad" carry no preference and are left out of the pairwise formats.
A label a reviewer corrected is exported with the correction (the original stays in the database);
`LabelFilter.accepted_only` keeps only labels a reviewer accepted or corrected.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from storage.errors import InputError
from storage.exporters import (
    listwise_row,
    ranking_to_pairs,
    rating_row,
    sft_row,
    trl_chat_pair_row,
    trl_pair_row,
    write_rows,
)
from storage.models import (
    ACCEPTED_STATUSES,
    Choice,
    PairwiseLabel,
    Project,
    Prompt,
    Ranking,
    Rating,
    Response,
    Rewrite,
    User,
)

EXPORT_FORMATS = ("trl", "trl-chat", "listwise", "ratings", "sft", "pairs-from-rankings")


@dataclass
class ExportResult:
    project: str
    format: str
    rows: int
    path: Path
    datasheet: list[Path] = field(default_factory=list)  # written beside the data (annotation.services.datasheet)

    def summary(self) -> str:
        line = f"wrote {self.rows} {self.format} rows from project {self.project!r} to {self.path}"
        return line + (f" (datasheet: {self.datasheet[0]})" if self.datasheet else "")


@dataclass
class LabelFilter:
    """Which labels to export: by annotator name and creation time (None = no restriction), and
    whether only labels a reviewer accepted (or corrected) count.
    Imported labels have no annotator and are left out when annotators are named."""

    annotators: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    accepted_only: bool = False

    def apply(self, stmt, model):
        if self.accepted_only:
            # A rewrite is as good as the "both bad" label it was written after.
            reviewed = PairwiseLabel if model is Rewrite else model
            accepted = reviewed.review_status.in_(ACCEPTED_STATUSES)
            stmt = stmt.where(Rewrite.pairwise_label_id.in_(select(PairwiseLabel.id).where(accepted))
                              if model is Rewrite else accepted)
        if self.annotators:
            stmt = stmt.where(model.user_id.in_(select(User.id).where(User.name.in_(self.annotators))))
        if self.since:
            stmt = stmt.where(model.created_at >= self.since)
        if self.until:
            stmt = stmt.where(model.created_at <= self.until)
        return stmt


NO_FILTER = LabelFilter()


def _pairwise_rows(session: Session, project: Project, flt: LabelFilter, conversational: bool) -> Iterator[dict]:
    build = trl_chat_pair_row if conversational else trl_pair_row
    stmt = (select(PairwiseLabel).join(Prompt, PairwiseLabel.prompt_id == Prompt.id)
            .where(Prompt.project_id == project.id)
            .options(selectinload(PairwiseLabel.prompt), selectinload(PairwiseLabel.response_a),
                     selectinload(PairwiseLabel.response_b))
            .order_by(PairwiseLabel.id))
    labels = session.scalars(flt.apply(stmt, PairwiseLabel))
    for label in labels:
        choice = label.effective_choice  # a reviewer's correction may turn a tie into a preference, or back
        if choice not in (Choice.a, Choice.b):
            continue
        chosen, rejected = ((label.response_a, label.response_b) if choice == Choice.a
                            else (label.response_b, label.response_a))
        yield build(label.prompt.messages, label.prompt.is_chat, chosen.text, rejected.text)


def _rankings(session: Session, project: Project, flt: LabelFilter) -> Iterator[tuple[Prompt, list[list[Response]]]]:
    stmt = (select(Ranking).join(Prompt, Ranking.prompt_id == Prompt.id).where(Prompt.project_id == project.id)
            .options(selectinload(Ranking.prompt)).order_by(Ranking.id))
    rankings = session.scalars(flt.apply(stmt, Ranking)).all()
    ids = {rid for r in rankings for g in r.groups for rid in g}
    responses = {r.id: r for r in session.scalars(select(Response).where(Response.id.in_(ids)))}
    for ranking in rankings:
        yield ranking.prompt, [[responses[rid] for rid in group] for group in ranking.effective_groups]


def _conversational(prompts: list[Prompt]) -> bool:
    """One shape per file: if any prompt is a chat, every row is written in conversational form
    (a plain prompt is a one-message chat), so JSONL columns and `datasets` features stay uniform."""
    return any(p.is_chat for p in prompts)


def _listwise_rows(session: Session, project: Project, flt: LabelFilter, force_chat: bool = False) -> Iterator[dict]:
    rankings = list(_rankings(session, project, flt))
    chat = force_chat or _conversational([prompt for prompt, _ in rankings])
    for prompt, groups in rankings:
        completions = [r.text for group in groups for r in group]
        ranks = [rank for rank, group in enumerate(groups) for _ in group]
        yield listwise_row(prompt.messages, chat, completions, ranks)


def _ranking_pair_rows(session: Session, project: Project, flt: LabelFilter,
                       conversational: bool = False) -> Iterator[dict]:
    build = trl_chat_pair_row if conversational else trl_pair_row
    for prompt, groups in _rankings(session, project, flt):
        for chosen, rejected in ranking_to_pairs(groups):
            yield build(prompt.messages, prompt.is_chat, chosen.text, rejected.text)


def _rating_rows(session: Session, project: Project, flt: LabelFilter) -> Iterator[dict]:
    stmt = (select(Rating).join(Response, Rating.response_id == Response.id)
            .join(Prompt, Response.prompt_id == Prompt.id).where(Prompt.project_id == project.id)
            .options(selectinload(Rating.response).selectinload(Response.prompt)).order_by(Rating.id))
    ratings = session.scalars(flt.apply(stmt, Rating))
    ratings = ratings.all()
    chat = _conversational([r.response.prompt for r in ratings])
    for rating in ratings:
        yield rating_row(rating.response.prompt.messages, chat, rating.response.text, rating.effective_score)


def _sft_rows(session: Session, project: Project, flt: LabelFilter) -> Iterator[dict]:
    stmt = (select(Rewrite).join(Prompt, Rewrite.prompt_id == Prompt.id).where(Prompt.project_id == project.id)
            .options(selectinload(Rewrite.prompt)).order_by(Rewrite.id))
    rewrites = session.scalars(flt.apply(stmt, Rewrite))
    rewrites = rewrites.all()
    chat = _conversational([r.prompt for r in rewrites])
    for rewrite in rewrites:
        yield sft_row(rewrite.prompt.messages, chat, rewrite.text)


ROW_BUILDERS: dict[str, Callable[[Session, Project, LabelFilter], Iterator[dict]]] = {
    "trl": lambda s, p, f: _pairwise_rows(s, p, f, conversational=False),
    "trl-chat": lambda s, p, f: _pairwise_rows(s, p, f, conversational=True),
    "listwise": _listwise_rows,
    "ratings": _rating_rows,
    "sft": _sft_rows,
    "pairs-from-rankings": _ranking_pair_rows,
    # Training snapshots: always conversational, so trainers apply the model's chat template.
    "pairs-from-rankings-chat": lambda s, p, f: _ranking_pair_rows(s, p, f, conversational=True),
    "listwise-chat": lambda s, p, f: _listwise_rows(s, p, f, force_chat=True),
}


def export_rows(session: Session, project: Project, fmt: str, flt: LabelFilter = NO_FILTER) -> list[dict]:
    if fmt not in ROW_BUILDERS:
        raise InputError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    return list(ROW_BUILDERS[fmt](session, project, flt))


def export_project(session: Session, project: Project, fmt: str, out: str | Path,
                   as_datasets: bool = False, flt: LabelFilter = NO_FILTER) -> ExportResult:
    path = Path(out)
    # A clear message instead of an OSError (and a traceback in the CLI) from the rename at the end.
    if as_datasets and path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file: a datasets export writes a folder, give a folder path")
    if not as_datasets and path.is_dir():
        raise InputError(f"{path} is a folder: a JSONL export writes a file, give a file path "
                         "(or export as a datasets folder)")
    rows = export_rows(session, project, fmt, flt)
    if not rows:
        which = "accepted labels" if flt.accepted_only else "labels"
        raise InputError(f"project {project.name!r} has no {which} to export as {fmt} yet")
    write_rows(rows, path, as_datasets=as_datasets)
    return ExportResult(project=project.name, format=fmt, rows=len(rows), path=path)
