"""socketeer.logins: equal work for unknown users, the cache, failure limits, the pending bound.

The hash runs through an injected runner, so these tests see every hash that is (or is not)
computed, and a Clock moves time: nothing here sleeps or measures time (bench/logins.py
measures the cost).
"""

from __future__ import annotations

import threading

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from socketeer.config.model import LoginLimits
from socketeer.logins import Logins
from socketeer.passwords import Authenticator, parse_stored, verify
from socketeer.secret import Secret

from support.logs import captured_log

PASSWORD = "correct horse"


def stored(password: str = PASSWORD, iterations: int = 1000) -> str:
    from socketeer.passwords import hash_password

    return hash_password(password, iterations=iterations)


class Runner:
    """Runs verify() at once, or holds it until release(), and records what it hashed."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.hashed: list[str] = []
        self.held: list[tuple[defer.Deferred, bool]] = []

    def __call__(self, f, stored_value: str, password: str) -> defer.Deferred:
        self.hashed.append(stored_value)
        result = f(stored_value, password)
        if not self.hold:
            return defer.succeed(result)
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, result))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, result in held:
            d.callback(result)


def make(limits: LoginLimits | None = None, hold: bool = False, users=None):
    limits = limits or LoginLimits()
    clock = Clock()
    runner = Runner(hold)
    logins = Logins(limits, clock, run=runner)
    door = logins.door("proxy", users or {"alice": Secret(stored())})
    return logins, door, runner, clock


def result(d: defer.Deferred):
    out: list = []
    d.addCallback(out.append)
    assert out, "the verdict should have come at once"
    return out[0]


def test_unknown_user_costs_a_hash_like_a_known_one():
    logins, door, runner, _ = make(users={"alice": Secret(stored(iterations=4321))})
    assert result(door.login("alice", "wrong", "10.0.0.1")) is False
    assert result(door.login("mallory", "wrong", "10.0.0.2")) is False
    assert len(runner.hashed) == 2
    known, unknown = (parse_stored(s) for s in runner.hashed)
    assert known[0] == unknown[0] == 4321
    assert logins.counts["proxy", "failed"] == 2


def test_the_synchronous_authenticator_uses_the_same_dummy():
    auth = Authenticator({"alice": Secret(stored(iterations=2345))})
    assert parse_stored(auth._dummy)[0] == 2345
    assert Authenticator({"bob": Secret("plain")})._dummy.startswith("\0")


def test_a_verified_password_is_remembered_and_a_wrong_one_is_not():
    logins, door, runner, clock = make()
    assert result(door.login("alice", PASSWORD, "10.0.0.1")) is True
    assert result(door.login("alice", PASSWORD, "10.0.0.1")) is True
    assert len(runner.hashed) == 1  # the second came from the cache
    assert logins.counts["proxy", "cached"] == 1
    assert result(door.login("alice", "not it", "10.0.0.1")) is False
    assert len(runner.hashed) == 2
    clock.advance(LoginLimits().cache_age + 1)  # too old: hashed again
    assert result(door.login("alice", PASSWORD, "10.0.0.1")) is True
    assert len(runner.hashed) == 3


def test_a_changed_password_is_never_accepted_from_the_cache():
    logins, door, runner, _ = make()
    assert result(door.login("alice", PASSWORD, "10.0.0.1")) is True
    changed = logins.door("proxy", {"alice": Secret(stored("new password"))})
    assert result(changed.login("alice", PASSWORD, "10.0.0.1")) is False
    assert result(changed.login("alice", "new password", "10.0.0.1")) is True
    assert len(runner.hashed) == 3


def test_the_cache_is_bounded():
    users = {f"u{i}": Secret(f"pw{i}") for i in range(10)}
    logins, door, runner, _ = make(LoginLimits(cache_size=3), users=users)
    for i in range(10):
        assert result(door.login(f"u{i}", f"pw{i}", "10.0.0.1")) is True
    assert len(logins._verified) == 3
    assert result(door.login("u9", "pw9", "10.0.0.1")) is True
    assert logins.counts["proxy", "cached"] == 1
    assert result(door.login("u0", "pw0", "10.0.0.1")) is True  # evicted: hashed again
    assert len(runner.hashed) == 11


def test_failures_lock_an_address_out_for_a_while():
    limits = LoginLimits(max_failures=3, failure_window=60, lockout=100)
    logins, door, runner, clock = make(limits)
    with captured_log() as logged:
        for _ in range(3):
            assert result(door.login("alice", "guess", "10.0.0.9")) is False
        hashed = len(runner.hashed)
        # Locked out: even the right password is refused, without a hash.
        assert result(door.login("alice", PASSWORD, "10.0.0.9")) is False
        assert result(door.login("alice", PASSWORD, "10.0.0.9")) is False
        assert len(runner.hashed) == hashed
        assert logins.counts["proxy", "locked-out"] == 2
        # Another address is not affected.
        assert result(door.login("alice", PASSWORD, "10.0.0.8")) is True
        clock.advance(101)
        assert result(door.login("alice", PASSWORD, "10.0.0.9")) is True
    lines = [line for line in logged if "refused for" in line]
    assert len(lines) == 1, logged
    assert "10.0.0.9" in lines[0] and PASSWORD not in lines[0]


def test_failures_outside_the_window_do_not_add_up():
    logins, door, _, clock = make(LoginLimits(max_failures=2, failure_window=10))
    assert result(door.login("alice", "guess", "10.0.0.9")) is False
    clock.advance(11)
    assert result(door.login("alice", "guess", "10.0.0.9")) is False
    assert result(door.login("alice", PASSWORD, "10.0.0.9")) is True


def test_the_failure_map_is_bounded():
    logins, door, _, _ = make(LoginLimits(max_addresses=5))
    for i in range(50):
        assert result(door.login("alice", "guess", f"10.0.1.{i}")) is False
    assert len(logins._failures) == 5


def test_too_many_pending_logins_are_refused_at_once():
    limits = LoginLimits(max_pending=2, threads=1)
    logins, door, runner, _ = make(limits, hold=True)
    first = door.login("alice", PASSWORD, "10.0.0.1")
    second = door.login("alice", PASSWORD, "10.0.0.2")
    assert len(runner.hashed) == 1  # one thread: the second waits for the first
    assert logins.pending == 2
    assert result(door.login("alice", PASSWORD, "10.0.0.3")) is False
    assert logins.counts["proxy", "busy"] == 1
    runner.release()
    assert result(first) is True
    runner.release()
    assert result(second) is True
    assert logins.pending == 0


@pytest_twisted.ensureDeferred
async def test_the_default_runner_hashes_in_a_thread():
    """Through the reactor's thread pool (the real runner), verify() still decides."""
    threads: list[str] = []

    def spy(stored_value: str, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return verify(stored_value, password)

    logins = Logins(LoginLimits(), reactor)
    d = logins._hashing.run(logins._run, spy, stored(), PASSWORD)
    assert await d.addTimeout(20, reactor) is True
    assert threads and threads[0] != threading.main_thread().name
    door = logins.door("status", {"alice": Secret(stored())})
    assert await door.login("alice", PASSWORD, "127.0.0.1").addTimeout(20, reactor) is True
    assert await door.login("bob", PASSWORD, "127.0.0.1").addTimeout(20, reactor) is False
