"""``socketeer connect``: one stream on standard input and output, half-close included."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from support import ROOT
from support.cli import SOCKETEER, Child, run
from support.net import echo_server, free_port, listen
from support.properties import Properties, channel_url
from support.relay import Relay
from support.twistd import child_env


@implementer(IHalfCloseableProtocol)
class Shout(protocol.Protocol):
    """Reads until EOF, then answers with what it read, upper-cased."""

    got = b""

    def dataReceived(self, data: bytes) -> None:
        self.got += data

    def readConnectionLost(self) -> None:
        self.transport.write(self.got.upper())
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class SayAndHalfClose(protocol.Protocol):
    """Answers at once, then half-closes (and would go on reading)."""

    def connectionMade(self) -> None:
        self.transport.write(b"bye")
        self.transport.loseWriteConnection()


class StdoutWatcher(Child):
    """A child whose stdin stays open (as for ssh's ProxyCommand); says when stdout closed."""

    def __init__(self) -> None:
        super().__init__(b"", close_stdin=False)
        self.stdout_closed: defer.Deferred = defer.Deferred()
        #: The exit status (processEnded waits for our end of stdin too).
        self.exited: defer.Deferred = defer.Deferred()

    def childConnectionLost(self, fd: int) -> None:
        if fd == 1 and not self.stdout_closed.called:
            self.stdout_closed.callback(None)

    def processExited(self, reason) -> None:
        self.exited.callback(reason.value.exitCode)


@pytest_twisted.ensureDeferred
async def test_connect_stdout_ends_at_eof_and_the_command_at_close(relay, tmp_path):
    """The target's EOF closes our stdout at once (as with ssh -W), while stdin stays open;
    a CLOSE then (here: the sink shutting down) ends the command, although Twisted's
    StandardIO, with stdout gone, reports nothing more by itself."""
    ports: list = []
    target = await listen(protocol.Factory.forProtocol(SayAndHalfClose), ports)
    cfg = connect_config(tmp_path, relay)
    child = StdoutWatcher()
    args = [SOCKETEER, "connect", "-c", str(cfg), "127.0.0.1", str(target)]
    reactor.spawnProcess(child, SOCKETEER, args, env=child_env(), path=str(ROOT))
    try:
        await child.stdout_closed.addTimeout(30, reactor)
        assert bytes(child.out) == b"bye"
        assert not child.exited.called
        (stream,) = relay.sink_node.streams.values()
        stream.shutdown()  # CLOSE to the command
        code = await child.exited.addTimeout(30, reactor)
        assert code == 0, bytes(child.err).decode()
    finally:
        if not child.exited.called:
            child.transport.signalProcess("KILL")
        child.transport.closeStdin()
        await child.ended.addTimeout(30, reactor)
        for p in ports:
            await p.stopListening()


def connect_config(tmp_path: Path, relay: Relay, name: str = "cli") -> Path:
    cfg = tmp_path / "client.properties"
    url = channel_url(relay.broker_port, "testtopic")
    comment = "# only a source: socketeer connect starts neither a broker nor this listener"
    cfg.write_text(str(Properties().add(comment).forward(name, url, free_port(), 9)))
    return cfg


@pytest_twisted.ensureDeferred
async def test_connect_relays_stdin_and_stdout(relay, tmp_path):
    ports: list = []
    echo = await echo_server(ports)
    cfg = connect_config(tmp_path, relay)
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several windows' worth, both ways
    try:
        out, err, code = await run("connect", "-c", str(cfg), "127.0.0.1", str(echo), stdin=payload)
        assert code == 0, err.decode()
        assert hashlib.sha256(out).hexdigest() == hashlib.sha256(payload).hexdigest()
        assert err == b""  # quiet by default: stdout and stderr belong to ssh
        # It ran as a node of its own, next to whatever uses the same file.
        assert [p for p in relay.sink_node.peers if p.startswith("cli-")]
        assert relay.sink_node.stats.streams_closed == 1
    finally:
        for p in ports:
            await p.stopListening()


@pytest_twisted.ensureDeferred
async def test_connect_stdin_eof_is_a_half_close(relay, tmp_path):
    """The target sees EOF and may still answer, as with ``ssh -W``."""
    ports: list = []
    target = await listen(protocol.Factory.forProtocol(Shout), ports)
    cfg = connect_config(tmp_path, relay)
    try:
        out, err, code = await run("connect", "-c", str(cfg), "127.0.0.1", str(target), stdin=b"hi")
        assert (out, code) == (b"HI", 0), err
    finally:
        for p in ports:
            await p.stopListening()


@pytest_twisted.ensureDeferred
async def test_connect_failure_is_one_line_and_status_1(relay, tmp_path):
    cfg = connect_config(tmp_path, relay)
    out, err, code = await run("connect", "-c", str(cfg), "127.0.0.1", str(free_port()))
    assert code == 1 and out == b""
    assert err.decode().startswith("socketeer connect: cannot open 127.0.0.1:")
    assert "via node si: refused" in err.decode()
    assert err.count(b"\n") == 1


@pytest_twisted.ensureDeferred
async def test_connect_applies_the_sources_lists(relay, tmp_path):
    ports: list = []
    echo = await echo_server(ports)
    cfg = connect_config(tmp_path, relay)
    with cfg.open("a") as f:
        f.write(
            "socketeer.sourcesink.cli.blacklist=lab\n"
            "socketeer.blacklist.lab.host=10.9.9.9\n"
            "socketeer.sourcesink.cli.maplist=db\n"
            "socketeer.maplist.db.orghost=db.example\n"
            "socketeer.maplist.db.orgport=5432\n"
            "socketeer.maplist.db.maphost=127.0.0.1\n"
            f"socketeer.maplist.db.mapport={echo}\n"
        )
    try:
        out, err, code = await run("connect", "-c", str(cfg), "db.example", "5432", stdin=b"sql")
        assert (out, code) == (b"sql", 0), err
        out, err, code = await run("connect", "-c", str(cfg), "10.9.9.9", "22")
        assert code == 1 and out == b""
        assert err.decode().startswith("socketeer connect: 10.9.9.9:22: ")
        assert "blacklist" in err.decode()
    finally:
        for p in ports:
            await p.stopListening()


@pytest_twisted.ensureDeferred
async def test_connect_via_and_config_errors(relay, tmp_path):
    cfg = connect_config(tmp_path, relay)
    out, err, code = await run("connect", "-c", str(cfg), "--via", "nope", "h", "1")
    assert code == 1 and b"no sourcesink 'nope'" in err and b"there are: cli" in err
    sink_only = tmp_path / "sink.properties"
    sink_only.write_text((ROOT / "etc" / "examples" / "sink.properties").read_text())
    out, err, code = await run("connect", "-c", str(sink_only), "h", "1")
    assert code == 1 and b"has no source" in err
    out, err, code = await run("connect", "-c", str(tmp_path / "missing"), "h", "1")
    assert code == 1 and b"cannot read configuration" in err
    out, err, code = await run("connect", "-c", str(cfg), "h", "0")
    assert code == 2
