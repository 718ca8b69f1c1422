"""Projects and users: create, update, look up, and the counts the data tab shows.

Every function is one user action and owns one transaction; bad input raises InputError before
anything is written.
"""
from __future__ import annotations

import enum
import os
import unicodedata
from dataclasses import asdict, dataclass, field, fields

from sqlalchemy import func, select, update

from annotation.services.paths import check_model, check_reward_model
from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.models import (
    Item,
    ItemStatus,
    Mode,
    PairwiseLabel,
    Project,
    Prompt,
    QueueOrder,
    Ranking,
    Rating,
    Response,
    Rewrite,
    Role,
    User,
)


@dataclass
class ProjectSettings:
    """Everything a project is configured with; the UI form and the CLI are built from these fields."""

    name: str = field(metadata={"help": "Unique project name."})
    mode: str = field(default="pairwise", metadata={"help": "pairwise (A/B), listwise (rank K) or pointwise (rate 1-5)."})
    k: int = field(default=2, metadata={"help": "Responses generated per prompt: 2 for pairwise, 3-8 for listwise."})
    model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2), an HF id, a folder or a .gguf file."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold, in (0, 1]."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest response, in tokens."})
    guidelines: str = field(default="", metadata={"help": "Shown to annotators above every item (markdown)."})
    overlap: int = field(default=1, metadata={"help": "How many annotators label each item."})
    queue_target: int = field(default=8, metadata={"help": "Items kept generated and ready ahead of annotators."})
    queue_order: str = field(default="random", metadata={
        "help": "What to label next: random (oldest first), uncertainty (the reward model's closest calls "
                "first) or disagreement (items whose annotators disagree first; overlap >= 2)."})
    queue_reward_model: str | None = field(default=None, metadata={
        "help": "Reward model that scores new responses for 'uncertainty' (a trained reward-model folder)."})
    judge_model: str | None = field(default=None, metadata={
        "help": "LLM judge of pairs: 'default', an HF id or a folder; empty for none. Pairwise projects only."})
    judge_suggestions: bool = field(default=False, metadata={
        "help": "Show annotators the judge's suggestion (off by default: blind labelling)."})
    gold_share: float = field(default=0.1, metadata={
        "help": "Share of each annotator's items drawn from gold items (known answers, marked in the Team "
                "tab) while they have some left, 0 to 1."})

    def validate(self) -> ProjectSettings:
        self.name = (self.name or "").strip()
        if not self.name:
            raise InputError("project name is empty")
        if len(self.name) > 128:
            raise InputError("project name is longer than 128 characters")
        check_printable(self.name, "project name")
        if self.mode not in {m.value for m in Mode}:
            raise InputError(f"unknown mode {self.mode!r}: use pairwise, listwise or pointwise")
        if self.mode == Mode.pairwise.value and self.k != 2:
            raise InputError("pairwise projects compare two responses: K must be 2")
        if self.mode == Mode.listwise.value and not 3 <= self.k <= 8:
            raise InputError("listwise projects rank 3 to 8 responses: K must be in 3..8")
        if self.mode == Mode.pointwise.value and not 1 <= self.k <= 8:
            raise InputError("pointwise projects rate 1 to 8 responses per prompt: K must be in 1..8")
        if not 0 <= self.temperature <= 5:
            raise InputError("temperature must be between 0 and 5")
        if not 0 < self.top_p <= 1:
            raise InputError("top-p must be in (0, 1]")
        if not 1 <= self.max_new_tokens <= 4096:
            raise InputError("max new tokens must be between 1 and 4096")
        if self.overlap < 1:
            raise InputError("overlap must be at least 1")
        if not 0 <= self.queue_target <= 1000:
            raise InputError("queue target must be between 0 and 1000")
        if not 0 <= self.gold_share <= 1:
            raise InputError("gold share must be between 0 and 1 (0.1 = one item in ten is a gold item)")
        if not (self.model or "").strip():
            raise InputError("model is empty: use 'default' for the embedded model")
        check_model(self.model, "model")
        self._validate_queue_order()
        self._validate_judge()
        return self

    def _validate_queue_order(self) -> None:
        if self.queue_order not in {q.value for q in QueueOrder}:
            raise InputError(f"unknown queue order {self.queue_order!r}: use random, uncertainty or disagreement")
        self.queue_reward_model = (self.queue_reward_model or "").strip() or None
        if self.queue_order == QueueOrder.uncertainty.value:
            if not self.queue_reward_model:
                raise InputError("ordering by uncertainty needs a reward model to score the responses: pick one "
                                 "(train one in the Train tab)")
            if self.k < 2:
                raise InputError("ordering by uncertainty compares the scores of an item's responses: K must be >= 2")
        if self.queue_order == QueueOrder.disagreement.value and self.overlap < 2:
            raise InputError("ordering by disagreement needs overlap >= 2: with one label per item nobody can disagree")
        if self.queue_reward_model:
            # Absolute: the generator process may run from another working directory.
            self.queue_reward_model = os.path.abspath(check_reward_model(self.queue_reward_model, "queue reward model"))

    def _validate_judge(self) -> None:
        self.judge_model = (self.judge_model or "").strip() or None
        self.judge_suggestions = bool(self.judge_suggestions)
        if self.judge_suggestions and not self.judge_model:
            raise InputError("judge suggestions need a judge model: set one, or turn the suggestions off")
        if self.judge_model is None:
            return
        if self.mode != Mode.pairwise.value:
            raise InputError("the LLM judge compares two responses: only pairwise projects can have a judge model")
        if len(self.judge_model) > 512:
            raise InputError("judge model is longer than 512 characters")
        check_model(self.judge_model, "judge model")  # a mistyped folder or .gguf file fails here, not in the generator


def check_printable(text: str, what: str) -> None:
    """Names are shown in menus, tables and file names: no control characters, no broken Unicode."""
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise InputError(f"{what} contains the invisible character U+{ord(bad):04X}: use letters, digits, "
                         "spaces and punctuation")


SETTING_FIELDS = [f.name for f in fields(ProjectSettings)]


def _plain(value):
    return value.value if isinstance(value, enum.Enum) else value


def settings_of(project: Project) -> ProjectSettings:
    return ProjectSettings(**{name: _plain(getattr(project, name)) for name in SETTING_FIELDS})


def _column_values(settings: ProjectSettings) -> dict:
    values = asdict(settings)
    values["mode"] = Mode(values["mode"])
    values["queue_order"] = QueueOrder(values["queue_order"])
    return values


def find_project(session, name: str, create_hint: bool = False) -> Project:
    """The project named ``name``; else InputError listing the projects there are (and, with
    ``create_hint``, that the import's --create option makes it)."""
    project = session.scalar(select(Project).where(Project.name == name, Project.staging.is_(False)))
    if project is None:
        known = session.scalars(select(Project.name).where(Project.staging.is_(False)).order_by(Project.name)).all()
        hint = f" Known projects: {', '.join(known)}." if known else " There are no projects yet."
        if create_hint:
            hint += f" To create it with this import, add --create (or create {name!r} in the Projects tab first)."
        raise InputError(f"unknown project {name!r}.{hint}")
    return project


def create_project(db: Database, settings: ProjectSettings) -> ProjectSettings:
    settings.validate()
    with transaction(db) as s:
        if s.scalar(select(Project.id).where(Project.name == settings.name)) is not None:
            raise InputError(f"a project named {settings.name!r} already exists")
        s.add(Project(**_column_values(settings)))
    return settings


def update_project(db: Database, settings: ProjectSettings) -> ProjectSettings:
    settings.validate()
    with transaction(db) as s:
        project = find_project(s, settings.name)
        has_items = s.scalar(select(Item.id).where(Item.project_id == project.id).limit(1)) is not None
        if has_items and (settings.mode != project.mode.value or settings.k != project.k):
            # Items already generated have the old K and are labelled in the old mode.
            raise InputError("mode and K cannot change once items have been generated: create a new project")
        if settings.queue_reward_model != project.queue_reward_model:
            # Scores from another reward model would mix two scales in one queue: the generator
            # rescores the ready items with the new one.
            item_ids = select(Item.id).where(Item.project_id == project.id)
            s.execute(update(Response).where(Response.item_id.in_(item_ids)).values(rm_score=None))
        for name, value in _column_values(settings).items():
            setattr(project, name, value)
    return settings


def get_settings(db: Database, name: str) -> ProjectSettings:
    with reading(db) as s:
        return settings_of(find_project(s, name))


def project_names(db: Database) -> list[str]:
    with reading(db) as s:
        return list(s.scalars(select(Project.name).where(Project.staging.is_(False))
                              .order_by(Project.created_at, Project.id)))


def ensure_user(session, name: str, role: Role = Role.annotator) -> User:
    name = (name or "").strip()
    if not name:
        raise InputError("enter your annotator name first")
    if len(name) > 64:
        raise InputError("annotator name is longer than 64 characters")
    check_printable(name, "annotator name")
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role=role)
        session.add(user)
        session.flush()
    return user


@dataclass
class ProjectCounts:
    name: str
    mode: str
    prompts: int
    items_ready: int
    items_done: int
    pairwise_labels: int
    rankings: int
    ratings: int
    rewrites: int


def _count(session, stmt) -> int:
    return int(session.scalar(stmt) or 0)


def project_counts(db: Database) -> list[ProjectCounts]:
    """Per-project totals for the data tab (one small query per table; projects are few)."""
    out = []
    with reading(db) as s:
        for p in s.scalars(select(Project).where(Project.staging.is_(False)).order_by(Project.created_at, Project.id)):
            items = dict(s.execute(select(Item.status, func.count()).where(Item.project_id == p.id)
                                   .group_by(Item.status)).all())
            prompt_ids = select(Prompt.id).where(Prompt.project_id == p.id)
            out.append(ProjectCounts(
                name=p.name, mode=p.mode.value,
                prompts=_count(s, select(func.count()).select_from(Prompt).where(Prompt.project_id == p.id)),
                items_ready=items.get(ItemStatus.ready, 0), items_done=items.get(ItemStatus.done, 0),
                pairwise_labels=_count(s, select(func.count()).select_from(PairwiseLabel)
                                       .where(PairwiseLabel.prompt_id.in_(prompt_ids))),
                rankings=_count(s, select(func.count()).select_from(Ranking).where(Ranking.prompt_id.in_(prompt_ids))),
                ratings=_count(s, select(func.count()).select_from(Rating).join(Response)
                               .where(Response.prompt_id.in_(prompt_ids))),
                rewrites=_count(s, select(func.count()).select_from(Rewrite).where(Rewrite.prompt_id.in_(prompt_ids))),
            ))
    return out
