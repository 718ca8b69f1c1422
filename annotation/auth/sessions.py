"""Signing browsers in and out, and keeping password guessing slow.

A session is a random token in an HttpOnly cookie; the database keeps only its sha256 (a copied
database file opens no session) with an expiry, so sessions survive restarts and logging out or
changing a password ends them on the server, not just in the browser.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from annotation.auth.passwords import verify_password
from storage import accounts
from storage.db import Database, reading, transaction
from storage.models import User, utcnow

COOKIE = "prefstudio_session"
LIFETIME = timedelta(days=7)

# argon2 takes 64 MiB and a few hundred milliseconds per check: a burst of logins waits its turn
# instead of running the server out of memory.
_checks = threading.BoundedSemaphore(4)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def log_in(db: Database, name: str, password: str) -> str | None:
    """A new session token for the right name and password, else None (whichever was wrong)."""
    name = (name or "").strip()
    with reading(db) as s:
        stored = s.scalar(select(User.password_hash).where(User.name == name))
    with _checks:
        if not verify_password(stored, password or ""):
            return None
    token = secrets.token_urlsafe(32)
    with transaction(db) as s:
        accounts.end_expired_sessions(s)
        user = s.scalar(select(User).where(User.name == name, User.password_hash == stored))
        if user is None:  # the password changed (or the user went) while it was being checked
            return None
        accounts.add_login_session(s, user, token_hash(token), utcnow() + LIFETIME)
    return token


def log_out(db: Database, token: str | None) -> bool:
    if not token:
        return False
    with transaction(db) as s:
        return accounts.end_login_session(s, token_hash(token))


@dataclass(frozen=True)
class Visitor:
    """What the gate needs to know about a request: the app's mode and the session's user."""

    local: bool  # single-user local mode: no account exists, nobody logs in
    user: str | None  # the signed-in user in accounts mode


def visitor(db: Database, token: str | None) -> Visitor:
    """One read transaction per request: is this local mode, and whose session is the cookie?"""
    with reading(db) as s:
        if not accounts.accounts_exist(s):
            return Visitor(local=True, user=None)
        user = accounts.user_of_session(s, token_hash(token)) if token else None
        return Visitor(local=False, user=user.name if user is not None else None)


class LoginLimiter:
    """Login attempts per user name and per client address within a sliding window; past the
    limit the answer is 429 whatever the password, so guessing runs at a few tries a minute.

    An attempt counts when it starts (parallel guesses cannot all slip in before the first one
    fails) and is taken back when it succeeds. The address limit is higher than the name limit:
    a team behind one NAT shares an address."""

    def __init__(self, per_name: int = 5, per_address: int = 20, window: float = 60.0, clock=time.monotonic):
        self.limits = {"name": per_name, "address": per_address}
        self.window, self.clock = window, clock
        self._attempts: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _keys(self, name: str, address: str) -> list[tuple[str, str]]:
        return [("name", (name or "").strip().casefold()), ("address", address or "?")]

    def attempt(self, name: str, address: str) -> float:
        """0 and the attempt counted, or the seconds to wait before the next one is allowed."""
        now = self.clock()
        with self._lock:
            if len(self._attempts) > 10_000:  # many names sprayed: forget those with nothing recent
                self._attempts = defaultdict(deque, {k: v for k, v in self._attempts.items()
                                                     if v and v[-1] > now - self.window})
            wait = 0.0
            for key in self._keys(name, address):
                seen = self._attempts[key]
                while seen and seen[0] <= now - self.window:
                    seen.popleft()
                if len(seen) >= self.limits[key[0]]:
                    wait = max(wait, seen[0] + self.window - now)
            if wait:
                return wait
            for key in self._keys(name, address):
                self._attempts[key].append(now)
            return 0.0

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            for key in self._keys(name, address):
                if self._attempts[key]:
                    self._attempts[key].pop()
