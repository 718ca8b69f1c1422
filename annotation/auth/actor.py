"""Who is calling a Gradio handler: the one answer every handler asks for before it acts.

Every event handler is a public HTTP endpoint, so the caller is worked out on the server, never
taken from the page: in accounts mode it is the session's user (the login layer hands Gradio the
name through mount_gradio_app's auth_dependency, which Gradio puts on request.username); in
single-user local mode (no account has a password, loopback only) it is whoever sits at the
machine, under the name typed in the Annotate tab.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from storage.accounts import accounts_exist
from storage.db import Database, reading
from storage.models import Role, User

if TYPE_CHECKING:
    import gradio as gr

    from annotation.ui.context import UIContext


@dataclass(frozen=True)
class Actor:
    """name: the user acting (None: nobody signed in, or no name typed yet in local mode);
    role: their role (local mode acts as admin: every permission is granted);
    local: single-user local mode."""

    name: str | None
    role: Role | None
    local: bool


ANONYMOUS = Actor(None, None, False)


def local_mode(db: Database) -> bool:
    """True while no account can log in: the app is one person's tool on their own machine."""
    with reading(db) as s:
        return not accounts_exist(s)


def actor_of(ctx: UIContext, request: gr.Request | None, typed_name: str | None = None) -> Actor:
    """The caller of a handler. `typed_name` (the Annotate tab's name box) counts in local mode only:
    with accounts, a name sent by the page is never trusted."""
    with reading(ctx.db) as s:
        if not accounts_exist(s):
            return Actor((typed_name or "").strip() or None, Role.admin, True)
        username = getattr(request, "username", None)
        if not username:
            return ANONYMOUS
        user = s.scalar(select(User).where(User.name == username, User.password_hash.is_not(None)))
        return Actor(user.name, user.role, False) if user is not None else ANONYMOUS
