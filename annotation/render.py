"""Safe rendering of untrusted text (prompts, model output) for the browser.

Markdown is rendered on the server with markdown-it in CommonMark mode with raw HTML disabled:
any `<script>`, `<img onerror=...>` or other tag in the text comes out escaped, as visible text, and
markdown-it's link validation drops `javascript:`/`vbscript:`/`data:` URLs. The result is then safe
to place in a `gr.HTML` component. Never hand model output to the browser any other way.
"""
from __future__ import annotations

import html

from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def markdown_to_safe_html(text: str) -> str:
    return _md.render(text or "")


def render_messages(messages: list[dict[str, str]], is_chat: bool) -> str:
    """A prompt as safe HTML: plain prompts as markdown, chats as one block per turn."""
    if not is_chat and len(messages) == 1:
        return f'<div class="ps-prompt">{markdown_to_safe_html(messages[0]["content"])}</div>'
    turns = []
    for m in messages:
        role = html.escape(m["role"])
        turns.append(f'<div class="ps-turn ps-{role}"><div class="ps-role">{role}</div>'
                     f'{markdown_to_safe_html(m["content"])}</div>')
    return '<div class="ps-prompt ps-chat">' + "".join(turns) + "</div>"


def render_response(text: str, title: str) -> str:
    return (f'<div class="ps-response"><div class="ps-response-title">{html.escape(title)}</div>'
            f'<div class="ps-response-body">{markdown_to_safe_html(text)}</div></div>')
