"""The database schema: typed SQLAlchemy 2 models for everything prefstudio stores.

Provenance is the point of this schema: every response records the model, adapter, sampling
parameters and seed that produced it; every label records who gave it, what they were shown and in
which order, how long it took and where it came from (a human in the UI, an import, ...). Labels are
never edited in place; undo deletes the annotator's own last label in one transaction. A reviewer's
verdict (accepted, rejected, corrected) is stored beside the label, and a correction beside the
original answer, which stays as the annotator gave it.

Duplicate protection lives in the schema, not in the UI: a named unique constraint allows one label
per (item, annotator), and a client token (one per item shown) makes a retried submission idempotent.
Changing a model here needs a new Alembic revision under storage/migrations/versions.
"""
from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints so Alembic migrations stay stable across databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Role(str, enum.Enum):
    admin = "admin"
    annotator = "annotator"
    reviewer = "reviewer"  # an annotator who also reviews the labels of the projects they are members of


class Mode(str, enum.Enum):
    pairwise = "pairwise"
    listwise = "listwise"
    pointwise = "pointwise"


class Choice(str, enum.Enum):
    a = "a"
    b = "b"
    tie = "tie"
    both_bad = "both_bad"


class LabelSource(str, enum.Enum):
    human = "human"
    imported = "import"


class QueueOrder(str, enum.Enum):
    """Which ready item an annotator gets next."""

    random = "random"  # oldest first (the generator's order, itself random over prompts)
    uncertainty = "uncertainty"  # the reward model is least sure: smallest |r_a - r_b| first
    disagreement = "disagreement"  # items whose annotators disagree first, then the rest


class ReviewStatus(str, enum.Enum):
    """Where a label stands in review. Corrected labels count, with the reviewer's answer."""

    submitted = "submitted"  # not reviewed yet
    accepted = "accepted"
    rejected = "rejected"
    corrected = "corrected"


#: The review statuses a snapshot or export "restricted to accepted labels" keeps.
ACCEPTED_STATUSES = (ReviewStatus.accepted, ReviewStatus.corrected)


class ItemStatus(str, enum.Enum):
    ready = "ready"  # responses generated, waiting for annotators
    done = "done"  # has as many labels as the project's overlap asks for


def _enum(e: type[enum.Enum], name: str) -> Enum:
    # Store the values ("import", not "imported") as plain strings with a CHECK on every engine:
    # no PostgreSQL ENUM types, so SQLite and PostgreSQL hold the same schema and rows copy as they are.
    return Enum(e, name=name, values_callable=lambda x: [m.value for m in x], validate_strings=True,
                create_constraint=True, native_enum=False)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), default=Role.annotator, nullable=False)
    # An argon2id hash (annotation.auth.passwords). None: the user cannot log in (a name that only
    # appears on old or imported labels, or one typed in single-user local mode).
    password_hash: Mapped[str | None] = mapped_column(String(256))

    memberships: Mapped[list[ProjectMember]] = relationship(back_populates="user", cascade="all, delete-orphan",
                                                            passive_deletes=True)


class Project(TimestampMixin, Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("k >= 1 AND k <= 16", name="k_range"),
        CheckConstraint("overlap >= 1", name="overlap_positive"),
        CheckConstraint("queue_target >= 0", name="queue_target_nonnegative"),
        CheckConstraint("gold_share >= 0 AND gold_share <= 1", name="gold_share_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    mode: Mapped[Mode] = mapped_column(_enum(Mode, "mode"), default=Mode.pairwise, nullable=False)
    k: Mapped[int] = mapped_column(Integer, default=2, nullable=False)
    model: Mapped[str] = mapped_column(String(512), default="default", nullable=False)
    adapter: Mapped[str | None] = mapped_column(String(512))
    temperature: Mapped[float] = mapped_column(Float, default=0.8, nullable=False)
    top_p: Mapped[float] = mapped_column(Float, default=0.95, nullable=False)
    max_new_tokens: Mapped[int] = mapped_column(Integer, default=256, nullable=False)
    guidelines: Mapped[str] = mapped_column(Text, default="", nullable=False)
    # How many annotators label each item, and how many items the generator keeps ready.
    overlap: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    queue_target: Mapped[int] = mapped_column(Integer, default=8, nullable=False)
    # What to label next, and the reward model that scores new responses for "uncertainty".
    queue_order: Mapped[QueueOrder] = mapped_column(_enum(QueueOrder, "queue_order"), default=QueueOrder.random,
                                                    server_default=QueueOrder.random.value, nullable=False)
    queue_reward_model: Mapped[str | None] = mapped_column(String(1024))
    # LLM-as-judge suggestions shown to annotators: off by default (blind work).
    judge_model: Mapped[str | None] = mapped_column(String(512))
    judge_suggestions: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(),
                                                    nullable=False)
    # A hidden project that holds an import while it is written in short batches (storage.importing):
    # nobody sees its rows until the import commits them into the target project in one step.
    staging: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    # The share of an annotator's queue served from gold items (items with a known answer), while
    # they have gold items left to label.
    gold_share: Mapped[float] = mapped_column(Float, default=0.1, server_default="0.1", nullable=False)

    prompts: Mapped[list[Prompt]] = relationship(back_populates="project", cascade="all, delete-orphan",
                                                 passive_deletes=True)
    members: Mapped[list[ProjectMember]] = relationship(back_populates="project", cascade="all, delete-orphan",
                                                        passive_deletes=True)


class ProjectMember(TimestampMixin, Base):
    """A user who works on a project (annotators label it, reviewers review it; admins need none)."""

    __tablename__ = "project_members"
    __table_args__ = (UniqueConstraint("project_id", "user_id", name="uq_project_members_project_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)

    project: Mapped[Project] = relationship(back_populates="members")
    user: Mapped[User] = relationship(back_populates="memberships")


class LoginSession(TimestampMixin, Base):
    """A signed-in browser: the cookie holds a random token, the database only its sha256, so a
    leaked database opens no session. Deleting the row logs that browser out (logout, a password
    change, a removed user); rows outlive restarts, so a restart logs nobody out."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    user: Mapped[User] = relationship()


class Prompt(TimestampMixin, Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("project_id", "content_hash", name="uq_prompts_project_content"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    # Always a list of {"role", "content"}; a plain-text prompt is one user message with is_chat False.
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSON, nullable=False)
    is_chat: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # sha256 of the canonical messages JSON: the same prompt imported twice is stored once.
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    source: Mapped[str] = mapped_column(String(32), default="typed", nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)

    project: Mapped[Project] = relationship(back_populates="prompts")
    responses: Mapped[list[Response]] = relationship(back_populates="prompt", cascade="all, delete-orphan",
                                                     passive_deletes=True)


class Item(TimestampMixin, Base):
    """One unit of annotation work: a prompt with the K responses generated for it together."""

    __tablename__ = "items"
    __table_args__ = (Index("ix_items_project_status", "project_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False,
                                           index=True)
    status: Mapped[ItemStatus] = mapped_column(_enum(ItemStatus, "item_status"), default=ItemStatus.ready,
                                               nullable=False)
    # A short lease so two annotators are not shown the same item when one label is enough.
    leased_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A gold item's known answer, set by an admin (annotation.services.gold): every annotator is
    # served it once, whatever the overlap, and their answers measure their accuracy.
    # In the item's own response order: {"choice": "a" | "b" | "tie" | "both_bad"} (a = position 0),
    # {"ranks": [rank of position 0, ...]} (1 = best), or {"scores": [score of position 0, ...]}.
    gold_answer: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    prompt: Mapped[Prompt] = relationship()
    responses: Mapped[list[Response]] = relationship(back_populates="item", order_by="Response.position")


class Response(TimestampMixin, Base):
    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False,
                                           index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # index within its item
    text: Mapped[str] = mapped_column(Text, nullable=False)
    # Provenance: which model (spec as given), which adapter, which sampling parameters and seed.
    model: Mapped[str] = mapped_column(String(512), nullable=False)
    adapter: Mapped[str | None] = mapped_column(String(512))
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    seed: Mapped[int | None] = mapped_column(Integer)
    num_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32), default="generated", nullable=False)
    # The score of the project's queue reward model, when it has one (orders the queue).
    rm_score: Mapped[float | None] = mapped_column(Float)

    prompt: Mapped[Prompt] = relationship(back_populates="responses")
    item: Mapped[Item | None] = relationship(back_populates="responses")


class LabelMixin(TimestampMixin):
    """Provenance shared by every kind of label."""

    source: Mapped[LabelSource] = mapped_column(_enum(LabelSource, "label_source"), default=LabelSource.human,
                                                nullable=False)
    time_taken_ms: Mapped[int | None] = mapped_column(Integer)
    # One token per item shown in the UI: a retried submission with the same token is a no-op.
    client_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Review (annotation.services.review): who decided what, when, and for "corrected" the answer the
    # reviewer gave instead, in the label's own terms (see each model's `effective_*`).
    review_status: Mapped[ReviewStatus] = mapped_column(_enum(ReviewStatus, "review_status"),
                                                        default=ReviewStatus.submitted,
                                                        server_default=ReviewStatus.submitted.value, nullable=False)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correction: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class PairwiseLabel(LabelMixin, Base):
    __tablename__ = "pairwise_labels"
    __table_args__ = (
        UniqueConstraint("item_id", "user_id", name="uq_pairwise_labels_item_user"),
        CheckConstraint("response_a_id <> response_b_id", name="distinct_responses"),
        CheckConstraint("strength IS NULL OR (strength >= 1 AND strength <= 3)", name="strength_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False,
                                           index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # A and B are the responses as shown (A on the left); shown_order lists their item positions, so
    # a randomised side assignment can be audited later.
    response_a_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), nullable=False)
    response_b_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), nullable=False)
    shown_order: Mapped[list[int]] = mapped_column(JSON, default=list, nullable=False)
    choice: Mapped[Choice] = mapped_column(_enum(Choice, "choice"), nullable=False)
    strength: Mapped[int | None] = mapped_column(Integer)  # 1 slightly, 2 clearly, 3 much better
    rationale: Mapped[str | None] = mapped_column(Text)

    response_a: Mapped[Response] = relationship(foreign_keys=[response_a_id])
    response_b: Mapped[Response] = relationship(foreign_keys=[response_b_id])
    prompt: Mapped[Prompt] = relationship()
    user: Mapped[User | None] = relationship(foreign_keys="PairwiseLabel.user_id")
    rewrite: Mapped[Rewrite | None] = relationship(back_populates="pairwise_label", cascade="all, delete-orphan",
                                                   passive_deletes=True)

    @property
    def effective_choice(self) -> Choice:
        """The choice that counts (sides as shown): the reviewer's correction ({"choice": ...}) when there is one."""
        return Choice(self.correction["choice"]) if self.review_status == ReviewStatus.corrected else self.choice


class Ranking(LabelMixin, Base):
    __tablename__ = "rankings"
    __table_args__ = (UniqueConstraint("item_id", "user_id", name="uq_rankings_item_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False,
                                           index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # Best first; each inner list is a group of tied response ids: [[7], [5, 9], [6]].
    groups: Mapped[list[list[int]]] = mapped_column(JSON, nullable=False)
    shown_order: Mapped[list[int]] = mapped_column(JSON, default=list, nullable=False)
    rationale: Mapped[str | None] = mapped_column(Text)

    prompt: Mapped[Prompt] = relationship()
    user: Mapped[User | None] = relationship(foreign_keys="Ranking.user_id")

    @property
    def effective_groups(self) -> list[list[int]]:
        """The ranking that counts: the reviewer's correction ({"groups": ...}) when there is one."""
        return self.correction["groups"] if self.review_status == ReviewStatus.corrected else self.groups


class Rating(LabelMixin, Base):
    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("response_id", "user_id", name="uq_ratings_response_user"),
        CheckConstraint("score >= 1 AND score <= 5", name="score_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), nullable=False,
                                             index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    rationale: Mapped[str | None] = mapped_column(Text)
    # A pointwise submission rates all K responses of an item at once; the token is per response.
    client_token: Mapped[str | None] = mapped_column(String(80), unique=True)

    response: Mapped[Response] = relationship()
    user: Mapped[User | None] = relationship(foreign_keys="Rating.user_id")

    @property
    def effective_score(self) -> int:
        """The score that counts: the reviewer's correction ({"score": ...}) when there is one."""
        return self.correction["score"] if self.review_status == ReviewStatus.corrected else self.score


class Rewrite(TimestampMixin, Base):
    """A better answer written by the annotator after judging both responses bad (SFT data)."""

    __tablename__ = "rewrites"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False,
                                           index=True)
    pairwise_label_id: Mapped[int | None] = mapped_column(
        ForeignKey("pairwise_labels.id", ondelete="CASCADE"), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    text: Mapped[str] = mapped_column(Text, nullable=False)

    pairwise_label: Mapped[PairwiseLabel | None] = relationship(back_populates="rewrite")
    prompt: Mapped[Prompt] = relationship()


class Skip(TimestampMixin, Base):
    """An annotator passed on an item; it is not shown to them again."""

    __tablename__ = "skips"
    __table_args__ = (UniqueConstraint("item_id", "user_id", name="uq_skips_item_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"  # the app stopped while it ran; resumable from its last checkpoint


class Snapshot(TimestampMixin, Base):
    """A frozen copy of the labels a job trains on: which ones (filters), how many, and the files."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    path: Mapped[str] = mapped_column(String(1024), nullable=False)  # folder with train/eval JSONL files


class Job(TimestampMixin, Base):
    """One background training (or best-of-N) run: one subprocess, one run folder."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_device", "status", "device"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # rm | dpo | pl-dpo | ...
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.queued,
                                              nullable=False)
    device: Mapped[str] = mapped_column(String(32), default="cpu", nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    run_dir: Mapped[str] = mapped_column(String(1024), nullable=False)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id", ondelete="SET NULL"))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)  # the tail of the log when it failed
    resume_of: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))

    snapshot: Mapped[Snapshot | None] = relationship()


class TrainedModel(TimestampMixin, Base):
    """An artifact a job produced (a LoRA adapter, a reward model), with its lineage."""

    __tablename__ = "trained_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # policy-adapter | reward-model
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    base_model: Mapped[str] = mapped_column(String(512), nullable=False)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), unique=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id", ondelete="SET NULL"))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)

    job: Mapped[Job | None] = relationship()
    snapshot: Mapped[Snapshot | None] = relationship()


class JudgeVerdict(TimestampMixin, Base):
    """An LLM judge's verdict on a pairwise item: a suggestion for annotators, never a human label
    (kept out of snapshots and exports), compared with the human labels to report agreement."""

    __tablename__ = "judge_verdicts"
    __table_args__ = (UniqueConstraint("item_id", "judge_model", name="uq_judge_verdicts_item_judge"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), nullable=False, index=True)
    judge_model: Mapped[str] = mapped_column(String(512), nullable=False)
    # In the item's own order (response position 0 is "a"), not the order an annotator is shown.
    choice: Mapped[Choice] = mapped_column(_enum(Choice, "choice"), nullable=False)
    prob_a: Mapped[float | None] = mapped_column(Float)  # the judge's P("A") vs P("B"), when read from logits
    raw: Mapped[str] = mapped_column(Text, default="", nullable=False)  # what the judge answered
    judge_prompt: Mapped[str] = mapped_column(Text, default="", nullable=False)

    item: Mapped[Item] = relationship()


class Evaluation(TimestampMixin, Base):
    """The result of an evaluation job: a tuned model against its base on held-out prompts."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), unique=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"), index=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("trained_models.id", ondelete="SET NULL"), index=True)
    reward_model_id: Mapped[int | None] = mapped_column(ForeignKey("trained_models.id", ondelete="SET NULL"))
    adapter: Mapped[str | None] = mapped_column(String(1024))  # the tuned adapter's folder as evaluated
    base_model: Mapped[str] = mapped_column(String(512), nullable=False)
    # win rate vs base by RM, mean reward / length / KL of both sides, RM agreement with humans, n.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    path: Mapped[str | None] = mapped_column(String(1024))  # per-prompt results (JSONL) in the run folder

    job: Mapped[Job | None] = relationship()
    model: Mapped[TrainedModel | None] = relationship(foreign_keys=[model_id])
    reward_model: Mapped[TrainedModel | None] = relationship(foreign_keys=[reward_model_id])
