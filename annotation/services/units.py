"""Labels as reliability units: what each annotator said about each unit, as a number.

The unit of agreement (and of gold accuracy) follows the mode: a pairwise item is one unit whose
value is a nominal code (CHOICE_CODES, in the item's own response order, whichever side each
response was shown on); a listwise or pointwise item gives one unit per response, its rank
(1 = best, competition ranks) or its rating, both ordinal. The annotator's own answer counts here,
not a reviewer's correction: these numbers measure the annotators.
Imported labels (no annotator) and arena votes (Compare tab items) are left out.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import selectinload

from annotation.services.agreement import NOMINAL, ORDINAL
from annotation.services.labelling import ARENA_SOURCE, competition_ranks
from storage.models import Choice, Item, Mode, PairwiseLabel, Project, Ranking, Rating, Response

#: A pairwise answer as a code, in the item's order: the first response (position 0) preferred, the
#: second, tie, both bad.
CHOICE_CODES = {"a": 0, "b": 1, "tie": 2, "both_bad": 3}
LEVELS = {Mode.pairwise: NOMINAL, Mode.listwise: ORDINAL, Mode.pointwise: ORDINAL}


@dataclass(frozen=True)
class UnitValue:
    item_id: int
    unit: tuple[int, int]  # (item id, response position); pairwise: (item id, 0)
    annotator: str
    value: float


def pairwise_code(label: PairwiseLabel, positions: dict[int, int]) -> int:
    """The label's answer in the item's order (A and B are the sides as shown)."""
    preferred = {Choice.a: label.response_a_id, Choice.b: label.response_b_id}.get(label.choice)
    if preferred is None:
        return CHOICE_CODES[label.choice.value]
    return positions[preferred]


def label_units(session, project: Project, item_ids=None) -> Iterator[UnitValue]:
    """Every annotator's value on every unit of the project (optionally of the given items only)."""
    model = {Mode.pairwise: PairwiseLabel, Mode.listwise: Ranking, Mode.pointwise: Rating}[project.mode]
    arena = exists().where(Response.item_id == Item.id, Response.source == ARENA_SOURCE)
    stmt = (select(model).join(Item, model.item_id == Item.id)
            .where(Item.project_id == project.id, model.user_id.is_not(None), ~arena)
            .options(selectinload(model.user)).order_by(model.id))
    if item_ids is not None:
        stmt = stmt.where(model.item_id.in_(item_ids))
    labels = session.scalars(stmt).all()
    positions = dict(session.execute(select(Response.id, Response.position).join(Item, Response.item_id == Item.id)
                                     .where(Item.project_id == project.id)).all())
    for label in labels:
        name = label.user.name
        if project.mode == Mode.pairwise:
            yield UnitValue(label.item_id, (label.item_id, 0), name, pairwise_code(label, positions))
        elif project.mode == Mode.listwise:
            for rid, rank in competition_ranks(label.groups).items():
                yield UnitValue(label.item_id, (label.item_id, positions[rid]), name, rank)
        else:
            yield UnitValue(label.item_id, (label.item_id, positions[label.response_id]), name, label.score)


def gold_units(item: Item, mode: Mode) -> dict[tuple[int, int], float]:
    """A gold item's known answer as unit values (see Item.gold_answer)."""
    answer = item.gold_answer or {}
    if mode == Mode.pairwise:
        return {(item.id, 0): CHOICE_CODES[answer["choice"]]}
    if mode == Mode.listwise:
        ranks = answer["ranks"]
        # Competition ranks, so that "1, 1, 2" and "1, 1, 3" (the same order) read the same.
        groups: dict[int, list[int]] = {}
        for position, rank in enumerate(ranks):
            groups.setdefault(rank, []).append(position)
        by_position = competition_ranks([groups[r] for r in sorted(groups)])
        return {(item.id, p): by_position[p] for p in range(len(ranks))}
    return {(item.id, p): score for p, score in enumerate(answer["scores"])}
