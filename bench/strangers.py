"""``python -m bench.strangers``: what unauthenticated sockets cost the embedded broker.

Starts one ``twistd socketeer`` process running only the broker (with a user, so a login
is required) and measures its RSS (VmRSS) three times: idle; with ``--idle`` sockets that
connect and send nothing (spread over 127.0.0.1..127.0.0.16, so that they fit the default
per-address cap); and, after those are gone, at the peak while ``--streams`` sockets each
stream an unterminated CONNECT frame (a body without its NUL) as fast as the broker reads
it. It also reports when the broker closed the idle sockets (its handshake timeout) and how
many of the streams it cut off, and after how many bytes. Prints JSON. Loopback only; it
ends only the process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench.peers import end, free_port, port_open, spawn, wait_for

TWISTD = str(Path(sys.executable).with_name("twistd"))
ROOT = Path(__file__).resolve().parent.parent
CONNECT_HEAD = b"CONNECT\naccept-version:1.2\nlogin:alice\npasscode:wrong\n\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def idle_sockets(port: int, count: int, pid: int, limit: float) -> dict:
    """Open ``count`` silent sockets; RSS with them; when the broker closed each one."""
    socks = []
    for i in range(count):
        s = socket.socket()
        s.bind((f"127.0.0.{1 + i % 16}", 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    opened = time.monotonic()
    time.sleep(1.0)
    with_idle = rss_mib(pid)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed_after: list[float] = []
    refused_at_once = 0
    while sel.get_map() and time.monotonic() - opened < limit:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                elapsed = time.monotonic() - opened
                closed_after.append(elapsed)
                refused_at_once += elapsed < 0.5
                sel.unregister(s)
                s.close()
    still_open = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return {
        "sockets": count,
        "rss_with_idle_mib": round(with_idle, 1),
        "closed": len(closed_after),
        "closed_at_once": refused_at_once,
        "still_open_after_s": None if not still_open else limit,
        "still_open": still_open,
        "closed_after_s_min": round(min(closed_after), 1) if closed_after else None,
        "closed_after_s_max": round(max(closed_after), 1) if closed_after else None,
    }


def streaming_connects(port: int, count: int, pid: int, seconds: float) -> dict:
    """``count`` sockets each send an endless CONNECT body; peak RSS, bytes taken per socket."""
    chunk = b"x" * 65536
    sel = selectors.DefaultSelector()
    sent: dict[socket.socket, int] = {}
    for i in range(count):
        s = socket.socket()
        s.bind((f"127.0.0.{1 + i % 16}", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(CONNECT_HEAD)
        s.setblocking(False)
        sent[s] = 0
        sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)
    peak = 0.0
    cut: list[int] = []
    start = last = time.monotonic()
    while sel.get_map() and time.monotonic() - start < seconds:
        for key, events in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                if events & selectors.EVENT_READ and not s.recv(65536):
                    raise ConnectionResetError
                if events & selectors.EVENT_WRITE:
                    sent[s] += s.send(chunk)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                cut.append(sent[s])
                sel.unregister(s)
                s.close()
        if time.monotonic() - last > 0.1:
            peak = max(peak, rss_mib(pid))
            last = time.monotonic()
    peak = max(peak, rss_mib(pid))
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return {
        "sockets": count,
        "rss_peak_mib": round(peak, 1),
        "cut_off": len(cut),
        "bytes_sent_before_cut_max": max(cut) if cut else None,
        "still_streaming_after_s": seconds if len(cut) < count else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--stream-seconds", type=float, default=20.0)
    parser.add_argument("--idle-limit", type=float, default=45.0, help="seconds to wait")
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the checkout to run (e.g. main's, for before)"
    )
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="strangers-") as tmp:
        workdir = Path(tmp)
        props = workdir / "socketeer.properties"
        props.write_text(
            "socketeer.general.messagingserverenabled=true\n"
            f"socketeer.general.messagingserverport={port}\n"
            "socketeer.general.messagingserveruser.alice=pw\n"
        )
        env = dict(os.environ, PYTHONPATH=str(args.code.resolve()))
        command = [TWISTD, "-n", "--pidfile=", "socketeer", "-c", str(props)]
        proc = spawn("broker", command, workdir, env)
        try:
            wait_for(lambda: port_open("127.0.0.1", port), 20, "the broker's port")
            time.sleep(1.0)
            baseline = rss_mib(proc.pid)
            idle = idle_sockets(port, args.idle, proc.pid, args.idle_limit)
            time.sleep(1.0)
            after_idle = rss_mib(proc.pid)
            streams = streaming_connects(port, args.streams, proc.pid, args.stream_seconds)
            result = {
                "rss_baseline_mib": round(baseline, 1),
                "idle": {**idle, "growth_mib": round(idle["rss_with_idle_mib"] - baseline, 1)},
                "rss_after_idle_closed_mib": round(after_idle, 1),
                "streaming_connect": {
                    **streams,
                    "growth_mib": round(streams["rss_peak_mib"] - baseline, 1),
                },
            }
        finally:
            end([proc])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
