"""Test helpers for real ``twistd socketeer`` child processes (started and ended by PID)."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from pathlib import Path

from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessExitedAlready

ROOT = Path(__file__).resolve().parents[2]
TWISTD = str(Path(sys.executable).with_name("twistd"))


def child_env() -> dict[str, str]:
    """The checkout first on the path, so twistd finds this tree's plugin and package
    (an editable install's import hook is invisible to twisted.plugin discovery)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(name: str, tmp_path: Path, ports: dict[str, int]) -> Path:
    """Copy an etc/ file, with its well-known ports replaced by free ones."""
    text = (ROOT / "etc" / name).read_text()
    # One pass, whole numbers only: a new port must never be rewritten by a later rule.
    pattern = re.compile(r"\b(" + "|".join(re.escape(old) for old in ports) + r")\b")
    text = pattern.sub(lambda m: str(ports[m.group(1)]), text)
    out = tmp_path / Path(name).name
    out.write_text(text)
    return out


def relay_properties(broker: int, forward: int, target: int, extra: str = "") -> str:
    """Properties for one process: broker, sink ``si``, and source ``so`` forwarding
    127.0.0.1:*forward* to 127.0.0.1:*target*; *extra* lines go under the general keys."""
    return f"""
socketeer.general.messagingserverenabled=true
socketeer.general.messagingserverport={broker}
{extra}
socketeer.sourcesink.si.clustername=c
socketeer.sourcesink.si.nodename=si
socketeer.sourcesink.si.channel=stomp://127.0.0.1:{broker}/t
socketeer.sourcesink.si.isSpawningAndResolvingSink=true
socketeer.sourcesink.so.clustername=c
socketeer.sourcesink.so.nodename=so
socketeer.sourcesink.so.channel=stomp://127.0.0.1:{broker}/t
socketeer.sourcesink.so.serverport={forward}
socketeer.sourcesink.so.peernode=si
socketeer.sourcesink.so.fixedHost=127.0.0.1
socketeer.sourcesink.so.fixedPort={target}
"""


class Twistd(protocol.ProcessProtocol):
    """A twistd child whose output we watch for a line, and whose exit we can await."""

    def __init__(self, wait_for: bytes, count: int) -> None:
        self.output = bytearray()
        self.wait_for, self.count = wait_for, count
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.result: tuple[int | None, int | None] | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and self.output.count(self.wait_for) >= self.count:
            self.ready.callback(self)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"twistd exited early:\n{self.output.decode()}"))
        self.result = (reason.value.exitCode, reason.value.signal)
        self.ended.callback(self.result)


def start(config: Path, nodes: int, wait_for: bytes = b"is on the channel") -> Twistd:
    """Start ``twistd -n socketeer -c config``; ``ready`` fires after ``nodes`` x ``wait_for``."""
    proto = Twistd(wait_for, nodes)
    reactor.spawnProcess(
        proto,
        TWISTD,
        [TWISTD, "-n", "--pidfile=", "socketeer", "-c", str(config)],
        env=child_env(),
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
