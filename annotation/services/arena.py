"""The blind arena: two models answer one prompt, the annotator votes without knowing which is which,
and the vote is stored as an ordinary human pairwise label, so it trains like any other.

* :class:`ArenaMatch` is one match as the annotator saw it: the project, the prompt, the two answers
  in the match's own order (position 0 and 1, with the provenance of each) and which one was shown
  on the left. The UI keeps it in per-session state between generating and voting.
* :func:`record_arena_vote` stores the whole match in ONE transaction: the prompt (the project's own
  when it already has it, found by content hash as imports do; otherwise added with source
  ``arena``), an Item that is ``done`` at birth (so it never enters the annotation queue), the two
  Responses (source ``arena``, model, adapter, sampling, seed, tokens, finish reason) and a human
  PairwiseLabel. The label follows the schema's convention for every pairwise label: response A is
  the one shown on the left, ``choice`` is relative to what was shown (``a`` = left), and
  ``shown_order`` lists the item positions of A and B ([1, 0]: position 1 was on the left). A retry
  with the same client token is a no-op that returns the first receipt; bad input writes nothing.
* :func:`arena_votes` reads the votes back as (model, model, outcome), a model being a base model
  plus an adapter, named after its TrainedModel when the adapter is one; :func:`arena_leaderboard`
  fits the Bradley-Terry leaderboard on them (alignment.leaderboard).

"Held-out" prompts to draw from are the project's prompts without any label yet (the same
selection as a best-of-N job's "unlabelled" prompts): snapshots have no fixed eval split, while an
unlabelled prompt has certainly not been trained on. A vote labels its prompt, so a drawn prompt
leaves that set once it is voted on.
"""
from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from alignment.leaderboard import Leaderboard, Vote, leaderboard
from annotation.services import catalogue, compare
from annotation.services.catalogue import display_name, distinct_names, model_identity, trained_adapter_names
from annotation.services.labelling import ARENA_SOURCE, Receipt, idempotent
from annotation.services.projects import ensure_user, find_project
from storage.db import Database, transaction
from storage.errors import InputError
from storage.models import (
    Choice,
    Item,
    ItemStatus,
    LabelSource,
    Mode,
    PairwiseLabel,
    Project,
    Prompt,
    Response,
)
from storage.prompts import content_hash, text_prompt, validate_messages
from storage.snapshots import labelled_prompt_ids

SOURCE = ARENA_SOURCE


@dataclass
class ArenaAnswer:
    """One side of a match as generated: which model answered, and what it said."""

    model: str  # base model spec as given ('default', a folder, a hub id)
    adapter: str | None  # LoRA adapter folder, None for the base model alone
    text: str
    num_tokens: int | None = None
    finish_reason: str | None = None
    label: str | None = None  # the name shown at the reveal (the identity is model + adapter)

    @property
    def identity(self) -> tuple[str, str | None]:
        return model_identity(self.model, self.adapter)


@dataclass
class ArenaMatch:
    """A blind match as shown: ``answers`` in the match's own order, ``shown_order`` = the positions
    shown as A (left) and B (right)."""

    project: str
    prompt_messages: list[dict[str, str]]
    answers: list[ArenaAnswer]
    shown_order: list[int]
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_new_tokens
    seed: int | None = None
    is_chat: bool = False
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    shown_at: float = field(default_factory=time.time)

    @property
    def shown(self) -> list[ArenaAnswer]:
        """The answers as shown: [A (left), B (right)]."""
        return [self.answers[p] for p in self.shown_order]

    def elapsed_ms(self) -> int:
        return max(0, int((time.time() - self.shown_at) * 1000))


def new_match(project: str, prompt_messages: list[dict[str, str]], answers: list[ArenaAnswer],
              sampling: dict[str, Any] | None = None, seed: int | None = None, is_chat: bool = False,
              rng: random.Random | None = None) -> ArenaMatch:
    """A match with the sides in random order (which answer is shown as A is a coin flip)."""
    order = [0, 1]
    (rng or random.Random()).shuffle(order)
    return ArenaMatch(project=project, prompt_messages=prompt_messages, answers=list(answers), shown_order=order,
                      sampling=dict(sampling or {}), seed=seed, is_chat=is_chat)


# --------------------------------------------------------------------------------------------
# Starting a match
# --------------------------------------------------------------------------------------------

def random_pair(options: list, rng: random.Random) -> list:
    """Two different models that share a base model (models answer side by side on one base)."""
    by_base: dict[str, list] = {}
    for option in options:
        by_base.setdefault(option.model, []).append(option)
    groups = [group for group in by_base.values() if len(group) >= 2]
    if not groups:
        raise InputError("a random pair needs two models on one base model: train a policy adapter first "
                         "(Train tab), or pick two models")
    return rng.sample(rng.choice(groups), 2)


def start_match(db: Database, project: str, keys: list[str] | None, messages: list[dict[str, str]], params: Any,
                *, is_chat: bool = False, default_model: str = "default",
                rng: random.Random | None = None) -> ArenaMatch:
    """Two models answer the prompt with one seed (``params.seed``, or a fresh one), sides in random order.

    ``keys``: the two picked models (see annotation.services.catalogue), or empty for a random pair.
    The project and the picks are checked before any model is loaded.
    """
    rng = rng or random.Random()
    with transaction(db) as s:
        proj = find_project(s, project)
        if proj.mode != Mode.pairwise:
            raise InputError(f"arena votes are pairwise labels, but project {proj.name!r} is {proj.mode.value}: "
                             f"pick a pairwise project")
    messages = validate_messages(messages)
    keys = [k for k in (keys or []) if k]
    if keys:
        if len(keys) != 2:
            raise InputError("pick two models for the arena (or none for a random pair)")
        options = catalogue.resolve_models(db, keys, default_model)
    else:
        options = random_pair(catalogue.model_options(db, default_model), rng)
    answers = compare.answer(options, messages, params, seed=params.seed if params.seed is not None
                             else rng.randrange(2**31))
    sides = [ArenaAnswer(model=o.model, adapter=o.adapter, text=a.text, num_tokens=a.num_tokens,
                         finish_reason=a.finish_reason, label=o.name) for o, a in zip(options, answers)]
    sampling = {"temperature": params.temperature, "top_p": params.top_p, "max_new_tokens": params.max_new_tokens}
    return new_match(project, messages, sides, sampling=sampling, seed=answers[0].seed, is_chat=is_chat, rng=rng)


# --------------------------------------------------------------------------------------------
# Recording a vote
# --------------------------------------------------------------------------------------------

def _parse_choice(choice: str) -> Choice:
    try:
        return Choice(choice)
    except ValueError:
        raise InputError(f"unknown vote {choice!r}: use a, b, tie or both_bad") from None


def _check_match(match: ArenaMatch) -> list[dict[str, str]]:
    """InputError unless the match can be stored; returns the canonical prompt messages."""
    if not isinstance(match, ArenaMatch):
        raise InputError("no match to vote on: generate the two answers first")
    if len(match.answers) != 2:
        raise InputError(f"an arena match has exactly two answers, got {len(match.answers)}")
    if sorted(match.shown_order) != [0, 1]:
        raise InputError(f"shown order must be [0, 1] or [1, 0], got {match.shown_order!r}")
    for side in match.answers:
        if not side.identity[0]:
            raise InputError("each answer needs the model that wrote it")
        if not isinstance(side.text, str):
            raise InputError("each answer needs its text")
    if match.answers[0].identity == match.answers[1].identity:
        raise InputError(f"both sides are the same model ({display_name(*match.answers[0].identity)}): "
                         f"pick two different models")
    return validate_messages(match.prompt_messages)


def _project_prompt(session, project: Project, messages: list[dict[str, str]], is_chat: bool) -> Prompt:
    """The project's prompt with these messages (by content hash), added with source 'arena' if new."""
    digest = content_hash(messages)
    prompt = session.scalar(select(Prompt).where(Prompt.project_id == project.id, Prompt.content_hash == digest))
    if prompt is None:
        prompt = Prompt(project_id=project.id, messages=messages, is_chat=is_chat or len(messages) > 1,
                        content_hash=digest, source=SOURCE, meta={})
        session.add(prompt)
        session.flush()
    return prompt


@idempotent
def record_arena_vote(db: Database, match: ArenaMatch, user: str, choice: str,
                      time_taken_ms: int | None = None) -> Receipt:
    """Store a blind vote (``choice`` as shown: ``a`` = the left answer) with the whole match, in one
    transaction. The same match token sent again returns the first receipt (``duplicate=True``)."""
    choice_enum = _parse_choice(choice)
    messages = _check_match(match)
    if time_taken_ms is None:
        time_taken_ms = match.elapsed_ms()
    elif isinstance(time_taken_ms, bool) or not isinstance(time_taken_ms, int) or time_taken_ms < 0:
        raise InputError(f"time taken must be a whole number of milliseconds >= 0, got {time_taken_ms!r}")
    with transaction(db) as s:
        found = s.scalar(select(PairwiseLabel).where(PairwiseLabel.client_token == match.token))
        if found is not None:
            return Receipt("pairwise", found.item_id, [found.id], duplicate=True)
        project = find_project(s, match.project)
        if project.mode != Mode.pairwise:
            raise InputError(f"arena votes are pairwise labels, but project {project.name!r} is "
                             f"{project.mode.value}: pick a pairwise project")
        annotator = ensure_user(s, user)
        prompt = _project_prompt(s, project, messages, match.is_chat)
        # Done at birth: the vote is its one label, so the annotation queue never serves it.
        item = Item(project_id=project.id, prompt_id=prompt.id, status=ItemStatus.done)
        s.add(item)
        sampling = {**match.sampling, "seed": match.seed}
        for position, side in enumerate(match.answers):
            model, adapter = side.identity
            item.responses.append(Response(
                prompt_id=prompt.id, position=position, text=side.text, model=model, adapter=adapter,
                sampling={**sampling, "shown_as": side.label} if side.label else sampling, seed=match.seed,
                num_tokens=side.num_tokens, finish_reason=side.finish_reason, source=SOURCE))
        s.flush()
        left, right = (item.responses[p] for p in match.shown_order)
        label = PairwiseLabel(prompt_id=prompt.id, item_id=item.id, user_id=annotator.id,
                              response_a_id=left.id, response_b_id=right.id, shown_order=list(match.shown_order),
                              choice=choice_enum, source=LabelSource.human, time_taken_ms=time_taken_ms,
                              client_token=match.token)
        s.add(label)
        s.flush()
        return Receipt("pairwise", item.id, [label.id])


# --------------------------------------------------------------------------------------------
# Reading votes back: names, votes, leaderboard
# --------------------------------------------------------------------------------------------

def arena_votes(db: Database, project: str | None = None) -> list[Vote]:
    """Every arena vote (all projects, or one) as (model shown as A, model shown as B, outcome), oldest first."""
    a, b = aliased(Response), aliased(Response)
    with transaction(db) as s:
        stmt = (select(a.model, a.adapter, b.model, b.adapter, PairwiseLabel.choice)
                .join(a, PairwiseLabel.response_a_id == a.id).join(b, PairwiseLabel.response_b_id == b.id)
                .where(a.source == SOURCE, b.source == SOURCE).order_by(PairwiseLabel.id))
        if project:
            stmt = stmt.join(Prompt, PairwiseLabel.prompt_id == Prompt.id).where(
                Prompt.project_id == find_project(s, project).id)
        rows = s.execute(stmt).all()
        trained = trained_adapter_names(s)
    identities = {model_identity(m, ad) for row in rows for m, ad in (row[0:2], row[2:4])}
    names = distinct_names(identities, trained)
    return [Vote(names[model_identity(ma, aa)], names[model_identity(mb, ab)], choice.value)
            for ma, aa, mb, ab, choice in rows]


def arena_leaderboard(db: Database, project: str | None = None, *, n_bootstrap: int = 1000, seed: int = 0,
                      confidence: float = 0.95, anchor: str | None = None) -> Leaderboard:
    """Bradley-Terry ratings with bootstrap intervals from the arena votes (see alignment.leaderboard)."""
    votes = arena_votes(db, project)
    try:
        return leaderboard(votes, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence, anchor=anchor)
    except ValueError as exc:
        raise InputError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Held-out prompts
# --------------------------------------------------------------------------------------------

@dataclass
class DrawnPrompt:
    prompt_id: int
    messages: list[dict[str, str]]
    is_chat: bool

    @property
    def text(self) -> str:
        """The prompt as the prompt box shows it: the last user turn of a chat, the text of a plain one."""
        return self.messages[-1]["content"]


def heldout_prompts(db: Database, project: str) -> list[DrawnPrompt]:
    """The project's prompts that nobody has labelled yet, oldest first."""
    with transaction(db) as s:
        proj = find_project(s, project)
        prompts = s.scalars(select(Prompt).where(Prompt.project_id == proj.id,
                                                 Prompt.id.not_in(labelled_prompt_ids())).order_by(Prompt.id))
        return [DrawnPrompt(p.id, p.messages, p.is_chat) for p in prompts]


def draw_heldout_prompt(db: Database, project: str, rng: random.Random | None = None) -> DrawnPrompt:
    """One held-out prompt of the project at random, or InputError when it has none."""
    prompts = heldout_prompts(db, project)
    if not prompts:
        raise InputError(f"project {project!r} has no prompt without labels to draw: type a prompt, or add "
                         f"prompts in the Projects tab")
    return (rng or random.Random()).choice(prompts)


def typed_prompt(text: str) -> list[dict[str, str]]:
    text = (text or "").strip()
    if not text:
        raise InputError("type a prompt, or draw one from the project's held-out prompts")
    return validate_messages(text_prompt(text))
