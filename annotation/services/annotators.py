"""Who labelled what in a project: per-annotator counts, time per label and skip rate (Data tab).

A label is one submission: a pairwise choice, a ranking, or one item's ratings (a pointwise
submission stores a rating per response, all with the same time). The time per label is the
median of the time each item was on screen before its label, so one coffee break does not
swamp it. The skip rate is skips / (labels + skips): how often the annotator passed.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from sqlalchemy import func, select

from annotation.services.projects import find_project
from storage.db import Database, reading
from storage.models import Item, LabelSource, Mode, PairwiseLabel, Ranking, Rating, Skip, User

_LABELS = {Mode.pairwise: PairwiseLabel, Mode.listwise: Ranking, Mode.pointwise: Rating}


@dataclass
class AnnotatorStats:
    annotator: str
    labels: int
    median_seconds: float | None  # per label; None when no label recorded its time
    skips: int

    @property
    def skip_rate(self) -> float:
        seen = self.labels + self.skips
        return self.skips / seen if seen else 0.0


def annotator_stats(db: Database, project_name: str) -> list[AnnotatorStats]:
    """One row per annotator who labelled or skipped an item of the project, most labels first."""
    with reading(db) as s:
        project = find_project(s, project_name)
        model = _LABELS[project.mode]
        # (user, item) -> time on screen: one row per submission, whatever the mode wrote.
        times: dict[str, dict[int, int | None]] = {}
        rows = s.execute(select(User.name, model.item_id, func.max(model.time_taken_ms)).select_from(model)
                         .join(User, model.user_id == User.id).join(Item, model.item_id == Item.id)
                         .where(Item.project_id == project.id, model.source == LabelSource.human)
                         .group_by(User.name, model.item_id))
        for name, item_id, ms in rows:
            times.setdefault(name, {})[item_id] = ms
        skips = dict(s.execute(select(User.name, func.count()).select_from(Skip).join(User, Skip.user_id == User.id)
                               .join(Item, Skip.item_id == Item.id).where(Item.project_id == project.id)
                               .group_by(User.name)).all())
    stats = []
    for name in set(times) | set(skips):
        seconds = [ms / 1000 for ms in times.get(name, {}).values() if ms is not None]
        stats.append(AnnotatorStats(annotator=name, labels=len(times.get(name, {})),
                                    median_seconds=statistics.median(seconds) if seconds else None,
                                    skips=int(skips.get(name, 0))))
    return sorted(stats, key=lambda a: (-a.labels, a.annotator))
