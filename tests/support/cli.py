"""Test helpers for the ``socketeer`` console script: run it as a child process."""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import defer, protocol, reactor

from support import ROOT
from support.twistd import child_env

SOCKETEER = str(Path(sys.executable).with_name("socketeer"))


class Child(protocol.ProcessProtocol):
    """A child process fed *stdin* (then closed), its output collected."""

    def __init__(self, stdin: bytes, close_stdin: bool = True) -> None:
        self.stdin, self.close_stdin = stdin, close_stdin
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        if self.close_stdin:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


async def run(*args: str, stdin: bytes = b"", timeout: float = 60) -> tuple[bytes, bytes, int]:
    """Run the installed ``socketeer`` script; (stdout, stderr, exit status)."""
    child = Child(stdin)
    reactor.spawnProcess(child, SOCKETEER, [SOCKETEER, *args], env=child_env(), path=str(ROOT))
    code = await child.ended.addTimeout(timeout, reactor)
    return bytes(child.out), bytes(child.err), code
