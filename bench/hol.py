"""``python -m bench.hol``: a healthy pair's round trip while a flooded third node is frozen.

Four ``twistd socketeer`` processes on loopback: the embedded broker (with a status server,
to read its figures), ``pair`` (source ``so`` forwarding to an echo target through sink
``si``, and the status server that pings the whole cluster), ``s2`` (a source forwarding to
a discarding target through sink ``zz``) and ``zz``. ``--streams`` connections flood through
``s2`` to ``zz``; then ``zz`` gets SIGSTOP.

The round trip is measured open loop, so a stall is not hidden by the probes it holds back:
a probe (sequence number and send time) goes through the echo pair every ``--interval``
seconds whatever happened to the ones before, and each one's time is from its scheduled
send to its echo. Printed as JSON: p50, p99 and max (ms) with nothing frozen (``baseline``)
and while ``zz`` is frozen (``frozen``), probes slower than 1 s, and the broker's
``/status`` figures halfway through the frozen phase and ``--after`` seconds after it. Loopback
only; it ends only the processes it started (SIGCONT, then SIGTERM).

Run it against another checkout with ``PYTHONPATH=/path/to/checkout``: the processes import
Socketeer from there (the first entry of ``PYTHONPATH`` wins over this one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.common import percentile
from bench.peers import Proc, ThreadedServer, emit, end, free_port, port_open, spawn, wait_for

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))
PROBE = struct.Struct("!Qd")  # sequence number, scheduled send time (monotonic)


class Server(ThreadedServer):
    """A loopback TCP server: each connection echoes (``echo``) or is read and discarded."""

    def __init__(self, echo: bool) -> None:
        super().__init__()
        self.echo = echo

    def serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 18)
                    if not data:
                        return
                    if self.echo:
                        conn.sendall(data)
                except OSError:
                    return


class Prober:
    """Sends a probe every ``interval`` seconds on one connection; records each round trip."""

    def __init__(self, port: int, interval: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.interval = interval
        self.rtts: list[tuple[float, float]] = []  # (scheduled send time, round trip)
        self.sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _write(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            try:
                self.sock.sendall(PROBE.pack(self.sent, due))
            except OSError:
                return
            self.sent += 1
            due += self.interval

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            now = time.monotonic()
            while len(buffer) >= PROBE.size:
                _, sent = PROBE.unpack_from(buffer)
                buffer = buffer[PROBE.size :]
                with self.lock:
                    self.rtts.append((sent, now - sent))

    def window(self, start: float, stop: float) -> list[float]:
        with self.lock:
            return [rtt for sent, rtt in self.rtts if start <= sent < stop]

    def received(self) -> int:
        with self.lock:
            return len(self.rtts)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def summary(rtts: list[float]) -> dict[str, float | int]:
    if not rtts:
        return {"n": 0}
    return {
        "n": len(rtts),
        "p50_ms": round(percentile(rtts, 50) * 1000, 2),
        "p99_ms": round(percentile(rtts, 99) * 1000, 2),
        "max_ms": round(max(rtts) * 1000, 1),
        "over_1s": sum(1 for r in rtts if r > 1.0),
    }


def flood(port: int, stop: threading.Event) -> None:
    """Write as fast as the tunnel takes it (blocking writes: back-pressure just blocks)."""
    block = os.urandom(256 * 1024)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(2)
            while not stop.is_set():
                try:
                    s.sendall(block)
                except TimeoutError:
                    continue
    except OSError:
        return


def broker_status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
            return json.loads(r.read()).get("broker")
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hol", description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds, nothing frozen")
    ap.add_argument("--frozen", type=float, default=20.0, help="seconds zz is measured frozen")
    ap.add_argument("--after", type=float, default=15.0, help="more seconds frozen, then status")
    ap.add_argument("--interval", type=float, default=0.01, help="seconds between probes")
    ap.add_argument("--streams", type=int, default=8, help="flooding connections to zz")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="socketeer-hol-"))
    broker_port, broker_status_port, status_port = free_port(), free_port(), free_port()
    echo_fwd, flood_fwd = free_port(), free_port()
    echo, discard = Server(echo=True), Server(echo=False)
    echo.start()
    discard.start()
    channel = f"stomp://127.0.0.1:{broker_port}/hol"

    def node(sid: str, extra: list[str] = ()) -> list[str]:
        prefix = f"socketeer.sourcesink.{sid}."
        return [
            f"{prefix}clustername=hol",
            f"{prefix}nodename={sid}",
            f"{prefix}channel={channel}",
            *(prefix + line for line in extra),
        ]

    def forward(port: int, peer: str, target: int) -> list[str]:
        return [
            f"serverport=tcp:{port}:interface=127.0.0.1",
            f"peernode={peer}",
            "fixedHost=127.0.0.1",
            f"fixedPort={target}",
        ]

    files = {
        "broker": [
            "socketeer.general.messagingserverenabled=true",
            f"socketeer.general.messagingserverport=tcp:{broker_port}:interface=127.0.0.1",
            "socketeer.general.statusserverenabled=true",
            f"socketeer.general.statusserverport=tcp:{broker_status_port}:interface=127.0.0.1",
        ],
        "pair": [
            "socketeer.general.statusserverenabled=true",
            f"socketeer.general.statusserverport=tcp:{status_port}:interface=127.0.0.1",
            *node("so", forward(echo_fwd, "si", echo.port)),
            *node("si", ["isSpawningAndResolvingSink=true"]),
        ],
        "s2": node("s2", forward(flood_fwd, "zz", discard.port)),
        "zz": node("zz", ["isSpawningAndResolvingSink=true"]),
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))

    def launch(name: str) -> Proc:
        path = work / f"{name}.properties"
        path.write_text("\n".join(files[name]) + "\n")
        return spawn(name, [TWISTD, "-n", "--pidfile=", "socketeer", "-c", str(path)], work, env)

    procs = {"broker": launch("broker")}
    stop = threading.Event()
    prober: Prober | None = None
    try:
        wait_for(lambda: port_open("127.0.0.1", broker_port), 30, "the broker")
        for name in ("zz", "pair", "s2"):
            procs[name] = launch(name)
        for port in (echo_fwd, flood_fwd):
            wait_for(lambda p=port: port_open("127.0.0.1", p), 30, "the forward ports")
        wait_for(
            lambda: (broker_status(broker_status_port) or {}).get("connections") == 4,
            30,
            "the four nodes",
        )
        prober = Prober(echo_fwd, args.interval)
        wait_for(lambda: prober.received() > 10, 30, "the first round trips")

        t0 = time.monotonic()
        time.sleep(args.baseline)
        t1 = time.monotonic()
        for _ in range(args.streams):
            threading.Thread(target=flood, args=(flood_fwd, stop), daemon=True).start()
        time.sleep(2.0)  # the flood is under way
        os.kill(procs["zz"].pid, signal.SIGSTOP)
        t2 = time.monotonic()
        time.sleep(args.frozen / 2)
        during = broker_status(broker_status_port)
        time.sleep(args.frozen / 2)
        t3 = time.monotonic()
        time.sleep(args.after)
        after = broker_status(broker_status_port)
        time.sleep(1.0)  # the last probes of the frozen phase come back
        result = {
            "code": os.environ.get("PYTHONPATH") or str(ROOT),
            "interval_ms": args.interval * 1000,
            "streams": args.streams,
            "baseline": summary(prober.window(t0, t1)),
            "frozen": summary(prober.window(t2, t3)),
            "broker_mid_frozen": during,
            f"broker_{args.after:g}s_later": after,
            "workdir": str(work),
        }
        result["probes_lost"] = max(0, int((t3 - t2) / args.interval) - result["frozen"]["n"])
    finally:
        stop.set()
        if prober is not None:
            prober.close()
        if "zz" in procs and procs["zz"].alive():
            os.kill(procs["zz"].pid, signal.SIGCONT)
        end(list(procs.values()))
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
