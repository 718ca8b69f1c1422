"""Who may do what (annotation.auth.permissions): the role table and `require`, on a real database
with real users and memberships; and that every event handler of the app asks for the request.

The same table is checked over HTTP, endpoint by endpoint, in tests/test_roles.py.
"""
from __future__ import annotations

import inspect

import pytest

from annotation.auth import ANONYMOUS, Actor
from annotation.auth.accounts import add_user
from annotation.auth.permissions import (PROJECT_SCOPED, ROLE_PERMISSIONS, Permission, PermissionDenied, has,
                                         projects_of, require, visible_projects)
from storage.errors import InputError
from storage.models import Role
from tests.factories import make_project

PASSWORD = "correct horse battery"
ANNOTATOR_RIGHTS = {Permission.label, Permission.undo_own, Permission.vote_arena, Permission.view_own_stats}


@pytest.fixture
def team(db):
    """Projects p and q; an admin (member of nothing), an annotator and a reviewer on p, an annotator on nothing."""
    make_project(db, "p")
    make_project(db, "q")
    add_user(db, "ada", Role.admin, PASSWORD)
    add_user(db, "ann", Role.annotator, PASSWORD, projects=("p",))
    add_user(db, "rev", Role.reviewer, PASSWORD, projects=("p",))
    add_user(db, "out", Role.annotator, PASSWORD)
    return {name: Actor(name, role, False) for name, role in
            [("ada", Role.admin), ("ann", Role.annotator), ("rev", Role.reviewer), ("out", Role.annotator)]}


def allowed(actor, permission, project=None, db=None) -> bool:
    try:
        require(actor, permission, project, db=db)
    except PermissionDenied:
        return False
    return True


def test_the_role_table_is_the_issues():
    assert ROLE_PERMISSIONS[Role.admin] == set(Permission)
    assert ROLE_PERMISSIONS[Role.annotator] == ANNOTATOR_RIGHTS
    assert ROLE_PERMISSIONS[Role.reviewer] == ANNOTATOR_RIGHTS | {Permission.review}
    assert set(ROLE_PERMISSIONS) == set(Role), "every role needs a row"
    assert issubclass(PermissionDenied, InputError), "handlers show it as they show bad input"


@pytest.mark.parametrize("permission", list(Permission))
def test_each_permission_by_role_and_project(db, team, permission):
    ada, ann, rev, out = team["ada"], team["ann"], team["rev"], team["out"]
    scoped = permission in PROJECT_SCOPED
    assert allowed(ada, permission, "q" if scoped else None, db)
    for actor in (ann, rev):
        granted = permission in ROLE_PERMISSIONS[actor.role]
        assert allowed(actor, permission, db=db) == granted
        if scoped:
            assert allowed(actor, permission, "p", db) == granted, "a member of p"
            assert not allowed(actor, permission, "q", db), "not a member of q"
    if scoped:
        # The non-member holds the right, on no project.
        assert allowed(out, permission, db=db) == (permission in ANNOTATOR_RIGHTS)
        assert not allowed(out, permission, "p", db)
    assert not allowed(ANONYMOUS, permission, "p" if scoped else None, db)
    assert allowed(Actor(None, None, True), permission, "q" if scoped else None, db), "local mode grants all"
    assert allowed(Actor("x", Role.admin, True), permission, "nope", db)


def test_refusals_tell_the_action_never_whether_a_project_exists(db, team):
    with pytest.raises(PermissionDenied, match=r"^log in first$"):
        require(ANONYMOUS, Permission.label, "p", db=db)
    with pytest.raises(PermissionDenied, match=r"^your role \(annotator\) may not export|import"):
        require(team["ann"], Permission.import_export, db=db)
    refusals = []
    for project in ("q", "no such project"):
        with pytest.raises(PermissionDenied) as caught:
            require(team["ann"], Permission.label, project, db=db)
        refusals.append(str(caught.value).replace(repr(project), "<P>"))
    assert refusals[0] == refusals[1] == "you are not a member of project <P>: ask an admin to add you"


def test_a_project_scoped_check_without_the_database_is_a_bug_not_a_refusal(team):
    with pytest.raises(TypeError, match="needs db="):
        require(team["ann"], Permission.label, "p")
    require(team["ada"], Permission.label, "p")  # admins need no lookup


def test_project_lists_are_cut_to_the_projects_one_works_on(db, team):
    names = ["p", "q", "gone"]
    assert visible_projects(db, team["ada"], names) == names
    assert visible_projects(db, Actor(None, None, True), names) == names
    assert visible_projects(db, team["ann"], names) == ["p"]
    assert visible_projects(db, team["out"], names) == []
    assert visible_projects(db, ANONYMOUS, names) == []
    assert projects_of(db, team["rev"]) == ["p"]
    assert has(team["rev"], Permission.review) and not has(team["ann"], Permission.review)
    assert not has(ANONYMOUS, Permission.label)


def test_every_event_handler_of_the_app_takes_the_request(tmp_path):
    """The handlers check on the server: each one asks Gradio for the request (the HTTP test checks
    what each one then allows)."""
    import gradio as gr

    from annotation.ui.app import build_app
    from annotation.ui.context import UIContext
    from storage.db import open_database

    demo = build_app(UIContext(db=open_database(tmp_path / "app.db")))
    missing = []
    for block_fn in demo.fns.values():
        if block_fn.fn is None:
            continue
        hints = {name: p.annotation for name, p in inspect.signature(block_fn.fn).parameters.items()}
        if not any(h in (gr.Request, "gr.Request") for h in hints.values()):
            missing.append(block_fn.api_name)
    assert len(demo.fns) >= 55
    assert missing == []
