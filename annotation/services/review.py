"""Label review: a reviewer accepts, rejects or corrects the labels of a project.

The unit of review is one submission: a pairwise label, a ranking, or an item's ratings by one
annotator (a pointwise submission stored a rating per response; they are reviewed together and
named by the first rating's id). A verdict is final: a label already reviewed is refused with who
reviewed it, so two reviewers never overwrite each other. A correction is stored beside the
original answer, which stays as the annotator gave it; snapshots and exports use the correction
(storage.models `effective_*`), and can keep only accepted and corrected labels.

Who may review is the caller's business (annotation.auth.permissions); here a reviewer may not
review their own labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from annotation.services.labelling import competition_ranks, ranks_to_groups, validate_groups, whole_number
from annotation.services.projects import ensure_user, find_project
from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.models import (
    Choice,
    Item,
    Mode,
    PairwiseLabel,
    Project,
    Ranking,
    Rating,
    Response,
    ReviewStatus,
    User,
    utcnow,
)

_LABELS = {Mode.pairwise: PairwiseLabel, Mode.listwise: Ranking, Mode.pointwise: Rating}
CHOICE_WORDS = {Choice.a: "A", Choice.b: "B", Choice.tie: "tie", Choice.both_bad: "both bad"}
STRENGTH_WORDS = {1: "slightly", 2: "clearly", 3: "much"}
REVIEW_FILTERS = ("submitted", "accepted", "rejected", "corrected", "all")


@dataclass
class ReviewRow:
    """One submission as a reviewer sees it: the responses in the order the annotator saw them."""

    label_id: int
    item_id: int
    annotator: str | None  # None: an imported label
    status: str
    answer: str  # what the annotator said, in words
    rationale: str | None
    seconds: float | None  # time the item was on screen before the label
    created_at: datetime
    prompt: list[dict[str, str]]
    is_chat: bool
    responses: list[str]
    reviewer: str | None = None
    correction: str | None = None  # the reviewer's answer, in words
    gold: bool = False
    ranks: list[int] = field(default_factory=list)  # listwise / pointwise: per response shown
    choice: str | None = None  # pairwise: a / b / tie / both_bad as shown


def review_queue(db: Database, project_name: str, status: str = "submitted", reviewer: str | None = None,
                 limit: int = 200) -> list[ReviewRow]:
    """The project's submissions with the given review status ("all" for any), oldest first; a
    reviewer's own labels are left out of what they are asked to review."""
    if status not in REVIEW_FILTERS:
        raise InputError(f"unknown review status {status!r}: use {', '.join(REVIEW_FILTERS)}")
    with reading(db) as s:
        project = find_project(s, project_name)
        model = _LABELS[project.mode]
        stmt = (select(model).join(Item, model.item_id == Item.id).where(Item.project_id == project.id)
                .options(selectinload(model.user)).order_by(model.created_at, model.id))
        if status != "all":
            stmt = stmt.where(model.review_status == ReviewStatus(status))
        if reviewer:
            own = select(User.id).where(User.name == reviewer.strip())
            stmt = stmt.where(model.user_id.is_(None) | model.user_id.not_in(own))
        labels = s.scalars(stmt).all()
        if project.mode == Mode.pointwise:
            labels = _submissions(labels)
        labels = labels[:limit]
        names = _reviewer_names(s, labels)
        return [_row(s, project, label, names) for label in labels]


def _submissions(ratings: list[Rating]) -> list[list[Rating]]:
    """Pointwise: the ratings of one (item, annotator), in the order they were stored."""
    grouped: dict[tuple, list[Rating]] = {}
    for rating in ratings:
        grouped.setdefault((rating.item_id, rating.user_id), []).append(rating)
    return list(grouped.values())


def _reviewer_names(s, labels) -> dict[int, str]:
    ids = {(label[0] if isinstance(label, list) else label).reviewer_id for label in labels} - {None}
    return dict(s.execute(select(User.id, User.name).where(User.id.in_(ids))).all()) if ids else {}


def _row(s, project: Project, label, reviewer_names: dict[int, str]) -> ReviewRow:
    first = label[0] if isinstance(label, list) else label
    item = s.get(Item, first.item_id)
    by_id = {r.id: r for r in item.responses}
    common = dict(label_id=first.id, item_id=item.id, annotator=first.user.name if first.user else None,
                  status=first.review_status.value, rationale=first.rationale,
                  seconds=None if first.time_taken_ms is None else first.time_taken_ms / 1000,
                  created_at=first.created_at, prompt=item.prompt.messages, is_chat=item.prompt.is_chat,
                  reviewer=reviewer_names.get(first.reviewer_id), gold=item.gold_answer is not None)
    if project.mode == Mode.pairwise:
        shown = [label.response_a_id, label.response_b_id]
        correction = None
        if label.review_status == ReviewStatus.corrected:
            correction = CHOICE_WORDS[label.effective_choice]
        return ReviewRow(**common, answer=_choice_words(label.choice, label.strength), correction=correction,
                         responses=[by_id[rid].text for rid in shown], choice=label.choice.value)
    if project.mode == Mode.listwise:
        shown = _shown(item, label.shown_order)
        rank_of = competition_ranks(label.groups)
        correction = None
        if label.review_status == ReviewStatus.corrected:
            corrected = competition_ranks(label.effective_groups)
            correction = ", ".join(str(corrected[r.id]) for r in shown)
        ranks = [rank_of[r.id] for r in shown]
        return ReviewRow(**common, answer="ranks " + ", ".join(map(str, ranks)), correction=correction,
                         responses=[r.text for r in shown], ranks=ranks)
    ratings = sorted(label, key=lambda r: by_id[r.response_id].position)
    scores = [r.score for r in ratings]
    correction = None
    if first.review_status == ReviewStatus.corrected:
        correction = ", ".join(str(r.effective_score) for r in ratings)
    return ReviewRow(**common, answer="ratings " + ", ".join(map(str, scores)), correction=correction,
                     responses=[by_id[r.response_id].text for r in ratings], ranks=scores)


def _choice_words(choice: Choice, strength: int | None) -> str:
    words = CHOICE_WORDS[choice]
    return f"{words} ({STRENGTH_WORDS[strength]} better)" if strength in STRENGTH_WORDS else words


def _shown(item: Item, shown_order: list[int]) -> list[Response]:
    """The item's responses in the order the annotator saw them (item order when none was recorded)."""
    by_position = {r.position: r for r in item.responses}
    if sorted(shown_order) != sorted(by_position):
        return list(item.responses)
    return [by_position[p] for p in shown_order]


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------

def accept(db: Database, project_name: str, label_id: int, reviewer: str) -> ReviewRow:
    return _decide(db, project_name, label_id, reviewer, ReviewStatus.accepted)


def reject(db: Database, project_name: str, label_id: int, reviewer: str) -> ReviewRow:
    return _decide(db, project_name, label_id, reviewer, ReviewStatus.rejected)


def correct(db: Database, project_name: str, label_id: int, reviewer: str, answer) -> ReviewRow:
    """Store the reviewer's answer beside the annotator's. ``answer`` is, as the annotator saw the
    item: a choice (a / b / tie / both_bad) for pairwise, ranks per response (1 = best, equal = tie)
    for listwise, scores 1-5 per response for pointwise (a list, or text like "2, 1, 3")."""
    return _decide(db, project_name, label_id, reviewer, ReviewStatus.corrected, answer)


def _decide(db: Database, project_name: str, label_id, reviewer: str, verdict: ReviewStatus,
            answer=None) -> ReviewRow:
    label_id = whole_number(label_id, "pick a label to review (its id is a whole number)")
    with transaction(db) as s:
        project = find_project(s, project_name)
        model = _LABELS[project.mode]
        label = s.scalar(select(model).join(Item, model.item_id == Item.id)
                         .where(model.id == label_id, Item.project_id == project.id).with_for_update(of=model))
        if label is None:
            raise InputError(f"project {project.name!r} has no label {label_id}")
        user = ensure_user(s, reviewer)
        if label.user_id is not None and label.user_id == user.id:
            raise InputError(f"label {label_id} is your own: another reviewer must review it")
        rows = [label]
        if project.mode == Mode.pointwise:
            rows = s.scalars(select(Rating).where(Rating.item_id == label.item_id, Rating.user_id == label.user_id)
                             .order_by(Rating.id)).all() if label.user_id is not None else [label]
        if label.review_status != ReviewStatus.submitted:
            who = s.get(User, label.reviewer_id) if label.reviewer_id else None
            by = f" by {who.name}" if who else ""
            raise InputError(f"label {label_id} was already reviewed ({label.review_status.value}{by}): "
                             "a verdict is final")
        corrections = _corrections(s, project, label, rows, answer) if verdict == ReviewStatus.corrected else None
        now = utcnow()
        for n, row in enumerate(rows):
            row.review_status, row.reviewer_id, row.reviewed_at = verdict, user.id, now
            row.correction = corrections[n] if corrections else None
        s.flush()
        return _row(s, project, rows if project.mode == Mode.pointwise else label, {user.id: user.name})


def _corrections(s, project: Project, label, rows, answer) -> list[dict]:
    """One correction per stored row, checked like a label; refused when it says what the annotator said."""
    item = s.get(Item, label.item_id)
    if project.mode == Mode.pairwise:
        try:
            choice = Choice((answer or "").strip().lower().replace(" ", "_"))
        except (ValueError, AttributeError):
            raise InputError("a pairwise correction is one of a, b, tie or both_bad (sides as the annotator saw "
                             "them)") from None
        if choice == label.choice:
            raise InputError(f"the annotator already said {CHOICE_WORDS[choice]}: accept the label instead")
        return [{"choice": choice.value}]
    values = _numbers(answer)
    if project.mode == Mode.listwise:
        shown = _shown(item, label.shown_order)
        groups = validate_groups(ranks_to_groups([r.id for r in shown], values), {r.id for r in item.responses})
        if len(groups) < 2:
            raise InputError("all responses tied: a ranking needs at least two different ranks")
        if competition_ranks(groups) == competition_ranks(label.groups):
            raise InputError("that is the annotator's ranking: accept the label instead")
        return [{"groups": groups}]
    positions = {r.id: r.position for r in item.responses}
    rows = sorted(rows, key=lambda r: positions[r.response_id])
    if len(values) != len(rows):
        raise InputError(f"give a score for each of the {len(rows)} responses")
    scores = [whole_number(v, "every rating must be a whole number from 1 to 5") for v in values]
    if any(score not in range(1, 6) for score in scores):
        raise InputError("every rating must be a whole number from 1 to 5")
    if scores == [r.score for r in rows]:
        raise InputError("those are the annotator's ratings: accept the label instead")
    by_row = {id(r): {"score": score} for r, score in zip(rows, scores)}
    return [by_row[id(r)] for r in sorted(rows, key=lambda r: r.id)]


def _numbers(answer) -> list:
    if isinstance(answer, str):
        parts = [p for p in answer.replace(",", " ").split() if p]
        if not parts:
            raise InputError("type the corrected ranks or scores, one per response in the order shown, like 2, 1, 3")
        return parts
    if not answer:
        raise InputError("type the corrected ranks or scores, one per response in the order shown, like 2, 1, 3")
    return list(answer)
