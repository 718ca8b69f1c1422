"""Prompt identity: canonical messages and the content hash that de-duplicates prompts per project."""
from __future__ import annotations

import hashlib
import json

from storage.errors import InputError
from storage.records import ROLES

MAX_PROMPT_CHARS = 100_000


def text_prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def validate_messages(messages: list[dict[str, str]], max_chars: int = MAX_PROMPT_CHARS) -> list[dict[str, str]]:
    """Return canonical messages ({role, content} only) or raise InputError saying what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise InputError("a prompt needs at least one message")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"message {i + 1} needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise InputError(f"message {i + 1} has unknown role {m['role']!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise InputError(f"message {i + 1} is empty")
        if len(m["content"]) > max_chars:
            raise InputError(f"message {i + 1} is {len(m['content'])} characters long (limit {max_chars})")
        clean.append({"role": m["role"], "content": m["content"]})
    if clean[-1]["role"] != "user":
        raise InputError("a prompt must end with a user message")
    return clean


def content_hash(messages: list[dict[str, str]]) -> str:
    canonical = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
