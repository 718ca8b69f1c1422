"""Accounts in storage and services: users, hashed passwords, membership, login sessions, and who
a handler's caller is (annotation.auth.actor), on a real database."""
from __future__ import annotations

from datetime import timedelta

import gradio as gr
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from annotation.auth import ANONYMOUS, Actor, actor_of, local_mode
from annotation.auth.accounts import (UserRow, add_membership, add_user, create_account, remove_membership,
                                     set_password, set_role, user_rows)
from annotation.auth.passwords import hash_password, verify_password
from annotation.ui.context import UIContext
from storage import accounts
from storage.db import MIGRATIONS_DIR, make_engine, reading, transaction, upgrade_schema
from storage.errors import InputError
from storage.models import LoginSession, ProjectMember, Role, User, utcnow
from tests.factories import make_project

PASSWORD = "correct horse battery"


def snapshot(db) -> list:
    with reading(db) as s:
        return [(u.name, u.role.value, u.password_hash) for u in accounts.list_users(s)] + \
            list(s.execute(select(ProjectMember.project_id, ProjectMember.user_id)).all())


@pytest.mark.databases
def test_users_get_argon2id_hashes_roles_and_memberships(db):
    make_project(db, "p")
    make_project(db, "q")
    add_user(db, "ada", "admin", PASSWORD)
    add_user(db, "rev", Role.reviewer, PASSWORD, projects=("p", "q"))
    with reading(db) as s:
        ada = accounts.find_user(s, "ada")
        assert ada.password_hash.startswith("$argon2id$") and PASSWORD not in ada.password_hash
        assert verify_password(ada.password_hash, PASSWORD) and not verify_password(ada.password_hash, "wrong one!")
    assert user_rows(db) == [UserRow("ada", "admin", True, ()), UserRow("rev", "reviewer", True, ("p", "q"))]
    assert remove_membership(db, "rev", "q") and not remove_membership(db, "rev", "q")
    assert add_membership(db, "ada", "q") and not add_membership(db, "ada", "q")
    assert [r.projects for r in user_rows(db)] == [("q",), ("p",)]


@pytest.mark.databases
def test_bad_account_input_is_refused_with_a_clear_message_and_changes_nothing(db):
    make_project(db, "p")
    add_user(db, "ada", "admin", PASSWORD)
    before = snapshot(db)
    for call, message in [
        (lambda: add_user(db, "ada", "annotator", PASSWORD), "already exists"),
        (lambda: add_user(db, "bob", "boss", PASSWORD), "unknown role 'boss': use one of admin, annotator, reviewer"),
        (lambda: add_user(db, "bob", "annotator", ""), "the password is empty"),
        (lambda: add_user(db, "bob", "annotator", "short"), "shorter than 8"),
        (lambda: add_user(db, "  ", "annotator", PASSWORD), "the user name is empty"),
        (lambda: add_user(db, "b\x00b", "annotator", PASSWORD), "invisible character U\\+0000"),
        (lambda: add_user(db, "b" * 65, "annotator", PASSWORD), "longer than 64"),
        (lambda: add_user(db, "bob", "annotator", PASSWORD, projects=("p", "nope")), "no project named 'nope'"),
        (lambda: set_password(db, "nobody", PASSWORD), "no user named 'nobody'"),
        (lambda: add_membership(db, "ada", "nope"), "no project named 'nope'"),
    ]:
        with pytest.raises(InputError, match=message):
            call()
    assert snapshot(db) == before


@pytest.mark.databases
def test_an_account_from_the_team_tab_needs_its_password_twice_and_the_last_admin_stays(db):
    # Local mode: the first account must be an admin, or nobody could add the others once logins start.
    with pytest.raises(InputError, match="the first account must be an admin"):
        create_account(db, "ann", "annotator", PASSWORD, PASSWORD)
    assert user_rows(db) == []
    create_account(db, "ada", "admin", PASSWORD, PASSWORD)
    before = snapshot(db)
    for call, message in [
        (lambda: create_account(db, "ann", "annotator", PASSWORD, PASSWORD + "!"), "the two passwords differ"),
        (lambda: create_account(db, "ann", "annotator", "short", "short"), "shorter than 8"),
        (lambda: create_account(db, "ada", "annotator", PASSWORD, PASSWORD), "a user named 'ada' already exists"),
        (lambda: set_role(db, "ada", "annotator"), "'ada' is the last admin: make another user an admin first"),
        (lambda: set_role(db, "", "annotator"), "the user name is empty"),
        (lambda: set_role(db, "nobody", "admin"), "no user named 'nobody'"),
    ]:
        with pytest.raises(InputError, match=message):
            call()
    assert snapshot(db) == before
    create_account(db, "ann", "annotator", PASSWORD, PASSWORD)
    # An admin without a password cannot log in: it does not count as the admin who stays.
    with transaction(db) as s:
        accounts.create_user(s, "old-admin", Role.admin)
    with pytest.raises(InputError, match="last admin"):
        set_role(db, "ada", "reviewer")
    set_role(db, "ann", "admin")
    set_role(db, "ada", "reviewer")  # another admin can log in: ada may step down
    assert [(r.name, r.role) for r in user_rows(db)] == [("ada", "reviewer"), ("ann", "admin"), ("old-admin", "admin")]


@pytest.mark.databases
def test_the_schema_holds_one_membership_per_pair_and_only_known_roles(db):
    make_project(db, "p")
    add_user(db, "ann", "annotator", PASSWORD, projects=("p",))
    with pytest.raises(IntegrityError):
        with transaction(db) as s:
            member = s.scalar(select(ProjectMember))
            s.add(ProjectMember(project_id=member.project_id, user_id=member.user_id))
    with pytest.raises(IntegrityError):  # the role CHECK: a value outside the enum never lands
        with transaction(db) as s:
            s.connection().exec_driver_sql("UPDATE users SET role = 'owner'")


@pytest.mark.databases
def test_login_sessions_expire_and_a_new_password_ends_them(db):
    add_user(db, "ann", "annotator", PASSWORD)
    with transaction(db) as s:
        ann = accounts.find_user(s, "ann")
        accounts.add_login_session(s, ann, "a" * 64, utcnow() + timedelta(hours=1))
        accounts.add_login_session(s, ann, "b" * 64, utcnow() - timedelta(seconds=1))
    with reading(db) as s:
        assert accounts.user_of_session(s, "a" * 64).name == "ann"
        assert accounts.user_of_session(s, "b" * 64) is None  # expired
        assert accounts.user_of_session(s, "c" * 64) is None  # unknown
    with transaction(db) as s:
        assert accounts.end_expired_sessions(s) == 1
    set_password(db, "ann", "another good one")
    with reading(db) as s:
        assert s.scalars(select(LoginSession)).all() == []
        assert verify_password(accounts.find_user(s, "ann").password_hash, "another good one")


def test_a_password_check_costs_the_same_for_an_unknown_user_and_never_matches_no_hash():
    assert not verify_password(None, PASSWORD)
    assert not verify_password("not a hash", PASSWORD)
    assert not verify_password(hash_password(PASSWORD), "")


def test_the_caller_is_the_typed_name_in_local_mode_and_the_session_user_with_accounts(db):
    ctx = UIContext(db=db)
    assert local_mode(db)
    assert actor_of(ctx, gr.Request(), "  ann ") == Actor("ann", Role.admin, True)
    assert actor_of(ctx, None) == Actor(None, Role.admin, True)
    with transaction(db) as s:
        accounts.create_user(s, "old-label-name", Role.annotator)  # no password: still local mode
    assert local_mode(db)

    add_user(db, "rev", "reviewer", PASSWORD)
    assert not local_mode(db)
    assert actor_of(ctx, gr.Request(username="rev"), typed_name="ada") == Actor("rev", Role.reviewer, False)
    assert actor_of(ctx, gr.Request(), typed_name="rev") == ANONYMOUS  # a typed name is never trusted
    assert actor_of(ctx, None, typed_name="rev") == ANONYMOUS
    assert actor_of(ctx, gr.Request(username="old-label-name")) == ANONYMOUS  # cannot log in
    assert actor_of(ctx, gr.Request(username="ghost")) == ANONYMOUS


def test_migrating_to_0005_keeps_every_row_that_points_at_a_user(tmp_path):
    """0005 rebuilds the users table (SQLite cannot alter its role CHECK); with foreign keys on,
    dropping the old table would have nulled leases and deleted skips."""
    engine = make_engine(tmp_path / "old.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    with engine.begin() as conn:
        for sql in [
            "INSERT INTO users (id, name, role, created_at) VALUES (1, 'ann', 'annotator', '2026-01-01')",
            "INSERT INTO projects (id, name, mode, k, model, temperature, top_p, max_new_tokens, guidelines, overlap,"
            " queue_target, created_at) VALUES (1, 'p', 'pairwise', 2, 'm', 1, 1, 10, '', 1, 1, '2026-01-01')",
            "INSERT INTO prompts (id, project_id, messages, is_chat, content_hash, source, meta, created_at)"
            " VALUES (1, 1, '[]', 0, 'h', 't', '{}', '2026-01-01')",
            "INSERT INTO items (id, project_id, prompt_id, status, leased_by, created_at)"
            " VALUES (1, 1, 1, 'ready', 1, '2026-01-01')",
            "INSERT INTO skips (id, item_id, user_id, created_at) VALUES (1, 1, 1, '2026-01-01')",
        ]:
            conn.exec_driver_sql(sql)
    upgrade_schema(engine)
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT item_id, user_id FROM skips").all() == [(1, 1)]
        assert conn.exec_driver_sql("SELECT leased_by FROM items").all() == [(1,)]
        assert conn.exec_driver_sql("SELECT name, role, password_hash FROM users").all() == [("ann", "annotator", None)]
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # back on for the app
        conn.exec_driver_sql("UPDATE users SET role = 'reviewer'")
    engine.dispose()


def test_local_mode_answers_loopback_only_even_behind_a_proxy(db):
    """serve binds loopback in local mode; a proxy or tunnel forwarding outside callers in is
    still refused, by the gate every request passes (real app, called through ASGI)."""
    import asyncio

    import httpx

    from annotation.auth.web import build_web_app
    from annotation.ui.app import build_app, launch_kwargs

    app = build_web_app(db, build_app(UIContext(db=db)).queue(), **launch_kwargs())

    async def get(client_host: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client_host, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/gradio_api/info")

    outside = asyncio.run(get("203.0.113.7"))
    assert outside.status_code == 403
    assert "users add NAME --role admin" in outside.json()["error"]
    assert asyncio.run(get("127.0.0.1")).status_code == 200
