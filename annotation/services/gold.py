"""Gold items: items with a known answer, mixed into every annotator's queue to measure accuracy.

An admin marks an item with its answer, given in the item's own response order (the order the
Team tab and the review queue show it in when no shuffle applies): a / b / tie / both_bad for
pairwise (a = the first response), ranks per response (1 = best) for listwise, scores 1-5 per
response for pointwise. Every annotator is served each gold item once, whatever the project's
overlap (labelling.next_item, Project.gold_share), and their accuracy is the share of gold units
(see annotation.services.units) where their answer equals the known one.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from annotation.services.labelling import ranks_to_groups, whole_number
from annotation.services.projects import find_project
from annotation.services.units import CHOICE_CODES, gold_units, label_units
from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.models import Item, Mode


def mark_gold(db: Database, project_name: str, item_id, answer) -> dict:
    """Give the item its known answer (replacing an earlier one); returns the stored answer."""
    item_id = whole_number(item_id, "give the id of the item to mark as gold (a whole number)")
    with transaction(db) as s:
        project = find_project(s, project_name)
        item = s.get(Item, item_id)
        if item is None or item.project_id != project.id:
            raise InputError(f"project {project.name!r} has no item {item_id}")
        item.gold_answer = _answer(project.mode, len(item.responses), answer)
        return item.gold_answer


def unmark_gold(db: Database, project_name: str, item_id) -> None:
    item_id = whole_number(item_id, "give the id of the gold item (a whole number)")
    with transaction(db) as s:
        project = find_project(s, project_name)
        item = s.get(Item, item_id)
        if item is None or item.project_id != project.id or item.gold_answer is None:
            raise InputError(f"project {project.name!r} has no gold item {item_id}")
        item.gold_answer = None


def _answer(mode: Mode, k: int, answer) -> dict:
    if mode == Mode.pairwise:
        choice = str(answer or "").strip().lower().replace(" ", "_")
        if choice not in CHOICE_CODES:
            raise InputError("a pairwise gold answer is a (the first response), b, tie or both_bad")
        return {"choice": choice}
    values = [v for v in str(answer or "").replace(",", " ").split()] if not isinstance(answer, list) else answer
    if mode == Mode.listwise:
        ranks = [whole_number(v, "every response needs a rank: a whole number") for v in values]
        groups = ranks_to_groups(list(range(k)), ranks)  # checks the count and the range
        if len(groups) < 2:
            raise InputError("all responses tied: a gold ranking needs at least two different ranks")
        return {"ranks": ranks}
    if len(values) != k:
        raise InputError(f"give a score for each of the {k} responses")
    scores = [whole_number(v, "every rating must be a whole number from 1 to 5") for v in values]
    if any(score not in range(1, 6) for score in scores):
        raise InputError("every rating must be a whole number from 1 to 5")
    return {"scores": scores}


@dataclass
class GoldItem:
    item_id: int
    prompt: str
    answer: dict


def gold_items(db: Database, project_name: str) -> list[GoldItem]:
    with reading(db) as s:
        project = find_project(s, project_name)
        items = s.scalars(select(Item).where(Item.project_id == project.id, Item.gold_answer.is_not(None))
                          .order_by(Item.id)).all()
        return [GoldItem(i.id, i.prompt.messages[-1]["content"], i.gold_answer) for i in items]


@dataclass
class GoldAccuracy:
    annotator: str
    items: int  # gold items labelled
    units: int  # gold units compared (a pairwise item is one; a list of K responses is K)
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.units if self.units else None


def gold_accuracy(db: Database, project_name: str) -> dict[str, GoldAccuracy]:
    """Per annotator: how their answers on gold items compare with the known answers."""
    with reading(db) as s:
        project = find_project(s, project_name)
        items = s.scalars(select(Item).where(Item.project_id == project.id, Item.gold_answer.is_not(None))).all()
        known = {unit: value for item in items for unit, value in gold_units(item, project.mode).items()}
        result: dict[str, GoldAccuracy] = {}
        seen: dict[str, set[int]] = {}
        for u in label_units(s, project, item_ids=[i.id for i in items]):
            if u.unit not in known:
                continue
            row = result.setdefault(u.annotator, GoldAccuracy(u.annotator, 0, 0, 0))
            seen.setdefault(u.annotator, set()).add(u.item_id)
            row.units += 1
            row.correct += int(u.value == known[u.unit])
        for name, row in result.items():
            row.items = len(seen[name])
        return result
