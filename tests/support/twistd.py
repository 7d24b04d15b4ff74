"""Test helpers for real ``twistd socketeer`` child processes (started and ended by PID)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessExitedAlready

from support import ROOT

TWISTD = str(Path(sys.executable).with_name("twistd"))


def child_env() -> dict[str, str]:
    """The checkout first on the path, so twistd finds this tree's plugin and package
    (an editable install's import hook is invisible to twisted.plugin discovery)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Twistd(protocol.ProcessProtocol):
    """A twistd child whose output we watch for lines, and whose exit we can await.

    ``ready`` fires once *wait_for* appeared *count* times; ``seen`` waits for any other text.
    """

    def __init__(self, wait_for: bytes, count: int) -> None:
        self.output = bytearray()
        self.wait_for, self.count = wait_for, count
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.result: tuple[int | None, int | None] | None = None
        self._waiters: list[tuple[bytes, int, defer.Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and self.output.count(self.wait_for) >= self.count:
            self.ready.callback(self)
        for entry in list(self._waiters):
            text, count, d = entry
            if self.output.count(text) >= count:
                self._waiters.remove(entry)
                d.callback(None)

    errReceived = outReceived

    def seen(self, text: bytes, count: int = 1, timeout: float = 30) -> defer.Deferred:
        """Fires once *text* has appeared *count* times in the output."""
        d: defer.Deferred = defer.Deferred()
        if self.output.count(text) >= count:
            d.callback(None)
        else:
            self._waiters.append((text, count, d))
        return d.addTimeout(timeout, reactor)

    def processEnded(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"twistd exited early:\n{self.output.decode()}"))
        for _, _, d in self._waiters:
            d.errback(RuntimeError(f"twistd ended:\n{self.output.decode()}"))
        self._waiters.clear()
        self.result = (reason.value.exitCode, reason.value.signal)
        self.ended.callback(self.result)


def start(
    config: Path,
    nodes: int,
    wait_for: bytes = b"is on the channel",
    *,
    env: dict[str, str] | None = None,
    twistd_args: Sequence[str] = (),
) -> Twistd:
    """Start ``twistd -n [twistd_args] socketeer -c config`` (environment: *env*, default
    ``child_env()``); ``ready`` fires after ``nodes`` x ``wait_for``."""
    proto = Twistd(wait_for, nodes)
    reactor.spawnProcess(
        proto,
        TWISTD,
        [TWISTD, "-n", "--pidfile=", *twistd_args, "socketeer", "-c", str(config)],
        env=child_env() if env is None else env,
        path=str(ROOT),
    )
    return proto


async def stop(proto: Twistd) -> bool:
    """SIGTERM, then wait; True if twistd shut down cleanly (it re-raises the signal)."""
    if proto.result is None:
        try:
            proto.transport.signalProcess(signal.SIGTERM)
        except ProcessExitedAlready:
            pass  # it is gone; processEnded is on its way
        await proto.ended.addTimeout(30, reactor)
    code, sig = proto.result
    return sig == signal.SIGTERM and b"Server Shut Down." in proto.output
