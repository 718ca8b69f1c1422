"""LLM-as-judge verdicts on pairwise items: judge, store, suggest to annotators, compare with humans.

A verdict (`JudgeVerdict`) is a proxy label, never a human one: it lives in its own table, so label
snapshots, exports and label counts (which read only the label tables) never see it. It is stored
in the item's own order (response position 0 is "a"), whatever order an annotator is later shown.

Where judging runs: the background generator judges each item it has just generated when the
project has a judge model (see `annotation.generation`), and `JudgingThreads` judges the items
generated before (the "Judge existing items" button). The judge model runs outside any
transaction; each batch of verdicts is stored in one short transaction.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from annotation.services.projects import find_project
from storage.db import Database, transaction
from storage.errors import InputError
from storage.models import Choice, Item, JudgeVerdict, Mode, PairwiseLabel, Project, Response

log = logging.getLogger(__name__)

JudgeLoader = Callable[[str], Any]  # model spec -> an object with .model, .tokenizer (and optionally .lock)


def default_judge_loader(spec: str) -> Any:
    from alignment.models import get_model

    return get_model(spec)  # the process-wide instance: loaded once, shared with generation if the same


@dataclass
class JudgeRun:
    project: str
    judge_model: str
    judged: int = 0
    already_judged: int = 0  # judged by another run meanwhile: kept theirs


@dataclass
class _Pair:
    item_id: int
    messages: list[dict[str, str]]
    response_a: str  # position 0
    response_b: str  # position 1


def _judge_settings(project: Project) -> str:
    if project.mode != Mode.pairwise:
        raise InputError(f"project {project.name!r} is {project.mode.value}: the judge compares pairs "
                         "(pairwise projects only)")
    if not project.judge_model:
        raise InputError(f"project {project.name!r} has no judge model: set one in its settings first")
    return project.judge_model


def _unjudged_pairs(session, project: Project, spec: str, item_ids: Sequence[int] | None,
                    limit: int | None) -> list[_Pair]:
    """The project's two-response items without a verdict from `spec`, oldest first."""
    stmt = (select(Item).where(Item.project_id == project.id)
            .where(~exists().where(JudgeVerdict.item_id == Item.id, JudgeVerdict.judge_model == spec))
            .options(selectinload(Item.responses), selectinload(Item.prompt))
            .order_by(Item.id))
    if item_ids is not None:
        stmt = stmt.where(Item.id.in_(list(item_ids)))
    pairs = []
    for item in session.scalars(stmt):
        if len(item.responses) != 2:  # a best-of-N import of another size, say: nothing to compare
            continue
        first, second = item.responses  # ordered by position
        pairs.append(_Pair(item.id, item.prompt.messages, first.text, second.text))
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


def _store(db: Database, spec: str, verdicts: list[tuple[int, Any]]) -> tuple[int, int]:
    """Store a batch of verdicts in one transaction; (stored, already there)."""
    def attempt() -> tuple[int, int]:
        stored = present = 0
        with transaction(db) as s:
            for item_id, verdict in verdicts:
                taken = s.scalar(select(JudgeVerdict.id).where(JudgeVerdict.item_id == item_id,
                                                               JudgeVerdict.judge_model == spec))
                if taken is not None or s.get(Item, item_id) is None:  # judged meanwhile, or deleted
                    present += 1
                    continue
                s.add(JudgeVerdict(item_id=item_id, judge_model=spec, choice=Choice(verdict.choice),
                                   prob_a=verdict.prob_a, raw=verdict.raw, judge_prompt=verdict.prompt))
                stored += 1
        return stored, present

    try:
        return attempt()
    except IntegrityError:  # a concurrent run committed the same (item, judge) first: keep theirs
        return attempt()


def judge_items(db: Database, project_name: str, limit: int | None = None, *, item_ids: Sequence[int] | None = None,
                judge: Any = None, judge_loader: JudgeLoader = default_judge_loader, batch_size: int = 8,
                progress: Callable[[int, int], None] | None = None) -> JudgeRun:
    """Judge the project's pairwise items that have no verdict from its judge model yet.

    `item_ids` restricts the run (the generator passes the items it has just made); `judge` is an
    already loaded judge (the generator keeps one), else `judge_loader` loads the project's.
    """
    from alignment.judge import judge_pair

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a whole number >= 1, got {limit!r}")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size!r}")
    with transaction(db) as s:
        project = find_project(s, project_name)
        spec = _judge_settings(project)
        pairs = _unjudged_pairs(s, project, spec, item_ids, limit)
    run = JudgeRun(project=project_name, judge_model=spec)
    if not pairs:
        return run
    judge = judge if judge is not None else judge_loader(spec)
    lock = getattr(judge, "lock", None) or threading.Lock()
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        with lock:  # the shared model instance may also be generating in this process
            verdicts = [(p.item_id, judge_pair(judge.model, judge.tokenizer, p.messages, p.response_a, p.response_b))
                        for p in batch]
        stored, present = _store(db, spec, verdicts)
        run.judged += stored
        run.already_judged += present
        if progress:
            progress(min(start + batch_size, len(pairs)), len(pairs))
    return run


# ---------------------------------------------------------------------------------------------
# Suggestions for annotators
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Suggestion:
    choice: str  # in the item's order: "a" = response position 0, "b" = position 1, or "tie"
    prob_a: float | None  # P(position 0 is better)
    judge_model: str

    def as_shown(self, shown_order: Sequence[int]) -> str:
        """The suggestion in the order the annotator sees: "A", "B" or "tie".

        `shown_order` lists the item positions as shown (A first): with [1, 0], the item's "a" is on
        the right, so it reads "B".
        """
        if self.choice == Choice.tie.value:
            return "tie"
        winner = 0 if self.choice == Choice.a.value else 1
        return "AB"[list(shown_order).index(winner)]

    @property
    def confidence(self) -> float | None:
        """The judge's probability for the side it prefers (None when not read from logits)."""
        if self.prob_a is None:
            return None
        return max(self.prob_a, 1.0 - self.prob_a)


def suggestion_for(db: Database, item_id: int, project_name: str) -> Suggestion | None:
    """The judge's verdict on the item, but only when the project shows suggestions (off by default)."""
    with transaction(db) as s:
        project = find_project(s, project_name)
        if not project.judge_suggestions or not project.judge_model:
            return None
        verdict = s.scalar(select(JudgeVerdict).join(Item, JudgeVerdict.item_id == Item.id)
                           .where(JudgeVerdict.item_id == item_id, JudgeVerdict.judge_model == project.judge_model,
                                  Item.project_id == project.id))
        if verdict is None:
            return None
        return Suggestion(verdict.choice.value, verdict.prob_a, verdict.judge_model)


# ---------------------------------------------------------------------------------------------
# Agreement with the humans
# ---------------------------------------------------------------------------------------------

@dataclass
class JudgeAgreement:
    judge_model: str | None
    judged_items: int = 0  # items with a verdict from this judge
    n: int = 0  # human labels compared (both sides said A or B)
    agree: int = 0
    human_no_preference: int = 0  # human tie / both bad on a judged item: left out of the rate
    judge_ties: int = 0  # human said A or B but the judge called a tie: left out of the rate

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Wilson score interval for the agreement rate (Wilson 1927): honest at small n, unlike p ± z·se."""
        if not self.n:
            return None
        p, n = self.agree / self.n, self.n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def summary(self) -> str:
        if not self.judge_model:
            return "No judge model set."
        left_out = f"{self.human_no_preference} human ties / both bad and {self.judge_ties} judge ties left out"
        if not self.n:
            return (f"Judge `{self.judge_model}`: {self.judged_items} items judged; no human A/B label on a judged "
                    f"item to compare with yet ({left_out}).")
        low, high = self.interval()
        return (f"Judge `{self.judge_model}` agrees with the annotators on **{self.rate:.0%}** of {self.n} labels "
                f"(95% CI {low:.0%}-{high:.0%}); {self.judged_items} items judged; {left_out}.")


def _human_winner(label: PairwiseLabel, positions: dict[int, int]) -> int | None:
    """The item position the human preferred (A/B as shown mapped back to the item), None for tie / both bad.

    A label's A and B are the responses as shown (`response_a_id` on the left), so "a" means the
    response at position positions[response_a_id] of the item, whichever side that was.
    """
    if label.choice == Choice.a:
        return positions[label.response_a_id]
    if label.choice == Choice.b:
        return positions[label.response_b_id]
    return None


def judge_agreement(db: Database, project_name: str) -> JudgeAgreement:
    """How often the project's judge picks the response the annotators picked, over human A/B labels."""
    with transaction(db) as s:
        project = find_project(s, project_name)
        result = JudgeAgreement(judge_model=project.judge_model)
        if not project.judge_model:
            return result
        verdicts = {v.item_id: v for v in s.scalars(
            select(JudgeVerdict).join(Item, JudgeVerdict.item_id == Item.id)
            .where(Item.project_id == project.id, JudgeVerdict.judge_model == project.judge_model))}
        result.judged_items = len(verdicts)
        if not verdicts:
            return result
        positions = dict(s.execute(select(Response.id, Response.position)
                                   .join(Item, Response.item_id == Item.id).where(Item.project_id == project.id)).all())
        labels = s.scalars(select(PairwiseLabel).where(PairwiseLabel.item_id.in_(list(verdicts))))
        for label in labels:
            human = _human_winner(label, positions)
            verdict = verdicts[label.item_id]
            if human is None:
                result.human_no_preference += 1
            elif verdict.choice == Choice.tie:
                result.judge_ties += 1
            else:
                result.n += 1
                result.agree += int(human == (0 if verdict.choice == Choice.a else 1))
        return result


def verdict_count(db: Database, project_name: str) -> int:
    with transaction(db) as s:
        project = find_project(s, project_name)
        if not project.judge_model:
            return 0
        return int(s.scalar(select(func.count()).select_from(JudgeVerdict).join(Item, JudgeVerdict.item_id == Item.id)
                            .where(Item.project_id == project.id, JudgeVerdict.judge_model == project.judge_model))
                   or 0)


# ---------------------------------------------------------------------------------------------
# "Judge existing items": one background thread per project, with progress
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgingProgress:
    project: str
    state: str  # "loading judge" | "judging" | "done" | "failed"
    done: int = 0
    total: int = 0
    message: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("loading judge", "judging")


class JudgingThreads:
    """Runs `judge_items` over a project's existing items in a background thread, one per project.

    The judge runs in the server process here (a few forward passes per item); the thread only
    holds the database for the short transaction that stores each batch.
    """

    def __init__(self, db: Database, judge_loader: JudgeLoader = default_judge_loader):
        self.db = db
        self.judge_loader = judge_loader
        self._progress: dict[str, JudgingProgress] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def progress(self, project_name: str) -> JudgingProgress | None:
        with self._lock:
            return self._progress.get(project_name)

    def _set(self, project_name: str, **changes) -> None:
        with self._lock:
            self._progress[project_name] = replace(self._progress[project_name], **changes)

    def start(self, project_name: str, limit: int | None = None) -> JudgingProgress:
        """Start judging; bad settings (no judge, not pairwise) raise InputError before any thread starts."""
        with transaction(self.db) as s:
            _judge_settings(find_project(s, project_name))
        with self._lock:
            thread = self._threads.get(project_name)
            if thread is not None and thread.is_alive():
                raise InputError(f"project {project_name!r} is already being judged")
            self._progress[project_name] = JudgingProgress(project_name, "loading judge")
            thread = threading.Thread(target=self._run, args=(project_name, limit), daemon=True,
                                      name=f"judge-{project_name}")
            self._threads[project_name] = thread
        thread.start()
        return self.progress(project_name)

    def wait(self, project_name: str, timeout: float | None = None) -> JudgingProgress | None:
        thread = self._threads.get(project_name)
        if thread is not None:
            thread.join(timeout)
        return self.progress(project_name)

    def _run(self, project_name: str, limit: int | None) -> None:
        def on_progress(done: int, total: int) -> None:
            self._set(project_name, state="judging", done=done, total=total)

        try:
            run = judge_items(self.db, project_name, limit, judge_loader=self.judge_loader, progress=on_progress)
        except Exception as exc:  # noqa: BLE001 - reported in the UI; the server carries on
            log.exception("judging project %s failed", project_name)
            self._set(project_name, state="failed", message=f"{type(exc).__name__}: {exc}")
            return
        extra = f" ({run.already_judged} judged meanwhile elsewhere)" if run.already_judged else ""
        self._set(project_name, state="done", message=f"{run.judged} items judged by {run.judge_model}{extra}.")
