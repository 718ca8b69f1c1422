"""Adding prompts to a project: typed in the UI, and the starter set a fresh install is seeded with."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from annotation.services.projects import ProjectSettings, create_project, find_project
from storage.db import Database, transaction
from storage.errors import InputError
from storage.models import Project, Prompt
from storage.prompts import content_hash, text_prompt, validate_messages

STARTER_FILE = Path(__file__).resolve().parents[1] / "data" / "starter_prompts.jsonl"
STARTER_PROJECT = "starter"


@dataclass
class AddedPrompts:
    added: int
    duplicates: int


def add_prompt_messages(session, project: Project, prompts: list[tuple[list[dict], bool]],
                        source: str) -> AddedPrompts:
    """Store (messages, is_chat) prompts in the project, skipping ones it already has."""
    seen = set(session.scalars(select(Prompt.content_hash).where(Prompt.project_id == project.id)))
    added = duplicates = 0
    for messages, is_chat in prompts:
        messages = validate_messages(messages)
        digest = content_hash(messages)
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        session.add(Prompt(project_id=project.id, messages=messages, is_chat=is_chat, content_hash=digest,
                           source=source, meta={}))
        added += 1
    return AddedPrompts(added, duplicates)


def add_text_prompts(db: Database, project_name: str, text: str) -> AddedPrompts:
    """Prompts typed in the UI: one per line, or blocks separated by a line holding only '---'."""
    blocks = split_prompt_text(text)
    if not blocks:
        raise InputError("no prompts given: type one prompt per line")
    with transaction(db) as s:
        project = find_project(s, project_name)
        try:
            return add_prompt_messages(s, project, [(text_prompt(b), False) for b in blocks], source="typed")
        except InputError as exc:
            raise InputError(f"prompt not added: {exc}") from None


def split_prompt_text(text: str) -> list[str]:
    text = (text or "").strip()
    if not text:
        return []
    if any(line.strip() == "---" for line in text.splitlines()):
        parts, current = [], []
        for line in text.splitlines():
            if line.strip() == "---":
                parts.append("\n".join(current))
                current = []
            else:
                current.append(line)
        parts.append("\n".join(current))
        return [p.strip() for p in parts if p.strip()]
    return [line.strip() for line in text.splitlines() if line.strip()]


def starter_prompts() -> list[str]:
    with STARTER_FILE.open(encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def seed_starter_project(db: Database, model: str = "default") -> bool:
    """On a fresh database, create the 'starter' pairwise project with the starter prompts."""
    with transaction(db) as s:
        if s.scalar(select(Project.id).where(Project.staging.is_(False)).limit(1)) is not None:
            return False
    create_project(db, ProjectSettings(
        name=STARTER_PROJECT, mode="pairwise", k=2, model=model,
        guidelines=("Pick the response that is more **helpful, honest and harmless**. "
                    "Use *tie* when they are equally good and *both bad* when neither is acceptable "
                    "(you can then write a better answer)."),
    ))
    with transaction(db) as s:
        add_prompt_messages(s, find_project(s, STARTER_PROJECT),
                            [(text_prompt(p), False) for p in starter_prompts()], source="starter")
    return True
