"""The ``socketeer`` console script: check, genkey, hash-password, status and connect."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from socketeer.cli.main import main, render_status
from socketeer.passwords import verify

from support.ops import echo_server, free_port, relay_config, start_service, until
from support.relay import Relay, connect, listen
from support.twistd import ROOT, child_env

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


def check(*args: str) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", *args], out, err)
    return out.getvalue(), err.getvalue(), code


# -- check ---------------------------------------------------------------------------------


def test_check_prints_the_resolved_configuration():
    out, err, code = check(str(ROOT / "etc" / "socketeer.properties"))
    assert code == 0
    assert err.rstrip().endswith("socketeer.properties: OK")
    assert "broker:\n  enabled: true\n  listen: tcp:61626:interface=127.0.0.1\n" in out
    assert "sourcesink 1:\n" in out
    assert "  serverport: tcp:1234:interface=127.0.0.1\n" in out
    assert "  connect_timeout: 10.0\n" in out  # defaults are shown
    assert "status: none\n" in out


def test_check_masks_every_secret(tmp_path):
    cfg = tmp_path / "secret.properties"
    cfg.write_text(
        "socketeer.general.messagingserverenabled=true\n"
        "socketeer.general.messagingserveruser.bob=BROKERPASS\n"
        "socketeer.general.statusserverenabled=true\n"
        "socketeer.general.statusserveruser.ops=STATUSPASS\n"
        "socketeer.authorisation.team.user.alice=PROXYPASS\n"
        "socketeer.sourcesink.p.clustername=c\n"
        "socketeer.sourcesink.p.nodename=p\n"
        "socketeer.sourcesink.p.channel=stomp://bob:CHANNELPASS@127.0.0.1:61626/t"
        "?codekey=CODEKEY\n"
        "socketeer.sourcesink.p.serverport=1080\n"
        "socketeer.sourcesink.p.peernode=si\n"
        "socketeer.sourcesink.p.authorisation=team\n"
    )
    out, err, code = check(str(cfg))
    assert code == 0, err
    for secret in ("BROKERPASS", "STATUSPASS", "PROXYPASS", "CHANNELPASS", "CODEKEY"):
        assert secret not in out + err
    assert "bob: ***" in out and "ops: ***" in out and "alice: ***" in out
    assert "channel: stomp://127.0.0.1:61626/t?username=bob&password=***&codekey=***" in out


def test_check_error_names_file_and_line_and_fails(tmp_path):
    cfg = tmp_path / "bad.properties"
    cfg.write_text(
        "socketeer.general.messagingserverenabled=true\n"
        "# a comment\n"
        "socketeer.general.messagingserverport=99999\n"
    )
    out, err, code = check(str(cfg))
    assert code == 1
    assert out == ""
    assert err.startswith(f"error: {cfg}:3: socketeer.general.messagingserverport: ")
    assert "out of range" in err


def test_check_missing_file_fails(tmp_path):
    out, err, code = check(str(tmp_path / "nope.properties"))
    assert code == 1 and "cannot read configuration" in err


def test_check_prints_warnings_and_strict_fails_on_them(tmp_path):
    cfg = tmp_path / "warn.properties"
    cfg.write_text(
        "socketeer.general.messagingserverenabled=true\nsocketeer.general.messagingservrport=1\n"
    )
    out, err, code = check(str(cfg))
    assert code == 0
    assert f"warning: {cfg}:2: unknown key socketeer.general.messagingservrport" in err
    assert "did you mean socketeer.general.messagingserverport?" in err
    out, err, code = check("--strict", "--quiet", str(cfg))
    assert code == 1 and out == "" and "1 warnings (--strict)" in err


# -- genkey, hash-password -----------------------------------------------------------------


def test_genkey_prints_fresh_url_safe_keys():
    keys = []
    for _ in range(2):
        out = io.StringIO()
        assert main(["genkey"], out, io.StringIO()) == 0
        keys.append(out.getvalue().strip())
    assert keys[0] != keys[1]
    for key in keys:
        assert len(base64.urlsafe_b64decode(key + "=")) == 32
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert main(["genkey", "--bytes", "8"], io.StringIO(), io.StringIO()) == 2


@pytest_twisted.ensureDeferred
async def test_console_script_genkey_and_hash_password():
    out, err, code = await run("genkey")
    assert code == 0 and len(out.strip()) == 43
    out, err, code = await run("hash-password", "--iterations", "1000", stdin=b"open sesame\n")
    assert code == 0, err
    stored = out.decode().strip()
    assert stored.startswith("pbkdf2-sha256$1000$")
    assert verify(stored, "open sesame") and not verify(stored, "open sesame\n")
    out, err, code = await run("hash-password", stdin=b"\n")
    assert code == 1 and b"empty password" in err
    out, err, code = await run("--version")
    assert code == 0 and out.startswith(b"socketeer ")


# -- status --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_command_shows_nodes_peers_and_streams(tmp_path):
    ports: list = []
    echo = await echo_server(ports)
    broker, status, forward = free_port(), free_port(), free_port()
    text = relay_config(broker, status, forward, echo, "socketeer.general.statusserveruser.ops=pw")
    cfg = tmp_path / "site.properties"
    cfg.write_text(text)
    root = await start_service(text, str(cfg))
    client = None
    try:
        await until(lambda: root.nodes["so"].peers.rtt("si") is not None)
        client = await connect(forward)
        client.transport.write(b"y" * 5000)
        await until(lambda: len(client.data) == 5000)

        url = f"http://ops:pw@127.0.0.1:{status}/"
        out, err, code = await run("status", url)
        assert code == 0, err
        text_out = out.decode()
        assert text_out.startswith("Socketeer ") and "embedded broker: 2 connections" in text_out
        assert "c/so  forward  up 127.0.0.1:" in text_out
        assert f"127.0.0.1:{echo}" in text_out and "open" in text_out
        assert "4.9 KiB" in text_out  # 5000 bytes each way
        assert "ROUND TRIP" in text_out

        out, err, code = await run("status", "--json", url)
        assert code == 0
        assert {n["node"] for n in json.loads(out)["nodes"]} == {"si", "so"}

        # The URL from the configuration, the password from the environment.
        os.environ["SOCKETEER_STATUS_PASSWORD"] = "pw"
        try:
            out, err, code = await run("status", "-c", str(cfg), "--user", "ops")
        finally:
            del os.environ["SOCKETEER_STATUS_PASSWORD"]
        assert code == 0, err
        assert b"c/si" in out

        out, err, code = await run("status", f"http://127.0.0.1:{status}")
        assert code == 1 and b"authentication required" in err
        out, err, code = await run("status", f"http://127.0.0.1:{free_port()}/status")
        assert code == 1 and b"error: " in err and b"Traceback" not in err
    finally:
        if client is not None:
            client.transport.loseConnection()
        await root.stopService()
        for p in ports:
            await p.stopListening()


def test_render_status_rates_between_two_snapshots():
    def snap(t: float, sent: int) -> dict:
        stream = {
            "id": "s1",
            "peer": "si",
            "client": "127.0.0.1:5000",
            "target": "db:3306",
            "phase": "open",
            "sent": sent,
            "received": 0,
            "age": t,
            "window": 1 << 20,
            "unacknowledged": 0,
        }
        totals = {
            "streams_open": 1,
            "streams_opened": 1,
            "streams_closed": 0,
            "streams_failed": {},
            "streams_expired": 0,
            "bytes_out": sent,
            "bytes_in": 0,
            "messages_out": 0,
            "messages_in": 0,
        }
        node = {
            "id": "so",
            "cluster": "c",
            "node": "so",
            "role": "forward",
            "channel": {"connected": True, "broker": "b:1", "reconnects": 0},
            "peers": [],
            "streams": [stream],
            "totals": totals,
            "denials": {"blacklist 0": 3},
            "dropped": {},
        }
        return {"version": "1", "time": 100 + t, "uptime": t, "broker": None, "nodes": [node]}

    first = render_status(snap(10, 10240))
    assert "1.0 KiB/s" in first  # average over the stream's 10 s
    second = render_status(snap(12, 10240 + 4096), snap(10, 10240))
    assert "2.0 KiB/s" in second  # 4 KiB in the 2 s between the snapshots
    assert "c/so denials: blacklist 0 3" in second


# -- connect -------------------------------------------------------------------------------


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
    cfg.write_text(
        "# only a source: socketeer connect starts neither a broker nor this listener\n"
        f"socketeer.sourcesink.{name}.clustername=c\n"
        f"socketeer.sourcesink.{name}.nodename={name}\n"
        f"socketeer.sourcesink.{name}.channel=stomp://127.0.0.1:{relay.broker_port}/testtopic\n"
        f"socketeer.sourcesink.{name}.serverport={free_port()}\n"
        f"socketeer.sourcesink.{name}.peernode=si\n"
        f"socketeer.sourcesink.{name}.fixedHost=127.0.0.1\n"
        f"socketeer.sourcesink.{name}.fixedPort=9\n"
    )
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


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["connect", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "socketeer" in capsys.readouterr().out
