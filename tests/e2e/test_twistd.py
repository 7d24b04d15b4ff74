"""The real thing: ``twistd socketeer`` processes started from the etc/ files, and curl."""

from __future__ import annotations

import os
import shutil

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web import resource, server

from support import ROOT
from support.net import free_port
from support.properties import configure
from support.twistd import TWISTD, child_env, start, stop

PAGE = b"<html>hello through socketeer</html>\n" * 100


class Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        return PAGE


async def web_server(ports: list) -> int:
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(server.Site(Page()))
    ports.append(port)
    return port.getHost().port


async def curl(url: str) -> bytes:
    out, err, code = await getProcessOutputAndValue(
        shutil.which("curl"), ["-sS", "--max-time", "20", url], env=dict(os.environ)
    )
    assert code == 0, err
    return out


need_curl = pytest.mark.skipif(
    shutil.which("curl") is None and not os.environ.get("CI"),
    reason="curl is not installed (CI installs it)",
)


@need_curl
@pytest_twisted.ensureDeferred
async def test_one_process_default_config(tmp_path):
    listeners: list = []
    target = await web_server(listeners)
    ports = {"61626": free_port(), "1234": free_port(), "1080": free_port(), "8000": target}
    proc = start(configure("socketeer.properties", tmp_path, ports), nodes=2)
    try:
        await proc.ready.addTimeout(30, reactor)
        assert await curl(f"http://127.0.0.1:{ports['1234']}/") == PAGE
        assert b"not encrypted" in proc.output
    finally:
        clean = await stop(proc)
        for p in listeners:
            await p.stopListening()
    assert clean
    assert b"Traceback" not in proc.output


@need_curl
@pytest_twisted.ensureDeferred
async def test_two_processes_from_examples(tmp_path):
    listeners: list = []
    target = await web_server(listeners)
    ports = {"61626": free_port(), "1234": free_port(), "1080": free_port(), "8000": target}
    sink = start(configure("examples/sink.properties", tmp_path, ports), nodes=1)
    source = None
    try:
        await sink.ready.addTimeout(30, reactor)
        source = start(configure("examples/source.properties", tmp_path, ports), nodes=1)
        await source.ready.addTimeout(30, reactor)
        for _ in range(3):
            assert await curl(f"http://127.0.0.1:{ports['1234']}/") == PAGE
    finally:
        clean = [await stop(p) for p in (source, sink) if p is not None]
        for p in listeners:
            await p.stopListening()
    assert clean == [True, True]
    for p in (sink, source):
        assert b"Traceback" not in p.output


async def run_twistd(*args: str) -> tuple[bytes, bytes, int]:
    return await getProcessOutputAndValue(
        TWISTD, ["--pidfile=", "socketeer", *args], env=child_env(), path=str(ROOT)
    )


@pytest_twisted.ensureDeferred
async def test_missing_config_file_is_one_line_error(tmp_path):
    out, err, code = await run_twistd("-c", str(tmp_path / "nope.properties"))
    assert code != 0
    text = (out + err).decode()
    assert "nope.properties" in text
    assert "cannot read" in text
    assert "Traceback" not in text


@pytest_twisted.ensureDeferred
async def test_config_option_is_required():
    out, err, code = await run_twistd()
    assert code != 0
    assert "-c/--config FILE is required" in (out + err).decode()
    assert b"Traceback" not in out + err


@pytest_twisted.ensureDeferred
async def test_help_documents_options():
    out, err, code = await run_twistd("--help")
    assert code == 0
    assert b"--config=" in out
    assert b"properties" in out


@pytest_twisted.ensureDeferred
async def test_invalid_value_names_key_file_and_line(tmp_path):
    bad = tmp_path / "bad.properties"
    bad.write_text(
        "socketeer.general.messagingserverenabled=true\n"
        "socketeer.general.messagingserverport=99999\n"
    )
    out, err, code = await run_twistd("-c", str(bad))
    text = (out + err).decode()
    assert code != 0
    assert f"{bad}:2" in text
    assert "socketeer.general.messagingserverport" in text
    assert "Traceback" not in text
