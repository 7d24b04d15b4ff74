"""``python -m bench.soak``: clients fetch through SOCKS5 while the broker is killed over and over.

Three ``twistd socketeer`` processes (broker | sink | source with a SOCKS5 port), a target
on loopback, and ``--clients`` threads that each fetch ``--size`` bytes through the proxy,
over and over, for ``--minutes``. Every ``--kill-every`` seconds the broker gets SIGKILL and
is started again at once. Each fetch is checked byte for byte (a per-request seed heads a
fixed pattern), so a reply is either complete and right, or counted as failed (with its
SOCKS reply code) or corrupt. At the end it prints, as JSON: requests ok / failed / corrupt,
the failures by cause, broker kills, and the source's and sink's RSS and open file
descriptors after warm-up and at the end. Loopback only; it ends only the processes it
started.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.peers import Proc, ThreadedServer, emit, end, free_port, port_open, spawn, wait_for

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))


def pattern(size: int) -> bytes:
    """A fixed, non-repeating block (sha256 chain): a shifted or mixed reply cannot match."""
    out = bytearray()
    block = b"socketeer-soak"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


class Target(ThreadedServer):
    """Reads an 8-byte seed, answers seed + pattern, closes."""

    def __init__(self, body: bytes) -> None:
        super().__init__(backlog=256)
        self.body = body

    def serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(120)
            try:
                seed = b""
                while len(seed) < 8:
                    piece = conn.recv(8 - len(seed))
                    if not piece:
                        return
                    seed += piece
                conn.sendall(seed + self.body)
            except OSError:
                return


def fetch(proxy: int, target: int, seed: bytes, size: int) -> tuple[str, bytes]:
    """One request through SOCKS5: ('ok'|'failed:<why>', what came back)."""
    with socket.create_connection(("127.0.0.1", proxy), timeout=120) as s:
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            return "failed:greeting", b""
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + target.to_bytes(2, "big"))
        head = b""
        while len(head) < 10:
            piece = s.recv(10 - len(head))
            if not piece:
                return "failed:closed-before-reply", b""
            head += piece
        if head[1] != 0:
            return f"failed:socks-0x{head[1]:02x}", b""
        s.sendall(seed)
        data = bytearray()
        while True:
            piece = s.recv(1 << 18)
            if not piece:
                break
            data += piece
        return "ok", bytes(data)


def proc_figures(pid: int) -> dict[str, float]:
    """RSS (MiB) and open file descriptors of one process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return {"rss_mib": round(rss, 1), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--size", type=int, default=1 << 20, help="bytes per fetch")
    ap.add_argument("--kill-every", type=float, default=30.0, help="seconds between kills")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="socketeer-soak-"))
    broker_port, proxy_port = free_port(), free_port()
    channel = f"stomp://127.0.0.1:{broker_port}/soak"
    files = {
        "broker": [
            "socketeer.general.messagingserverenabled=true",
            f"socketeer.general.messagingserverport=tcp:{broker_port}:interface=127.0.0.1",
        ],
        "sink": [
            "socketeer.sourcesink.si.clustername=soak",
            "socketeer.sourcesink.si.nodename=si",
            f"socketeer.sourcesink.si.channel={channel}",
            "socketeer.sourcesink.si.isSpawningAndResolvingSink=true",
        ],
        "source": [
            "socketeer.sourcesink.px.clustername=soak",
            "socketeer.sourcesink.px.nodename=px",
            f"socketeer.sourcesink.px.channel={channel}",
            f"socketeer.sourcesink.px.serverport=tcp:{proxy_port}:interface=127.0.0.1",
            "socketeer.sourcesink.px.peernode=si",
        ],
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

    def launch(name: str) -> Proc:
        path = work / f"{name}.properties"
        path.write_text("\n".join(files[name]) + "\n")
        args_ = [TWISTD, "-n", "--pidfile=", "socketeer", "-c", str(path)]
        return spawn(name, args_, work, env)

    body = pattern(args.size)
    target = Target(body)
    target.start()
    procs = {"broker": launch("broker")}
    wait_for(lambda: port_open("127.0.0.1", broker_port), 30, "the broker")
    procs["sink"] = launch("sink")
    procs["source"] = launch("source")
    wait_for(lambda: port_open("127.0.0.1", proxy_port), 30, "the proxy port")
    time.sleep(2)  # both nodes on the channel

    results: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + args.minutes * 60

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            seed = f"{n:03d}{i:05d}".encode()[-8:].rjust(8, b"0")
            try:
                outcome, data = fetch(proxy_port, target.port, seed, args.size)
            except OSError as e:
                outcome, data = f"failed:{type(e).__name__}", b""
            if outcome == "ok" and data != seed + body:
                outcome = "corrupt"
            with lock:
                results[outcome] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(min(30.0, args.minutes * 60 / 4))  # warm-up, then the baseline figures
    first = {name: proc_figures(procs[name].pid) for name in ("source", "sink")}
    kills = 0
    next_kill = time.monotonic() + args.kill_every
    while time.monotonic() < deadline:
        time.sleep(0.2)
        for name in ("source", "sink"):
            if not procs[name].alive():
                print(f"{name} died:\n{procs[name].tail()}", file=sys.stderr)
                stop.set()
        if stop.is_set():
            break
        if time.monotonic() >= next_kill:
            os.kill(procs["broker"].pid, signal.SIGKILL)
            procs["broker"].popen.wait(10)
            kills += 1
            procs["broker"] = launch("broker")
            next_kill = time.monotonic() + args.kill_every
    stop.set()
    for t in threads:
        t.join(150)
    last = {name: proc_figures(procs[name].pid) for name in ("source", "sink")}
    end(list(procs.values()))
    ok = results.pop("ok", 0)
    corrupt = results.pop("corrupt", 0)
    summary = {
        "minutes": args.minutes,
        "clients": args.clients,
        "size": args.size,
        "broker_kills": kills,
        "ok": ok,
        "failed": sum(results.values()),
        "corrupt": corrupt,
        "failures": dict(results),
        "after_warmup": first,
        "at_end": last,
        "workdir": str(work),
    }
    emit(summary, args.json)
    return 0 if summary["failed"] == 0 and corrupt == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
