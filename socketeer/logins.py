"""Password logins of the proxy ports, the status server and the embedded broker, checked off
the reactor thread.

A PBKDF2 hash costs tens of milliseconds. Run on the reactor thread it would freeze every
stream of the process for that time, and a cheap path for unknown users would tell an
attacker which users exist. So:

* every check, for a known user or not, runs the same kind of hash (an unknown user is
  checked against a dummy hash with the iterations the configured hashes use most) in the
  reactor's thread pool, at most ``loginthreads`` at once; at most ``loginmaxpending``
  logins wait for a hash, further ones are refused at once (``busy``);
* credentials that passed are remembered (at most ``logincachesize``, for
  ``logincacheage`` seconds) under an HMAC with a per-process random key of the door, the
  user, the *stored* password and the given password: a changed password or a wrong one
  never matches a cached entry, and the cache holds no password;
* an address with ``loginmaxfailures`` failed logins within ``loginfailurewindow`` seconds
  has its logins refused for ``loginlockout`` seconds (``locked-out``), without a hash; at
  most ``loginmaxaddresses`` addresses are remembered (the oldest is forgotten first).

Outcomes are counted per door (``socketeer_logins_total{door,outcome}``) and each cause of
refusal is logged at most once every :data:`LOG_INTERVAL` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from socketeer.config.model import LoginLimits
from socketeer.passwords import dummy_stored, verify
from socketeer.secret import Secret

__all__ = ["ACCEPTED", "LOG_INTERVAL", "OUTCOMES", "Door", "Logins"]

#: Seconds between two log lines for the same cause of refusal.
LOG_INTERVAL = 60.0
#: The ``outcome`` label: verified by a hash, from the cache, failed, refused for the
#: address's failures, refused because too many logins wait for a hash.
OUTCOMES = ("ok", "cached", "failed", "locked-out", "busy")

Runner = Callable[..., defer.Deferred]

#: The outcomes that let a login in.
ACCEPTED = frozenset({"ok", "cached"})


def _accepted(outcome: str) -> bool:
    return outcome in ACCEPTED


@dataclass
class _Failures:
    since: float  # start of the current window
    count: int = 0
    locked_until: float = 0.0


class Logins:
    """What all doors of a process share: the hashing threads, the cache of verified
    credentials, the failed attempts per address, and the counters."""

    log = Logger()

    def __init__(self, limits: LoginLimits, reactor: Any, run: Runner | None = None) -> None:
        self.limits = limits
        self.clock = reactor
        if run is None:

            def run(f: Callable[..., Any], *args: Any) -> defer.Deferred:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

        self._run = run
        self._hashing = defer.DeferredSemaphore(limits.threads)
        self._pending = 0
        self._key = os.urandom(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._last_logged: dict[str, float] = {}
        self._not_logged: Counter[str] = Counter()
        #: (door, outcome) -> logins.
        self.counts: Counter[tuple[str, str]] = Counter()

    def __repr__(self) -> str:
        return f"<Logins {len(self._verified)} cached, {len(self._failures)} addresses>"

    def door(self, name: str, users: Mapping[str, Secret]) -> Door:
        """The logins of one set of users (a proxy's profile, the status server, the broker)."""
        return Door(self, name, users)

    @property
    def pending(self) -> int:
        """Logins waiting for (or running) a hash now."""
        return self._pending

    # -- the parts a Door uses -----------------------------------------------------------------

    def _digest(self, door: str, user: str, stored: str, password: str) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (door, user, stored, password):
            data = part.encode("utf-8", "surrogatepass")
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.digest()

    def _cached(self, digest: bytes) -> bool:
        at = self._verified.get(digest)
        if at is None:
            return False
        if self.clock.seconds() - at > self.limits.cache_age:
            del self._verified[digest]
            return False
        return True

    def _remember(self, digest: bytes) -> None:
        if self.limits.cache_size <= 0:
            return
        self._verified[digest] = self.clock.seconds()
        self._verified.move_to_end(digest)
        while len(self._verified) > self.limits.cache_size:
            self._verified.popitem(last=False)

    def _locked_out(self, address: str) -> bool:
        entry = self._failures.get(address)
        return entry is not None and entry.locked_until > self.clock.seconds()

    def _failed(self, door: str, address: str) -> None:
        limits = self.limits
        if limits.max_failures <= 0:
            return
        now = self.clock.seconds()
        entry = self._failures.get(address)
        if entry is None or now - entry.since > limits.failure_window:
            entry = _Failures(since=now)
            self._failures[address] = entry
        self._failures.move_to_end(address)
        entry.count += 1
        if entry.count >= limits.max_failures:
            entry.locked_until = now + limits.lockout
            entry.since, entry.count = now + limits.lockout, 0  # a fresh window afterwards
            self._note(
                "locked-out",
                "{door} logins from {address} refused for {lockout}s after {failures} failures",
                door=door,
                address=address,
                lockout=limits.lockout,
                failures=limits.max_failures,
            )
        while len(self._failures) > limits.max_addresses:
            self._failures.popitem(last=False)

    def _note(self, cause: str, fmt: str, **kw: Any) -> None:
        """Log *cause* at most once every LOG_INTERVAL seconds, saying how many were not."""
        now = self.clock.seconds()
        last = self._last_logged.get(cause)
        if last is not None and now - last < LOG_INTERVAL:
            self._not_logged[cause] += 1
            return
        self._last_logged[cause] = now
        skipped = self._not_logged.pop(cause, 0)
        more = f" ({skipped} more not logged)" if skipped else ""
        self.log.warn(fmt + more, **kw)

    def _hash(self, stored: str, password: str) -> defer.Deferred:
        """verify() in a thread, at most ``threads`` at once."""
        self._pending += 1

        def done(result: Any) -> Any:
            self._pending -= 1
            return result

        d = self._hashing.run(self._run, verify, stored, password)
        return d.addBoth(done)


class Door:
    """One set of users (login -> stored password) checked through the shared :class:`Logins`."""

    def __init__(self, logins: Logins, name: str, users: Mapping[str, Secret]) -> None:
        self.logins = logins
        self.name = name
        self._users = dict(users)
        # What an unknown user is checked against: a hash as costly as the real ones.
        self._dummy = dummy_stored(s.value for s in self._users.values())

    def __repr__(self) -> str:
        return f"<Door {self.name} {len(self._users)} users>"

    def login(self, user: str, password: str, address: str) -> defer.Deferred:
        """A Deferred firing True if *user*/*password* may log in from *address*.

        Never fails. True may come at once (a cached credential); False at once when the
        address is locked out or too many logins wait; otherwise after a hash in a thread.
        """
        return self.check(user, password, address).addCallback(_accepted)

    def check(self, user: str, password: str, address: str) -> defer.Deferred:
        """Like :meth:`login`, but firing the outcome (one of :data:`OUTCOMES`).

        For doors that answer each refusal differently (the broker's ERROR frame says when
        an address is locked out or the server is busy); the outcome is what is counted.
        """
        logins = self.logins
        counts = logins.counts
        name = self.name
        if logins._locked_out(address):
            counts[name, "locked-out"] += 1
            return defer.succeed("locked-out")
        secret = self._users.get(user)
        stored = secret.value if secret is not None else self._dummy
        digest = logins._digest(name, user, stored, password) if secret is not None else b""
        if secret is not None and logins._cached(digest):
            counts[name, "cached"] += 1
            return defer.succeed("cached")
        if logins.pending >= logins.limits.max_pending:
            counts[name, "busy"] += 1
            logins._note(
                "busy",
                "{door} login from {address} refused: {pending} logins wait for a hash",
                door=name,
                address=address,
                pending=logins.pending,
            )
            return defer.succeed("busy")

        def verdict(ok: bool) -> str:
            if ok and secret is not None:
                counts[name, "ok"] += 1
                logins._remember(digest)
                return "ok"
            counts[name, "failed"] += 1
            logins._failed(name, address)
            return "failed"

        def broken(failure: Any) -> str:
            logins.log.failure("{door} login check failed", failure, door=name)
            counts[name, "failed"] += 1
            return "failed"

        return logins._hash(stored, password).addCallbacks(verdict, broken)
