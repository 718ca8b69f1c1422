"""Password hashing with argon2id (argon2-cffi): the only place a password is ever seen.

The hasher's defaults are RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes); a hash
records its own parameters, so raising them later still verifies the old hashes.
"""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from storage.errors import InputError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # argon2 takes any length; a cap keeps a login request from costing more than a hash

_hasher = PasswordHasher()
# Checked against when the user name is unknown, so a wrong name costs as long as a wrong password
# and the time taken does not tell which names exist.
_DUMMY_HASH = _hasher.hash("no such user: timing only")


def check_password(password: str | None) -> str:
    if not password:
        raise InputError("the password is empty")
    if len(password) < MIN_LENGTH:
        raise InputError(f"the password is shorter than {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InputError(f"the password is longer than {MAX_LENGTH} characters")
    return password


def same_password(password: str | None, again: str | None) -> str:
    """The password typed twice: a typo in a masked field would lock the user out."""
    if (password or "") != (again or ""):
        raise InputError("the two passwords differ; nothing was changed")
    return check_password(password)


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing hash (a user who cannot log in) never matches."""
    if not password or len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
