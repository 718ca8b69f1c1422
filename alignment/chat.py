"""Chat conversations and how they become model prompts.

This module owns the conversation format used across prefstudio (a list of
``{"role": ..., "content": ...}`` dicts), its validation, and rendering a conversation into the
prompt string a model continues, ending where the assistant's next reply begins.
"""
from __future__ import annotations

from typing import Any

Messages = list[dict[str, str]]

ROLES = ("system", "user", "assistant")

# Labels for the plain-text fallback used when a tokenizer ships without a chat template.
_FALLBACK_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def validate_messages(messages: Messages) -> None:
    """Raise ValueError unless ``messages`` is a non-empty list of well-formed chat turns."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {index} must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {index} content must be a str, got {type(message.get('content')).__name__}")


def _render_fallback(messages: Messages) -> str:
    """``User: ...`` / ``Assistant: ...`` transcript ending with an open ``Assistant:`` turn."""
    turns = [f"{_FALLBACK_LABELS[m['role']]}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The prompt string for ``messages``, ready for the assistant's next reply.

    Uses the tokenizer's chat template (so special tokens are already in the string: tokenize it
    with ``add_special_tokens=False``); falls back to a readable transcript without one.
    """
    validate_messages(messages)
    if not getattr(tokenizer, "chat_template", None):
        return _render_fallback(messages)
    # Only role/content reach the template: extra keys (ids, timestamps) are app metadata.
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
