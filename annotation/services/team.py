"""What a project's team looks like: per-annotator work and quality, and the project's agreement.

Brings together the counts of annotation.services.annotators (labels, time per label, skip rate),
agreement (annotation.services.agreement on the units of annotation.services.units), gold accuracy
(annotation.services.gold) and review outcomes, for the Team tab and the datasheet written beside
an export.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from annotation.services.agreement import BOOTSTRAP_SAMPLES, AgreementReport, ReliabilityTable, agreement_report
from annotation.services.annotators import annotator_stats
from annotation.services.gold import gold_accuracy
from annotation.services.projects import find_project
from annotation.services.units import LEVELS, label_units
from storage.db import Database, reading
from storage.models import Item, Mode, PairwiseLabel, Ranking, Rating, ReviewStatus, User

_LABELS = {Mode.pairwise: PairwiseLabel, Mode.listwise: Ranking, Mode.pointwise: Rating}


def project_agreement(db: Database, project_name: str, samples: int = BOOTSTRAP_SAMPLES,
                      seed: int = 0) -> AgreementReport:
    """Agreement among the project's annotators: nominal for pairwise choices, ordinal for ranks and ratings."""
    with reading(db) as s:
        project = find_project(s, project_name)
        units = list(label_units(s, project))
        level = LEVELS[project.mode]
    table = ReliabilityTable.from_triples((u.unit, u.annotator, u.value) for u in units)
    return agreement_report(table, level, samples=samples, seed=seed)


def review_counts(db: Database, project_name: str) -> dict[str, dict[str, int]]:
    """annotator -> review status -> submissions (a pointwise item's ratings count once).
    Imported labels are under the name "(imported)"."""
    with reading(db) as s:
        project = find_project(s, project_name)
        model = _LABELS[project.mode]
        submission = func.count(func.distinct(model.item_id)) if project.mode == Mode.pointwise else func.count()
        rows = s.execute(select(User.name, model.review_status, submission).select_from(model)
                         .join(Item, model.item_id == Item.id).outerjoin(User, model.user_id == User.id)
                         .where(Item.project_id == project.id).group_by(User.name, model.review_status)).all()
    counts: dict[str, dict[str, int]] = {}
    for name, status, n in rows:
        per = counts.setdefault(name or "(imported)", {s.value: 0 for s in ReviewStatus})
        per[status.value] += int(n)
    return counts


@dataclass
class AnnotatorRow:
    annotator: str
    labels: int
    median_seconds: float | None
    skip_rate: float
    with_majority: float | None  # agreement with the other annotators' majority
    majority_units: int
    gold_accuracy: float | None
    gold_units: int
    reviews: dict[str, int] = field(default_factory=dict)


@dataclass
class TeamReport:
    project: str
    mode: str
    annotators: list[AnnotatorRow]
    agreement: AgreementReport

    def as_dict(self) -> dict:
        return {"project": self.project, "mode": self.mode,
                "annotators": [vars(a) for a in self.annotators], "agreement": self.agreement.as_dict()}


def team_report(db: Database, project_name: str, samples: int = BOOTSTRAP_SAMPLES) -> TeamReport:
    """One row per annotator of the project, and the project's agreement figures."""
    agreement = project_agreement(db, project_name, samples=samples)
    gold = gold_accuracy(db, project_name)
    reviews = review_counts(db, project_name)
    with reading(db) as s:
        mode = find_project(s, project_name).mode.value
    rows = []
    for a in annotator_stats(db, project_name):
        majority = agreement.majority.get(a.annotator)
        on_gold = gold.get(a.annotator)
        rows.append(AnnotatorRow(
            annotator=a.annotator, labels=a.labels, median_seconds=a.median_seconds, skip_rate=a.skip_rate,
            with_majority=majority.agreement if majority else None, majority_units=majority.units if majority else 0,
            gold_accuracy=on_gold.accuracy if on_gold else None, gold_units=on_gold.units if on_gold else 0,
            reviews=reviews.get(a.annotator, {})))
    return TeamReport(project_name, mode, rows, agreement)
