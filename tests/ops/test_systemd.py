"""systemd integration: READY=1 through $NOTIFY_SOCKET from a real twistd child, the unit
file, and JSON logs (``twistd --logger=socketeer.logs.json_observer``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger, LogLevel

from socketeer import logs
from socketeer.ops.systemd import ReadinessService, notify
from socketeer.tunnel.node import Node

from support import ROOT
from support.net import connect, free_port, until
from support.properties import configure
from support.relay import Link
from support.twistd import child_env, start, stop

UNIT = ROOT / "etc" / "systemd" / "socketeer@.service"


class Notifications(protocol.DatagramProtocol):
    """The systemd side of sd_notify: collects datagrams, fires when one says READY=1."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.ready: defer.Deferred = defer.Deferred()
        self.stopping: defer.Deferred = defer.Deferred()

    def datagramReceived(self, data: bytes, addr=None) -> None:
        text = data.decode()
        self.messages.append(text)
        lines = text.split("\n")
        if "READY=1" in lines and not self.ready.called:
            self.ready.callback(text)
        if "STOPPING=1" in lines and not self.stopping.called:
            self.stopping.callback(text)


def test_notify_sends_one_datagram(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert notify("READY=1", {"NOTIFY_SOCKET": path})
        assert server.recv(4096) == b"READY=1"
    assert not notify("READY=1", {})  # not under systemd: nothing to do
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})  # logged, no raise


def test_notify_abstract_socket():
    name = f"socketeer-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert notify("STATUS=hello", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(4096) == b"STATUS=hello"


@pytest_twisted.ensureDeferred
async def test_readiness_waits_for_every_node(relay, tmp_path):
    """In-process: READY=1 only after the last node is on its channel."""
    path = str(tmp_path / "notify")
    notes = Notifications()
    port = reactor.listenUNIXDatagram(path, notes)
    late = Node("c", "late", relay.spec.topic, reactor)
    service = ReadinessService([relay.source_node, relay.sink_node, late], {"NOTIFY_SOCKET": path})
    try:
        service.startService()
        # The two relay nodes are up; "late" has no channel yet.
        await until(lambda: notes.messages)
        assert notes.messages == ["STATUS=waiting for the channels of 3 nodes"]
        assert not notes.ready.called
        late.channel_ready(Link())  # its channel comes up
        text = await notes.ready.addTimeout(10, reactor)
        assert text == "READY=1\nSTATUS=relaying: 3 nodes connected"
        service.stopService()
        assert await notes.stopping.addTimeout(10, reactor) == "STOPPING=1"
    finally:
        late.channel_lost()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_twistd_tells_systemd_it_is_ready(tmp_path):
    """A real ``twistd -n socketeer`` with a fake systemd: READY=1 comes after every listener
    is bound and both nodes are on the channel; STOPPING=1 on SIGTERM."""
    path = str(tmp_path / "notify")
    notes = Notifications()
    port = reactor.listenUNIXDatagram(path, notes)
    ports = {"61626": free_port(), "1234": free_port(), "1080": free_port(), "8000": free_port()}
    config = configure("examples/sink.properties", tmp_path, ports)
    source = configure("examples/source.properties", tmp_path, ports)
    # One process running both files' contents: broker, sink node and source node.
    combined = tmp_path / "both.properties"
    combined.write_text(config.read_text() + "\n" + source.read_text())
    env = child_env()
    env["NOTIFY_SOCKET"] = path
    proc = start(combined, 2, env=env)
    try:
        text = await notes.ready.addTimeout(60, reactor)
        assert text == "READY=1\nSTATUS=relaying: 2 nodes connected"
        # By then both nodes have said so, and the source's listener accepts.
        assert proc.output.count(b"is on the channel") == 2
        client = await connect(ports["1234"])
        client.transport.loseConnection()
        assert notes.messages[0] == "STATUS=waiting for the channels of 2 nodes"
    finally:
        clean = await stop(proc)
        await port.stopListening()
    assert clean
    assert notes.stopping.called
    assert b"Traceback" not in proc.output


@pytest_twisted.ensureDeferred
async def test_twistd_json_logs(tmp_path):
    """``--logger=socketeer.logs.json_observer``: every stdout line is one JSON object."""
    ports = {"61626": free_port(), "1234": free_port(), "1080": free_port(), "8000": free_port()}
    config = configure("socketeer.properties", tmp_path, ports)
    env = child_env()
    env["SOCKETEER_LOG_LEVEL"] = "info"
    proc = start(
        config, 3, b"on the channel", env=env, twistd_args=["--logger=socketeer.logs.json_observer"]
    )
    try:
        await proc.ready.addTimeout(60, reactor)
    finally:
        await stop(proc)
    records = [json.loads(line) for line in proc.output.decode().splitlines() if line]
    assert all({"time", "level", "namespace", "message"} <= r.keys() for r in records)
    on = [r for r in records if r["message"].endswith("is on the channel")]
    assert {r["node"] for r in on} == {"si", "so", "px"}
    assert all(r["level"] == "info" and r["namespace"] == "socketeer.tunnel.node.Node" for r in on)
    assert any(r["level"] == "warn" and "not encrypted" in r["message"] for r in records)
    assert not [r for r in records if r["level"] == "debug"]


def test_json_record_fields_and_failures():
    import io

    from twisted.python.failure import Failure

    out = io.StringIO()
    observer = logs.jsonLinesObserver(out)
    log = Logger(namespace="socketeer.test", observer=observer)
    log.info("stream {resource} closed: {sent} bytes", resource="r1", sent=10, secret=object())
    log.failure("oops", Failure(ZeroDivisionError("division by zero")))
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "stream r1 closed: 10 bytes"
    assert (first["resource"], first["sent"], first["level"]) == ("r1", 10, "info")
    assert first["namespace"] == "socketeer.test"
    assert first["secret"].startswith("<object object")
    assert second["level"] == "critical" and "ZeroDivisionError" in second["traceback"]


def test_level_filter_and_message_tracing():
    import io

    out = io.StringIO()
    try:
        observer = logs.filtered(logs.jsonLinesObserver(out), logs.level_from_name("warn"))
        assert logs.trace is False
        log = Logger(namespace="t", observer=observer)
        log.info("hidden")
        log.warn("shown")
        assert [json.loads(x)["message"] for x in out.getvalue().splitlines()] == ["shown"]
        logs.filtered(logs.jsonLinesObserver(out), logs.level_from_name("DEBUG"))
        assert logs.trace is True
        assert logs.level_from_name("nonsense") is LogLevel.info
    finally:
        logs.trace = False


@pytest_twisted.ensureDeferred
async def test_trace_logs_every_message_at_debug(relay):
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    logs.trace = True
    try:
        relay.source_node.ping("si")
        await until(
            lambda: any(
                e.get("type") == "pong" and e.get("log_format", "").startswith("received ")
                for e in events
            )
        )
    finally:
        logs.trace = False
        globalLogPublisher.removeObserver(events.append)
    sent = [
        e for e in events if e.get("log_format", "").startswith("sent ") and e["type"] == "ping"
    ]
    got = [e for e in events if e.get("log_format", "").startswith("received ")]
    assert sent and sent[0]["dest"] == "si"
    assert {e["type"] for e in got} >= {"ping", "pong"}


# -- the unit file -------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_runs_twistd_in_the_foreground_with_notify():
    s = unit_settings()
    assert s["Type"] == ["notify"]
    (start,) = s["ExecStart"]
    assert " --nodaemon --pidfile= socketeer -c /etc/socketeer/%i.properties" in start
    assert start.split()[0].endswith("/twistd")
    assert s["Restart"] == ["on-failure"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for hardening in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "RestrictAddressFamilies"):
        assert hardening in s
    assert s["User"] == ["socketeer"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_file_passes_systemd_analyze(tmp_path):
    bindir = str(Path(sys.executable).parent)
    unit = tmp_path / "socketeer@ci.service"
    unit.write_text(UNIT.read_text().replace("/opt/socketeer/bin", bindir))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "socketeer@ci.service" not in result.stderr, result.stderr
