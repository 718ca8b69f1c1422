"""The check every event handler makes first, on the server: who is calling, and may they do this.

Every Gradio event is a public HTTP endpoint (the API is callable without the page), so each handler
takes the request and calls `caller` before it reads or writes anything. A refusal is raised as a
gr.Error: the handler stops there, no output changes, and the page shows why.
"""
from __future__ import annotations

import gradio as gr

from annotation.auth.actor import Actor, actor_of
from annotation.auth.permissions import Permission, PermissionDenied, has, require, visible_projects
from annotation.ui.context import UIContext

__all__ = ["Actor", "Permission", "caller", "check", "has", "project_choices"]


def caller(ctx: UIContext, request: gr.Request, permission: Permission, project=None,
           typed_name: str | None = None) -> Actor:
    """The caller, once it may do ``permission`` (on ``project``). ``typed_name`` is the name typed
    in the page, which only single-user local mode uses: with accounts the name is the login's."""
    actor = actor_of(ctx, request, typed_name)
    check(ctx, actor, permission, project)
    return actor


def check(ctx: UIContext, actor: Actor, permission: Permission, project=None) -> None:
    """`require`, with a refusal raised as the gr.Error the page shows."""
    try:
        require(actor, permission, None if project in (None, "") else str(project), db=ctx.db)
    except PermissionDenied as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def project_choices(ctx: UIContext, actor: Actor, names: list[str]) -> list[str]:
    """The project names a picker offers this actor: the projects they work on."""
    return visible_projects(ctx.db, actor, names)
