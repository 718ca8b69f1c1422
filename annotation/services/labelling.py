"""The annotate loop: serve the next item, record a label, skip, undo.

An `ItemView` is what one annotator was shown: the item, its responses in the (randomised) order
shown, and a fresh client token. The UI keeps it in per-session state and hands it back with the
label, so the label records exactly what was on screen. Each submission is one transaction and is
idempotent: the same token (double click, network retry) returns the first receipt, and the
(item, annotator) unique constraints stop a second label for the same item.
"""
from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, case, delete, exists, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from annotation.services.projects import ensure_user, find_project
from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.models import (
    Choice,
    Item,
    ItemStatus,
    LabelSource,
    Mode,
    PairwiseLabel,
    Project,
    QueueOrder,
    Ranking,
    Rating,
    Response,
    ReviewStatus,
    Rewrite,
    Skip,
    User,
)

ARENA_SOURCE = "arena"  # responses of blind-arena votes (annotation.services.arena.SOURCE)

LEASE = timedelta(minutes=10)
# Nobody reads an item and decides in less: a submit sooner after the item was served is a script
# chaining submits (the drill labelled items that were on screen for 40 ms), refused with a message.
# The UI passes its own minimum (`serve --min-label-seconds`); the services' callers (the CLI, tests,
# imports) pass none.
DEFAULT_MIN_DWELL_MS = 300
MAX_RATIONALE_CHARS = 10_000
MAX_REWRITE_CHARS = 100_000


@dataclass
class ShownResponse:
    id: int
    position: int  # position within the item as generated
    text: str
    truncated: bool = False  # generation stopped at the token limit, not at its end


@dataclass
class ItemView:
    item_id: int
    project: str
    mode: str
    user: str
    prompt_messages: list[dict[str, str]]
    is_chat: bool
    responses: list[ShownResponse]  # in the order shown: responses[0] is A / the first card
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    shown_at: float = field(default_factory=time.time)

    @property
    def shown_order(self) -> list[int]:
        return [r.position for r in self.responses]

    def elapsed_ms(self) -> int:
        return max(0, int((time.time() - self.shown_at) * 1000))


@dataclass
class Receipt:
    kind: str  # "pairwise" | "ranking" | "ratings" | "skip"
    item_id: int
    label_ids: list[int]
    duplicate: bool = False  # True when this submission had already been recorded


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; they were stored in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _label_model(mode: Mode):
    return {Mode.pairwise: PairwiseLabel, Mode.listwise: Ranking, Mode.pointwise: Rating}[mode]


def _labelled_by(mode: Mode, user_id: int):
    model = _label_model(mode)
    return exists().where(model.item_id == Item.id, model.user_id == user_id)


def _label_count(session, item: Item, mode: Mode) -> int:
    model = _label_model(mode)
    column = model.user_id
    return int(session.scalar(select(func.count(func.distinct(column))).where(model.item_id == item.id)) or 0)


def next_item(db: Database, project_name: str, user_name: str, rng: random.Random | None = None) -> ItemView | None:
    """Lease and return the next item this annotator has not labelled or skipped (None when none)."""
    rng = rng or random.Random()
    now = _now()
    with transaction(db) as s:
        project = find_project(s, project_name)
        user = ensure_user(s, user_name)
        stmt = (
            select(Item)
            .where(*_eligible(project, user, now))
            # Resume an item this annotator was already shown before taking a new one (a CASE, not
            # `leased_by == user` DESC: engines sort its NULLs differently); then a gold item or not
            # (Project.gold_share); then the project's queue order; oldest first among equals.
            .order_by(case((Item.leased_by == user.id, 0), else_=1), *_gold_order(s, project, rng),
                      *_queue_order(s, project), Item.id)
            .limit(1)
        )
        if project.overlap == 1:
            # PostgreSQL: lock the row being leased and skip rows another annotator is leasing right
            # now, so two annotators never take the same item and neither waits for the other.
            # SQLite ignores this: its write transactions (BEGIN IMMEDIATE) already run one at a time.
            stmt = stmt.with_for_update(skip_locked=True, of=Item)
        item = s.scalar(stmt)
        if item is None:
            return None
        item.leased_by, item.lease_expires = user.id, now + LEASE
        responses = [ShownResponse(r.id, r.position, r.text, truncated=r.finish_reason == "length")
                     for r in item.responses]
        rng.shuffle(responses)  # randomised sides / card order; the order is recorded with the label
        return ItemView(item_id=item.id, project=project.name, mode=project.mode.value, user=user.name,
                        prompt_messages=item.prompt.messages, is_chat=item.prompt.is_chat, responses=responses)


def _eligible(project: Project, user: User, now: datetime) -> list:
    """The items `next_item` may serve this annotator: not labelled or skipped by them, and either
    a gold item (every annotator labels each one, whatever the overlap) or ready and, with overlap
    1, not leased to someone else."""
    lease_free = or_(Item.leased_by.is_(None), Item.leased_by == user.id, Item.lease_expires < now)
    # With overlap 1 a lease keeps two annotators off the same item; with more, all may see it.
    regular = and_(Item.gold_answer.is_(None), Item.status == ItemStatus.ready,
                   lease_free if project.overlap == 1 else true())
    return [Item.project_id == project.id, or_(regular, Item.gold_answer.is_not(None)),
            ~_labelled_by(project.mode, user.id),
            ~exists().where(Skip.item_id == Item.id, Skip.user_id == user.id)]


def _gold_order(session, project: Project, rng: random.Random) -> list:
    """Gold items first with probability Project.gold_share, else last: about that share of an
    annotator's items are gold while they have gold items left. No draw when the project has none,
    so a seeded queue without gold is served as before."""
    has_gold = session.scalar(select(Item.id).where(Item.project_id == project.id,
                                                    Item.gold_answer.is_not(None)).limit(1))
    if has_gold is None:
        return []
    gold_first = rng.random() < project.gold_share
    return [case((Item.gold_answer.is_not(None), 0 if gold_first else 1), else_=1 if gold_first else 0)]


def release(db: Database, view: ItemView) -> None:
    """Give back the lease on an item shown but not labelled (the annotator changed name or project),
    so others may take it now rather than when the lease runs out."""
    with transaction(db) as s:
        item = s.get(Item, view.item_id)
        user = s.scalar(select(User).where(User.name == view.user))
        if item is not None and user is not None and item.leased_by == user.id:
            item.leased_by, item.lease_expires = None, None


# ---------------------------------------------------------------------------------------------
# What to label next (Project.queue_order). Only the order changes: which items are eligible, the
# leases and the overlap are decided by the filters of `next_item` alone.
# ---------------------------------------------------------------------------------------------

def _queue_order(session, project: Project) -> list:
    if project.queue_order == QueueOrder.uncertainty:
        return _uncertainty_order()
    if project.queue_order == QueueOrder.disagreement:
        disputed = disputed_item_ids(session, project)
        return [case((Item.id.in_(disputed), 0), else_=1)] if disputed else []
    return []  # random: the generator's order (oldest first), itself random over prompts


def _uncertainty_order() -> list:
    """The reward model's closest call first: smallest score gap, items not (fully) scored last.

    The gap is min over pairs i < j of |r_i - r_j|: for a pair that is |r_a - r_b|, and for a list
    it equals the smallest gap between adjacent scores once sorted, the two responses the reward
    model can least tell apart.
    """
    first, second = aliased(Response), aliased(Response)
    gap = (select(func.min(func.abs(first.rm_score - second.rm_score)))
           .where(first.item_id == Item.id, second.item_id == Item.id, first.position < second.position)
           .scalar_subquery())
    unscored = exists().where(Response.item_id == Item.id, Response.rm_score.is_(None))
    return [case((or_(unscored, gap.is_(None)), 1), else_=0), gap]


def _pairwise_outcome(label: PairwiseLabel) -> int | None:
    """The response the annotator preferred, whichever side it was shown on (None: tie or both bad)."""
    return {Choice.a: label.response_a_id, Choice.b: label.response_b_id}.get(label.choice)


def _rankings_disagree(first: list[list[int]], second: list[list[int]]) -> bool:
    """True when some pair of responses is ordered differently (i above j vs j above i or tied)."""
    rank_1 = {rid: g for g, group in enumerate(first) for rid in group}
    rank_2 = {rid: g for g, group in enumerate(second) for rid in group}
    ids = sorted(rank_1)

    def sign(x: int) -> int:
        return (x > 0) - (x < 0)

    return any(sign(rank_1[i] - rank_1[j]) != sign(rank_2.get(i, 0) - rank_2.get(j, 0))
               for n, i in enumerate(ids) for j in ids[n + 1:])


RATING_DISAGREEMENT = 2  # ratings of one response 2+ points apart; one point is ordinary noise on 1-5


def disputed_item_ids(session, project: Project) -> list[int]:
    """Ready items of the project whose annotators disagree so far.

    Pairwise: labels prefer different responses (or one prefers a response, another calls a tie
    or both bad). Listwise: two rankings order some pair of responses differently. Pointwise: two
    ratings of one response are RATING_DISAGREEMENT or more points apart.
    """
    ready = select(Item.id).where(Item.project_id == project.id, Item.status == ItemStatus.ready)
    if project.mode == Mode.pointwise:
        spread = (select(Rating.item_id).where(Rating.item_id.in_(ready)).group_by(Rating.response_id, Rating.item_id)
                  .having(func.max(Rating.score) - func.min(Rating.score) >= RATING_DISAGREEMENT))
        return sorted(set(session.scalars(spread)))
    if project.mode == Mode.pairwise:
        outcomes: dict[int, set] = {}
        for label in session.scalars(select(PairwiseLabel).where(PairwiseLabel.item_id.in_(ready))):
            outcomes.setdefault(label.item_id, set()).add(_pairwise_outcome(label))
        return sorted(item_id for item_id, seen in outcomes.items() if len(seen) > 1)
    rankings: dict[int, list[list[list[int]]]] = {}
    for item_id, groups in session.execute(select(Ranking.item_id, Ranking.groups).where(Ranking.item_id.in_(ready))):
        rankings.setdefault(item_id, []).append(groups)
    return sorted(item_id for item_id, rows in rankings.items()
                  if any(_rankings_disagree(rows[0], other) for other in rows[1:]))


class ItemClosed(InputError):
    """The item already has every label its project asks for: this one is refused, not stored."""


class TooFast(InputError):
    """The submit came sooner after the item was shown than anyone can read it."""


def check_dwell(view: ItemView, min_dwell_ms: int) -> None:
    """Refuse a label given less than ``min_dwell_ms`` after the item was served (``shown_at`` is set
    on the server and kept in server-side session state: a client cannot set it)."""
    elapsed = view.elapsed_ms()
    if elapsed < min_dwell_ms:
        raise TooFast(f"item {view.item_id} was on screen for only {elapsed} ms: read it before submitting "
                      "(your answer is still in the form; submit again)")


def _check_open(s, item: Item, project: Project) -> None:
    """An item that has reached its overlap takes no more labels (an annotator who kept it on screen
    while others finished it is told, and keeps what they typed). A gold item takes one label from
    every annotator, whatever the overlap: that is how their accuracy is measured."""
    if item.gold_answer is not None:
        return
    labels = _label_count(s, item, project.mode)
    if labels >= project.overlap or item.status == ItemStatus.done:
        raise ItemClosed(f"item {item.id} already has all the labels it needs ({labels} of {project.overlap}), "
                         "so yours was not saved. Your text is still in the form if you want to keep it; "
                         "Skip moves on to the next item.")


def _load_for_submit(s, view: ItemView, mode: Mode) -> tuple[Item, Project, User]:
    # Locked (PostgreSQL; SQLite writes one at a time anyway), so two annotators cannot both take
    # an item's last place.
    item = s.get(Item, view.item_id, with_for_update=True)
    if item is None:
        raise InputError(f"unknown item {view.item_id}")
    project = s.get(Project, item.project_id)
    if project.mode != mode:
        raise InputError(f"item {item.id} belongs to a {project.mode.value} project, not {mode.value}")
    known = {r.id for r in item.responses}
    for r in view.responses:
        if r.id not in known:
            raise InputError(f"unknown response id {r.id} for item {item.id}")
    return item, project, ensure_user(s, view.user)


def _finish_item(s, item: Item, project: Project) -> None:
    s.flush()
    if _label_count(s, item, project.mode) >= project.overlap:
        item.status = ItemStatus.done
    item.leased_by, item.lease_expires = None, None


def _clean_text(value: str | None, what: str, limit: int) -> str | None:
    value = (value or "").strip()
    if len(value) > limit:
        raise InputError(f"{what} is {len(value)} characters long (limit {limit})")
    return value or None


def _existing(s, model, view: ItemView, user_id: int):
    """A label already recorded for this token, or by this annotator for this item."""
    return s.scalar(select(model).where(or_(model.client_token == view.token,
                                            (model.item_id == view.item_id) & (model.user_id == user_id))))


def idempotent(submit):
    """Run a submission; if a concurrent duplicate won the race on a unique constraint, report it."""
    def wrapper(db: Database, view: ItemView, *args, **kwargs) -> Receipt:
        try:
            return submit(db, view, *args, **kwargs)
        except IntegrityError:
            receipt = submit(db, view, *args, **kwargs)  # now finds the existing label
            receipt.duplicate = True
            return receipt
    wrapper.__doc__, wrapper.__name__ = submit.__doc__, submit.__name__
    return wrapper


@idempotent
def submit_pairwise(db: Database, view: ItemView, choice: str, strength: int | None = None,
                    rationale: str | None = None, rewrite: str | None = None) -> Receipt:
    """Record A/B/tie/both-bad for a pairwise item (and the rewrite written after "both bad")."""
    if not choice:
        raise InputError("pick A, B, tie or both bad first (keys 1-4)")
    try:
        choice_enum = Choice(choice)
    except ValueError:
        raise InputError(f"unknown choice {choice!r}: use a, b, tie or both_bad") from None
    if strength is not None and strength not in (1, 2, 3):
        raise InputError("strength must be 1 (slightly), 2 (clearly) or 3 (much) better")
    if len(view.responses) != 2:
        raise InputError("a pairwise label needs exactly two responses")
    rationale = _clean_text(rationale, "rationale", MAX_RATIONALE_CHARS)
    rewrite = _clean_text(rewrite, "rewrite", MAX_REWRITE_CHARS)
    if rewrite and choice_enum != Choice.both_bad:
        raise InputError("a rewrite goes with 'both bad'")
    with transaction(db) as s:
        item, project, user = _load_for_submit(s, view, Mode.pairwise)
        found = _existing(s, PairwiseLabel, view, user.id)
        if found is not None:
            return Receipt("pairwise", item.id, [found.id], duplicate=True)
        _check_open(s, item, project)
        label = PairwiseLabel(
            prompt_id=item.prompt_id, item_id=item.id, user_id=user.id,
            response_a_id=view.responses[0].id, response_b_id=view.responses[1].id,
            shown_order=view.shown_order, choice=choice_enum,
            strength=strength if choice_enum in (Choice.a, Choice.b) else None,
            rationale=rationale, source=LabelSource.human, time_taken_ms=view.elapsed_ms(),
            client_token=view.token,
        )
        s.add(label)
        if rewrite:
            label.rewrite = Rewrite(prompt_id=item.prompt_id, user_id=user.id, text=rewrite)
        _finish_item(s, item, project)
        return Receipt("pairwise", item.id, [label.id])


def whole_number(value, what: str) -> int:
    """``value`` as an int when it is one (3, 3.0, "3"); else InputError "{what}, got ..." (never rounds:
    2.7 is refused, not stored as 2; NaN and infinity are refused, not a crash)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InputError(f"{what}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what}, got {'nothing' if value is None else repr(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InputError(f"{what}, got {value:g}")
    return int(value)


def validate_groups(groups: list[list[int]], response_ids: set[int]) -> list[list[int]]:
    """A ranking must be a permutation of the item's responses (ties = ids in one group)."""
    groups = [list(g) for g in groups if len(g)]
    flat = [rid for g in groups for rid in g]
    unknown = sorted(set(flat) - response_ids)
    if unknown:
        raise InputError(f"unknown response id(s) in ranking: {unknown}")
    if len(flat) != len(set(flat)):
        raise InputError("the ranking lists a response more than once: it must be a permutation")
    missing = sorted(response_ids - set(flat))
    if missing:
        raise InputError(f"the ranking leaves out response(s) {missing}: rank every response")
    return groups


def groups_from_ranks(view: ItemView, ranks: list[int]) -> list[list[int]]:
    """UI helper: rank numbers per shown card (1 = best, equal numbers = tie) -> groups best first."""
    return ranks_to_groups([r.id for r in view.responses], ranks)


def ranks_to_groups(response_ids: list[int], ranks: list[int]) -> list[list[int]]:
    """Rank numbers per response (1 = best, equal numbers = tie) -> groups of response ids, best first."""
    if len(ranks) != len(response_ids):
        raise InputError(f"give a rank to each of the {len(response_ids)} responses")
    n = len(response_ids)
    by_rank: dict[int, list[int]] = {}
    for rid, rank in zip(response_ids, ranks):
        rank = whole_number(rank, "every response needs a rank: a whole number")
        if not 1 <= rank <= n:
            raise InputError(f"every response needs a rank from 1 to {n} (1 = best; equal numbers = tie)")
        by_rank.setdefault(rank, []).append(rid)
    return [by_rank[k] for k in sorted(by_rank)]


def competition_ranks(groups: list[list[int]]) -> dict[int, int]:
    """Response id -> rank as typed in the UI (1 = best): a group of two at the top is rank 1, the next rank 3."""
    rank_of, rank = {}, 1
    for group in groups:
        rank_of.update({rid: rank for rid in group})
        rank += len(group)
    return rank_of


@idempotent
def submit_ranking(db: Database, view: ItemView, groups: list[list[int]], rationale: str | None = None) -> Receipt:
    """Record a full order of the item's responses, best first, ties allowed."""
    rationale = _clean_text(rationale, "rationale", MAX_RATIONALE_CHARS)
    with transaction(db) as s:
        item, project, user = _load_for_submit(s, view, Mode.listwise)
        groups = validate_groups(groups, {r.id for r in item.responses})
        if len(groups) < 2:
            raise InputError("all responses tied: a ranking needs at least two different ranks")
        found = _existing(s, Ranking, view, user.id)
        if found is not None:
            return Receipt("ranking", item.id, [found.id], duplicate=True)
        _check_open(s, item, project)
        ranking = Ranking(prompt_id=item.prompt_id, item_id=item.id, user_id=user.id, groups=groups,
                          shown_order=view.shown_order, rationale=rationale, source=LabelSource.human,
                          time_taken_ms=view.elapsed_ms(), client_token=view.token)
        s.add(ranking)
        _finish_item(s, item, project)
        return Receipt("ranking", item.id, [ranking.id])


@idempotent
def submit_ratings(db: Database, view: ItemView, scores: list[int], rationale: str | None = None) -> Receipt:
    """Record a 1-5 rating for each response shown (scores in shown order)."""
    rationale = _clean_text(rationale, "rationale", MAX_RATIONALE_CHARS)
    if len(scores) != len(view.responses):
        raise InputError(f"rate each of the {len(view.responses)} responses")
    scores = [whole_number(score, "every rating must be a whole number from 1 to 5") for score in scores]
    if any(score not in range(1, 6) for score in scores):
        raise InputError("every rating must be a whole number from 1 to 5")
    with transaction(db) as s:
        item, project, user = _load_for_submit(s, view, Mode.pointwise)
        tokens = [f"{view.token}:{r.id}" for r in view.responses]
        found = s.scalars(select(Rating).where(or_(Rating.client_token.in_(tokens),
                                                   (Rating.item_id == item.id) & (Rating.user_id == user.id)))).all()
        if found:
            return Receipt("ratings", item.id, [r.id for r in found], duplicate=True)
        _check_open(s, item, project)
        ratings = [Rating(response_id=r.id, item_id=item.id, user_id=user.id, score=int(score),
                          rationale=rationale, source=LabelSource.human, time_taken_ms=view.elapsed_ms(),
                          client_token=token)
                   for r, score, token in zip(view.responses, scores, tokens)]
        s.add_all(ratings)
        _finish_item(s, item, project)
        return Receipt("ratings", item.id, [r.id for r in ratings])


def skip(db: Database, view: ItemView) -> Receipt:
    """Pass on an item: it is not shown to this annotator again, and others may take it."""
    with transaction(db) as s:
        item = s.get(Item, view.item_id)
        if item is None:
            raise InputError(f"unknown item {view.item_id}")
        user = ensure_user(s, view.user)
        found = s.scalar(select(Skip).where(Skip.item_id == item.id, Skip.user_id == user.id))
        if found is None:
            found = Skip(item_id=item.id, user_id=user.id)
            s.add(found)
        if item.leased_by == user.id:
            item.leased_by, item.lease_expires = None, None
        s.flush()
        return Receipt("skip", item.id, [found.id])


@dataclass
class Undone:
    """The label undo removed, kept by response id so it can be put back on screen whatever
    order the responses come back in."""
    item_id: int
    kind: str
    preferred: int | str | None = None  # pairwise: the response id preferred, or "tie" / "both_bad"
    strength: int | None = None
    rationale: str | None = None
    rewrite: str | None = None
    rank_of: dict[int, int] = field(default_factory=dict)  # listwise: response id -> rank (1 = best)
    score_of: dict[int, int] = field(default_factory=dict)  # pointwise: response id -> rating

    def choice_as_shown(self, view: ItemView) -> str | None:
        """The pairwise choice in the sides `view` shows (a / b / tie / both_bad)."""
        if isinstance(self.preferred, str):
            return self.preferred
        sides = {r.id: side for r, side in zip(view.responses, "ab")}
        return sides.get(self.preferred)

    def ranks_as_shown(self, view: ItemView) -> list[int | None]:
        return [self.rank_of.get(r.id) for r in view.responses]

    def scores_as_shown(self, view: ItemView) -> list[int | None]:
        return [self.score_of.get(r.id) for r in view.responses]


def _undone(project: Project, item: Item, last, ratings: list[Rating]) -> Undone:
    undone = Undone(item_id=item.id, kind=project.mode.value, rationale=last.rationale)
    if project.mode == Mode.pairwise:
        undone.preferred = _pairwise_outcome(last) or last.choice.value
        undone.strength = last.strength
        undone.rewrite = last.rewrite.text if last.rewrite is not None else None
    elif project.mode == Mode.listwise:
        undone.rank_of = competition_ranks(last.groups)
    else:
        undone.score_of = {r.response_id: r.score for r in ratings}
    return undone


def undo_last(db: Database, project_name: str, user_name: str) -> Undone | None:
    """Delete this annotator's most recent label in the project; its item comes back to them first.
    Returns what the label said, so the UI can show it again for editing."""
    with transaction(db) as s:
        project = find_project(s, project_name)
        user = ensure_user(s, user_name)
        model = _label_model(project.mode)
        # Arena votes are labels too, but on items of the Compare tab that never enter the queue:
        # undo in the Annotate tab must not bring them back as items to label.
        arena_item = exists().where(Response.item_id == Item.id, Response.source == ARENA_SOURCE)
        last = s.scalar(select(model).join(Item, model.item_id == Item.id)
                        .where(Item.project_id == project.id, model.user_id == user.id,
                               model.source == LabelSource.human, ~arena_item)
                        .order_by(model.created_at.desc(), model.id.desc()).limit(1))
        if last is None:
            return None
        if last.review_status != ReviewStatus.submitted:
            # The reviewer's verdict is about this label: deleting it would silently drop the review.
            raise InputError(f"your last label was already reviewed ({last.review_status.value}): "
                             "it can no longer be undone")
        item = s.get(Item, last.item_id)
        ratings = []
        if project.mode == Mode.pointwise:
            ratings = s.scalars(select(Rating).where(Rating.item_id == item.id, Rating.user_id == user.id)).all()
        undone = _undone(project, item, last, ratings)
        if project.mode == Mode.pointwise:
            # One pointwise submission wrote a rating per response: remove them together.
            s.execute(delete(Rating).where(Rating.item_id == item.id, Rating.user_id == user.id))
        else:
            s.delete(last)
        s.flush()
        item.status = ItemStatus.ready
        item.leased_by, item.lease_expires = user.id, _now() + LEASE
        return undone


@dataclass
class Progress:
    mine: int  # items this annotator has labelled in the project
    done: int  # items with all the labels the project asks for
    ready: int  # items generated and waiting for labels (from anyone)
    prompts_without_items: int
    for_you: int = 0  # ready items this annotator may take now (what next_item can serve)
    skipped: int = 0  # ready items this annotator skipped
    generating: bool = False  # the generator will make more items (prompts left and the queue below target)

    def nothing_for_you(self) -> str:
        """Why the annotator has no item, in words that match the counts beside them."""
        if self.generating:
            return "No items ready for you right now: the generator is working on more; this page checks again."
        reasons = []
        if self.skipped:
            reasons.append(f"{self.skipped} item(s) left are ones you skipped")
        others = self.ready - self.skipped - self.for_you
        if others > 0:
            reasons.append(f"{others} item(s) are with other annotators or labelled by you already")
        if reasons:
            return (f"Nothing left for you in this project: {'; '.join(reasons)}. "
                    "Add prompts in the Projects tab for more.")
        return "Every item of this project is labelled. Add prompts in the Projects tab for more."


def progress(db: Database, project_name: str, user_name: str | None) -> Progress:
    from storage.models import Prompt  # local: only this query needs it

    with reading(db) as s:
        project = find_project(s, project_name)
        model = _label_model(project.mode)
        counts = dict(s.execute(select(Item.status, func.count()).where(Item.project_id == project.id)
                                .group_by(Item.status)).all())
        pending = int(s.scalar(select(func.count()).select_from(Prompt)
                               .where(Prompt.project_id == project.id)
                               .where(~exists().where(Item.prompt_id == Prompt.id))) or 0)
        ready = counts.get(ItemStatus.ready, 0)
        result = Progress(mine=0, done=counts.get(ItemStatus.done, 0), ready=ready, prompts_without_items=pending,
                          for_you=ready, generating=pending > 0 and ready < project.queue_target)
        user = s.scalar(select(User).where(User.name == user_name.strip())) if user_name else None
        if user is None:
            return result
        result.mine = int(s.scalar(select(func.count(func.distinct(model.item_id))).join(Item, model.item_id == Item.id)
                                   .where(Item.project_id == project.id, model.user_id == user.id)) or 0)
        result.skipped = int(s.scalar(select(func.count()).select_from(Item).where(
            Item.project_id == project.id, Item.status == ItemStatus.ready,
            exists().where(Skip.item_id == Item.id, Skip.user_id == user.id))) or 0)
        result.for_you = int(s.scalar(select(func.count()).select_from(Item)
                                      .where(*_eligible(project, user, _now()))) or 0)
        return result
