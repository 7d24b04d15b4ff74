"""``socketeer status``: the status endpoint as terminal tables, with rates."""

from __future__ import annotations

import json
import os

import pytest_twisted

from socketeer.cli.status import render_status

from support.cli import run
from support.net import connect, echo_server, free_port, until
from support.ops import start_service
from support.properties import relay_properties


@pytest_twisted.ensureDeferred
async def test_status_command_shows_nodes_peers_and_streams(tmp_path):
    ports: list = []
    echo = await echo_server(ports)
    broker, status, forward = free_port(), free_port(), free_port()
    text = relay_properties(
        broker, forward, echo, "socketeer.general.statusserveruser.ops=pw", status=status
    )
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
