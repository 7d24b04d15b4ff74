"""twistd's side: the options, and what makeService adds to the service tree."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.python import usage

from socketeer.tap import Options, makeService

from support import ROOT, twistd


def test_options_parse_and_validate(tmp_path):
    cfg = tmp_path / "s.properties"
    cfg.write_text((ROOT / "etc" / "examples" / "sink.properties").read_text())
    opts = Options()
    opts.parseOptions(["-c", str(cfg)])
    assert opts["config"] == str(cfg)
    assert opts["parsed"].broker.enabled
    with pytest.raises(usage.UsageError, match="required"):
        Options().parseOptions([])


def test_make_service_adds_readiness_last(tmp_path, monkeypatch):
    monkeypatch.setattr("socketeer.tap.tune_malloc", lambda: False)
    monkeypatch.setattr("signal.signal", lambda *a: None)  # no SIGHUP handler in the test run
    cfg = tmp_path / "s.properties"
    cfg.write_text((ROOT / "etc" / "examples" / "sink.properties").read_text())
    opts = Options()
    opts.parseOptions(["-c", str(cfg)])
    root = makeService(opts)
    names = [s.name for s in root]
    assert names[-1] == "readiness" and "broker" in names


def _held_port() -> socket.socket:
    """A loopback port another process (a first instance) is listening on."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    return held


@pytest.mark.parametrize(
    ("key", "lines"),
    [
        (
            "socketeer.general.messagingserverport",
            ["socketeer.general.messagingserverenabled=true"],
        ),
        (
            "socketeer.sourcesink.px.serverport",
            [
                "socketeer.sourcesink.px.clustername=c",
                "socketeer.sourcesink.px.nodename=px",
                "socketeer.sourcesink.px.channel=stomp://127.0.0.1:9/t",
                "socketeer.sourcesink.px.peernode=si",
            ],
        ),
        (
            "socketeer.general.statusserverport",
            [
                "socketeer.general.messagingserverenabled=true",
                "socketeer.general.messagingserverport=tcp:0:interface=127.0.0.1",
                "socketeer.general.statusserverenabled=true",
            ],
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_port_in_use_is_one_line_and_exit_status_1(tmp_path, key, lines):
    with _held_port() as held:
        port = held.getsockname()[1]
        endpoint = f"tcp:{port}:interface=127.0.0.1"
        config = tmp_path / "second.properties"
        config.write_text("\n".join([*lines, f"{key}={endpoint}"]) + "\n")
        child = twistd.start(config, 1)
        code, sig = await child.ended.addTimeout(60, reactor)
    output = child.output.decode()
    assert (code, sig) == (1, None), output
    assert "Traceback" not in output, output
    [line] = [text for text in output.splitlines() if "cannot listen" in text]
    assert line.endswith(f"{key}: cannot listen on {endpoint}: Address already in use"), line
