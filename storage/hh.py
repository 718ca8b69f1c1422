"""The Anthropic HH-RLHF transcript format: ``"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:"``.

The one reader and writer of HH text, for the importers, the exporters and the training data
loader (:mod:`alignment.training.data`, which may import this module and no other part of
storage: it depends on the standard library only, tests/test_layering.py checks it).

* :func:`parse_hh_dialogue` / :func:`render_hh_dialogue`: a dialogue <-> chat messages (text
  before the first tag is a system message; one space after each tag is dropped on reading and
  written back on rendering, so a transcript read in and written out comes back byte for byte);
* :func:`hh_prompt_dialogue`: the dialogue of an HH-shaped *prompt* (one that ends with an open
  ``"\\n\\nAssistant:"`` turn the answer continues), or None for any other string.
"""
from __future__ import annotations

import re

HUMAN_TAG = "\n\nHuman:"
ASSISTANT_TAG = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_dialogue(dialogue: str) -> list[dict]:
    """"\\n\\nHuman: a\\n\\nAssistant: b" -> messages; text before the first tag becomes a system message.

    Only the single space after each tag is dropped, so rendering the messages gives the text back.
    """
    if dialogue.startswith("Human:"):  # a transcript without the customary leading blank line
        dialogue = "\n\n" + dialogue
    preamble, *turns = _TURN.split(dialogue)
    messages = [{"role": "system", "content": preamble}] if preamble.strip() else []
    for tag, content in zip(turns[::2], turns[1::2]):
        role = "user" if tag == "Human" else "assistant"
        messages.append({"role": role, "content": content.removeprefix(" ")})
    return messages


def render_hh_dialogue(messages: list[dict]) -> str:
    """Messages as "\\n\\nHuman: a\\n\\nAssistant: b"; a system message is the text before the first turn.

    The inverse of :func:`parse_hh_dialogue`: one space after each tag, content verbatim.
    """
    parts = []
    for message in messages:
        if message["role"] == "system":
            parts.append(message["content"])
        else:
            tag = HUMAN_TAG if message["role"] == "user" else ASSISTANT_TAG
            parts.append(f"{tag} {message['content']}")
    return "".join(parts)


def hh_prompt_dialogue(text: str) -> str | None:
    """The dialogue of an HH-shaped prompt string without its final Assistant tag, else None."""
    open_turn = text.removesuffix(" ")
    has_human = HUMAN_TAG in open_turn or open_turn.startswith("Human:")
    if has_human and open_turn.endswith(ASSISTANT_TAG):
        return open_turn[: -len(ASSISTANT_TAG)]
    return None
