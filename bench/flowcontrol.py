"""Bounded memory under a slow reader: 1 GiB from a fast writer to a reader at 1 MiB/s.

    python -m bench.flowcontrol [--seconds 20] [--size-mib 1024] [--rate-mib 1]

Starts the embedded broker, a sink and a source as three ``twistd socketeer`` processes on
loopback, a target that writes ``--size-mib`` as fast as it can, and a client that reads
``--rate-mib`` per second for ``--seconds``, then drains the rest at full speed and checks
the sha256. While the reader is slow it samples every Socketeer process's RSS (VmRSS) once
a second and prints the maximum and the growth over the baseline: flow control works when
the growth stays near one window (default 4 MiB) per hop, not near the bytes written.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.sites import free_port, start_twistd, stop_all, wait_port

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def target_server(port: int, size: int, digest: list) -> threading.Thread:
    """Accept one connection and write ``size`` pseudo-random bytes as fast as allowed."""
    listener = socket.create_server(("127.0.0.1", port))

    def run() -> None:
        conn, _ = listener.accept()
        block = os.urandom(MiB)
        h = hashlib.sha256()
        sent = 0
        while sent < size:
            chunk = block[: min(MiB, size - sent)]
            conn.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
        digest.append(h.hexdigest())
        conn.close()
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mib", type=float, default=1.0)
    args = parser.parse_args()
    size = args.size_mib * MiB

    broker, forward, target = free_port(), free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="socketeer-flow-"))
    channel = f"stomp://127.0.0.1:{broker}/flow"
    configs = {
        "broker": "socketeer.general.messagingserverenabled=true\n"
        f"socketeer.general.messagingserverport={broker}\n",
        "sink": "socketeer.sourcesink.si.clustername=c\nsocketeer.sourcesink.si.nodename=si\n"
        f"socketeer.sourcesink.si.channel={channel}\n"
        "socketeer.sourcesink.si.isSpawningAndResolvingSink=true\n",
        "source": "socketeer.sourcesink.so.clustername=c\nsocketeer.sourcesink.so.nodename=so\n"
        f"socketeer.sourcesink.so.channel={channel}\n"
        f"socketeer.sourcesink.so.serverport={forward}\nsocketeer.sourcesink.so.peernode=si\n"
        f"socketeer.sourcesink.so.fixedHost=127.0.0.1\nsocketeer.sourcesink.so.fixedPort={target}\n",
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, text in configs.items():
            procs[name] = start_twistd(tmp / f"{name}.properties", text)
            if name == "broker":
                wait_port(broker, time.monotonic() + 30)
        wait_port(forward, time.monotonic() + 30)
        time.sleep(1.0)  # let both nodes subscribe
        baseline = {name: rss_kib(p.pid) for name, p in procs.items()}

        digest: list[str] = []
        target_server(target, size, digest)
        client = socket.create_connection(("127.0.0.1", forward))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        h = hashlib.sha256()
        got = 0
        peak = dict(baseline)
        start = time.monotonic()
        rate = int(args.rate_mib * MiB)
        while time.monotonic() - start < args.seconds:
            tick = time.monotonic()
            want = rate
            while want > 0:
                data = client.recv(min(want, 64 * 1024))
                if not data:
                    break
                h.update(data)
                got += len(data)
                want -= len(data)
            for name, p in procs.items():
                peak[name] = max(peak[name], rss_kib(p.pid))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        slow_read = got
        while True:
            data = client.recv(1 << 20)
            if not data:
                break
            h.update(data)
            got += len(data)
        ok = got == size and digest and digest[0] == h.hexdigest()
        slow_mib = slow_read / MiB
        print(f"slow phase: {args.seconds:.0f}s at {args.rate_mib} MiB/s, read {slow_mib:.1f} MiB")
        print(f"{'process':8} {'baseline MiB':>13} {'peak MiB':>9} {'growth MiB':>11}")
        for name in procs:
            b, p = baseline[name] / 1024, peak[name] / 1024
            print(f"{name:8} {b:13.1f} {p:9.1f} {p - b:11.1f}")
        total = sum(peak.values()) / 1024 - sum(baseline.values()) / 1024
        print(f"total growth {total:.1f} MiB while {size / MiB:.0f} MiB waited at the target")
        print(f"transfer {'complete, sha256 verified' if ok else 'FAILED'} ({got / MiB:.0f} MiB)")
        if not ok:
            raise SystemExit(1)
    finally:
        stop_all(procs.values())


if __name__ == "__main__":
    main()
