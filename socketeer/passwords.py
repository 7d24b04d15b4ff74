"""Stored passwords: plain or PBKDF2-hashed, checked in constant time.

Proxy users (authorisation profiles), broker users and status server users all use it.
Passwords in the properties file are either plain text or a PBKDF2 hash written as
``pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>`` (``hash_password`` makes one),
so a leaked configuration file need not leak the passwords. Comparison is constant-time,
and an unknown user costs as much as a known one, so timing tells nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections import Counter
from collections.abc import Iterable, Mapping

from socketeer.secret import Secret

PBKDF2_PREFIX = "pbkdf2-sha256$"
DEFAULT_ITERATIONS = 200_000


class BadPasswordHash(ValueError):
    """A stored value starts like a hash but is not a well-formed one."""


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{PBKDF2_PREFIX}{iterations}${b64(salt).decode()}${b64(digest).decode()}"


def parse_stored(stored: str) -> tuple[int, bytes, bytes] | None:
    """(iterations, salt, digest) of a hashed password; None for a plain-text one."""
    if not stored.startswith(PBKDF2_PREFIX):
        return None
    try:
        iterations_text, salt_text, digest_text = stored[len(PBKDF2_PREFIX) :].split("$")
        iterations = int(iterations_text)
        salt = base64.b64decode(salt_text, validate=True)
        digest = base64.b64decode(digest_text, validate=True)
    except ValueError:
        raise BadPasswordHash(
            "expected pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>"
        ) from None
    if not 1000 <= iterations <= 10_000_000 or len(digest) != 32 or not salt:
        raise BadPasswordHash("iterations must be 1000..10000000 and the hash 32 bytes")
    return iterations, salt, digest


def verify(stored: str, password: str) -> bool:
    parsed = parse_stored(stored)
    if parsed is None:
        return hmac.compare_digest(stored.encode(), password.encode())
    iterations, salt, digest = parsed
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.compare_digest(candidate, digest)


def dummy_stored(stored: Iterable[str]) -> str:
    """What an unknown user's password is checked against: a hash with the iterations the
    stored hashes use most (plain text when none is hashed), so that checking it costs what
    checking a real user's password costs, and the time taken does not tell who exists."""
    iterations = Counter(p[0] for p in map(parse_stored, stored) if p is not None)
    if not iterations:
        return "\0no such user"
    return hash_password(os.urandom(16).hex(), iterations=iterations.most_common(1)[0][0])


class Authenticator:
    """The users of one authorisation profile, checked on the calling thread.

    The proxy ports use :class:`socketeer.logins.Door` (threads, cache, failure limits);
    this synchronous check serves tests and tools.
    """

    def __init__(self, users: Mapping[str, Secret]) -> None:
        self._users = dict(users)
        self._dummy = dummy_stored(s.value for s in self._users.values())

    def __repr__(self) -> str:
        return f"<Authenticator {len(self._users)} users>"

    def check(self, username: str, password: str) -> bool:
        stored = self._users.get(username)
        if stored is None:
            verify(self._dummy, password)  # same work as for a known user
            return False
        return verify(stored.value, password)

    def login(self, user: str, password: str, address: str) -> bool:
        """:meth:`socketeer.logins.Door.login`'s interface, answered at once."""
        return self.check(user, password)
