"""Who may do what: the permissions, the role table, and `require`, the one check every event handler
makes on the server before it reads or writes anything.

A permission is granted by the caller's role (ROLE_PERMISSIONS); a project-scoped one (labelling,
undo, the arena, review) also needs the caller to be a member of the project, except for admins,
who work on every project. Single-user local mode (Actor.local) grants everything: there is nobody
else to keep out.

Refusals say what the caller may not do, never what exists: a project that does not exist and one
the caller is not a member of get the same answer.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from sqlalchemy import select

from storage.accounts import member_projects
from storage.db import Database, reading
from storage.errors import InputError
from storage.models import Role, User

if TYPE_CHECKING:
    from annotation.auth.actor import Actor


class Permission(str, enum.Enum):
    # Granted to every role (annotators, reviewers, admins)
    label = "label"  # label a project's items (project-scoped)
    undo_own = "undo_own"  # take back one's own last label (project-scoped)
    vote_arena = "vote_arena"  # play the blind arena; a vote is a pairwise label of the project (project-scoped)
    view_own_stats = "view_own_stats"  # one's own label counts, times and skips, on one's projects
    # Reviewers and admins
    review = "review"  # the review queue of a project (project-scoped)
    # Admins only
    view_team_stats = "view_team_stats"  # every project's progress, every annotator's figures
    manage_projects = "manage_projects"  # create projects, edit settings and guidelines, add prompts, run the judge
    manage_users = "manage_users"  # accounts, roles and project membership
    import_export = "import_export"  # import files into a project, export labels
    run_jobs = "run_jobs"  # launch, cancel and resume jobs, see the queue, download outputs
    manage_models = "manage_models"  # the trained models, their lineage and evaluations
    run_inference = "run_inference"  # generate on demand: side by side, best-of-N, "try it"
    use_server_paths = "use_server_paths"  # name a model, adapter or file by its path on the server


PROJECT_SCOPED = frozenset({Permission.label, Permission.undo_own, Permission.vote_arena, Permission.review})

_ANNOTATOR = frozenset({Permission.label, Permission.undo_own, Permission.vote_arena, Permission.view_own_stats})
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.annotator: _ANNOTATOR,
    Role.reviewer: _ANNOTATOR | {Permission.review},
}


class PermissionDenied(InputError):
    """The caller may not do this. The message names the action, never data the caller cannot see."""


def has(actor: Actor, permission: Permission) -> bool:
    """Whether the actor's role grants ``permission`` (on some project, for a project-scoped one)."""
    if actor.local:
        return True
    return actor.name is not None and actor.role is not None and permission in ROLE_PERMISSIONS[Role(actor.role)]


def works_on_every_project(actor: Actor) -> bool:
    return actor.local or actor.role == Role.admin


def require(actor: Actor, permission: Permission, project: str | None = None, db: Database | None = None) -> None:
    """Return if ``actor`` may do ``permission`` (on ``project``), else raise PermissionDenied.

    A project-scoped permission checked with a project needs ``db`` to look up the membership
    (unless the actor works on every project); without a project only the role is checked.
    """
    if actor.local:
        return
    if actor.name is None or actor.role is None:
        raise PermissionDenied("log in first")
    if permission not in ROLE_PERMISSIONS[Role(actor.role)]:
        raise PermissionDenied(f"your role ({Role(actor.role).value}) may not {_ACTIONS[permission]}")
    if project is None or permission not in PROJECT_SCOPED or works_on_every_project(actor):
        return
    if db is None:
        raise TypeError("require() needs db= to check project membership")
    if project not in projects_of(db, actor):
        # Also for a project that does not exist: the answer must not tell the two apart.
        raise PermissionDenied(f"you are not a member of project {str(project)[:80]!r}: ask an admin to add you")


def projects_of(db: Database, actor: Actor) -> list[str]:
    """The names of the projects the actor is a member of (admins: see works_on_every_project)."""
    if actor.name is None:
        return []
    with reading(db) as s:
        user_id = s.scalar(select(User.id).where(User.name == actor.name))
        return [] if user_id is None else member_projects(s, user_id)


def visible_projects(db: Database, actor: Actor, names: list[str]) -> list[str]:
    """``names`` (in their order) cut to the projects the actor works on: all for an admin or in local mode."""
    if works_on_every_project(actor):
        return names
    mine = set(projects_of(db, actor))
    return [n for n in names if n in mine]


# What a refusal says the role may not do.
_ACTIONS = {
    Permission.label: "label items",
    Permission.undo_own: "undo labels",
    Permission.vote_arena: "vote in the arena",
    Permission.view_own_stats: "see label statistics",
    Permission.review: "review labels",
    Permission.view_team_stats: "see the team's statistics",
    Permission.manage_projects: "create or change projects",
    Permission.manage_users: "manage users",
    Permission.import_export: "import or export data",
    Permission.run_jobs: "run or watch jobs",
    Permission.manage_models: "see or manage models",
    Permission.run_inference: "generate with models on demand",
    Permission.use_server_paths: "name files or folders on the server",
}
