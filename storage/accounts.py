"""Users, project membership and login sessions in the database.

Every function works inside the caller's session: the service that handles one action owns the
transaction. Passwords arrive already hashed (annotation.auth.passwords) and tokens as their
sha256, so nothing here ever holds a secret a stolen database file could replay.
"""
from __future__ import annotations

import unicodedata
from datetime import datetime

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from storage.errors import InputError
from storage.models import LoginSession, Project, ProjectMember, Role, User, utcnow

MAX_NAME = 64  # users.name's length


def check_user_name(name: str | None) -> str:
    """The name stripped, or a clear InputError: it is shown in menus, tables and file names."""
    name = (name or "").strip()
    if not name:
        raise InputError("the user name is empty")
    if len(name) > MAX_NAME:
        raise InputError(f"the user name is longer than {MAX_NAME} characters")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise InputError(f"the user name contains the invisible character U+{ord(bad):04X}: use letters, "
                         "digits, spaces and punctuation")
    return name


def parse_role(text: str | Role) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InputError(f"unknown role {text!r}: use one of {', '.join(r.value for r in Role)}") from None


def find_user(session: Session, name: str | None) -> User:
    user = session.scalar(select(User).where(User.name == check_user_name(name)))
    if user is None:
        raise InputError(f"no user named {name!r}")
    return user


def create_user(session: Session, name: str, role: Role | str, password_hash: str | None = None) -> User:
    """A new user; a name already taken is refused (an existing name from old labels included)."""
    name = check_user_name(name)
    role = parse_role(role)
    if user_exists(session, name):
        raise taken(name)
    user = User(name=name, role=role, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def user_exists(session: Session, name: str) -> bool:
    return bool(session.scalar(select(exists().where(User.name == name))))


def taken(name: str) -> InputError:
    return InputError(f"a user named {name!r} already exists (set a new password for them instead)")


def set_password_hash(session: Session, name: str, password_hash: str) -> User:
    """A new password ends every session the user had: whoever knew the old one is logged out."""
    user = find_user(session, name)
    user.password_hash = password_hash
    session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    return user


def set_role(session: Session, name: str, role: Role | str) -> User:
    """Refuses to demote the last admin who can log in: nobody could manage the app any more
    (the CLI on the server would be the only way back)."""
    user, role = find_user(session, name), parse_role(role)
    if role != Role.admin and admins_who_can_log_in(session) == {user.id}:
        raise InputError(f"{user.name!r} is the last admin: make another user an admin first")
    user.role = role
    return user


def admins_who_can_log_in(session: Session) -> set[int]:
    return set(session.scalars(select(User.id).where(User.role == Role.admin, User.password_hash.is_not(None))))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.created_at, User.id)))


def accounts_exist(session: Session) -> bool:
    """True once any user can log in: from then on the app is in accounts mode, not local mode."""
    return bool(session.scalar(select(exists().where(User.password_hash.is_not(None)))))


def find_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name, Project.staging.is_(False)))
    if project is None:
        raise InputError(f"no project named {name!r}")
    return project


def add_member(session: Session, user_name: str, project_name: str) -> bool:
    """Make the user a member of the project; False when they already were."""
    user, project = find_user(session, user_name), find_project(session, project_name)
    if is_member(session, user.id, project.id):
        return False
    session.add(ProjectMember(project_id=project.id, user_id=user.id))
    session.flush()
    return True


def remove_member(session: Session, user_name: str, project_name: str) -> bool:
    """End the user's membership of the project; False when they were not a member."""
    user, project = find_user(session, user_name), find_project(session, project_name)
    gone = session.execute(delete(ProjectMember).where(ProjectMember.user_id == user.id,
                                                       ProjectMember.project_id == project.id))
    return gone.rowcount > 0


def is_member(session: Session, user_id: int, project_id: int) -> bool:
    return bool(session.scalar(select(exists().where(ProjectMember.user_id == user_id,
                                                     ProjectMember.project_id == project_id))))


def member_projects(session: Session, user_id: int) -> list[str]:
    return list(session.scalars(select(Project.name).join(ProjectMember, ProjectMember.project_id == Project.id)
                                .where(ProjectMember.user_id == user_id).order_by(Project.name)))


def project_members(session: Session, project_name: str) -> list[User]:
    project = find_project(session, project_name)
    return list(session.scalars(select(User).join(ProjectMember, ProjectMember.user_id == User.id)
                                .where(ProjectMember.project_id == project.id).order_by(User.name)))


# Login sessions -----------------------------------------------------------------------------------

def add_login_session(session: Session, user: User, token_hash: str, expires_at: datetime) -> LoginSession:
    row = LoginSession(user_id=user.id, token_hash=token_hash, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def user_of_session(session: Session, token_hash: str, now: datetime | None = None) -> User | None:
    """The user a live session belongs to; None for an unknown, expired or password-less one."""
    # Compared in SQL: SQLite hands timestamps back without their zone (they are stored in UTC).
    return session.scalar(select(User).join(LoginSession, LoginSession.user_id == User.id)
                          .where(LoginSession.token_hash == token_hash, LoginSession.expires_at > (now or utcnow()),
                                 User.password_hash.is_not(None)))


def end_login_session(session: Session, token_hash: str) -> bool:
    return session.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash)).rowcount > 0


def end_expired_sessions(session: Session, now: datetime | None = None) -> int:
    return session.execute(delete(LoginSession).where(LoginSession.expires_at <= (now or utcnow()))).rowcount


def count_login_sessions(session: Session, user_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(LoginSession)
                              .where(LoginSession.user_id == user_id)) or 0)

