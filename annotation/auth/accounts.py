"""User administration (the `users` CLI and the Team tab): one transaction per action."""
from __future__ import annotations

from dataclasses import dataclass

from annotation.auth.passwords import hash_password, same_password
from storage import accounts
from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.models import Role


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    can_log_in: bool  # has a password (names from old labels or local mode have none)
    projects: tuple[str, ...]  # the projects they are a member of


def check_new_user(db: Database, name: str, role: Role | str, projects: tuple[str, ...] = ()) -> None:
    """Refuse a taken name, an unknown role or project before anyone types a password for it
    (add_user checks again in its own transaction)."""
    with reading(db) as s:
        name, _ = accounts.check_user_name(name), accounts.parse_role(role)
        if accounts.user_exists(s, name):
            raise accounts.taken(name)
        for project in projects:
            accounts.find_project(s, project)


def check_user(db: Database, name: str) -> None:
    with reading(db) as s:
        accounts.find_user(s, name)


def add_user(db: Database, name: str, role: Role | str, password: str, projects: tuple[str, ...] = ()) -> None:
    """A new account (and its memberships), all or nothing. The hash is computed before the
    transaction: argon2 takes a few hundred milliseconds, the write lock should not."""
    password_hash = hash_password(password)
    with transaction(db) as s:
        user = accounts.create_user(s, name, role, password_hash)
        for project in projects:
            accounts.add_member(s, user.name, project)


def create_account(db: Database, name: str, role: Role | str, password: str, again: str) -> None:
    """A user made in the Team tab, with the password typed twice. In local mode the first account
    must be an admin: once it exists everyone has to log in, and only an admin can add the others."""
    same_password(password, again)
    with reading(db) as s:
        if accounts.parse_role(role) != Role.admin and not accounts.accounts_exist(s):
            raise InputError("the first account must be an admin: from then on everyone logs in, and only an "
                             "admin can add the others")
    add_user(db, name, role, password)


def set_password(db: Database, name: str, password: str) -> None:
    """Give an existing user (an account, or a name from old labels) a new password; this ends
    every session they had."""
    password_hash = hash_password(password)
    with transaction(db) as s:
        accounts.set_password_hash(s, name, password_hash)


def set_role(db: Database, name: str, role: Role | str) -> None:
    with transaction(db) as s:
        accounts.set_role(s, name, role)


def add_membership(db: Database, name: str, project: str) -> bool:
    with transaction(db) as s:
        return accounts.add_member(s, name, project)


def remove_membership(db: Database, name: str, project: str) -> bool:
    with transaction(db) as s:
        return accounts.remove_member(s, name, project)


def user_rows(db: Database) -> list[UserRow]:
    with reading(db) as s:
        return [UserRow(u.name, u.role.value, u.password_hash is not None,
                        tuple(accounts.member_projects(s, u.id))) for u in accounts.list_users(s)]
