"""One stream across an emulated WAN: window auto-tuning against a fixed window.

    python -m bench.wan [--delay-ms 25] [--size-mib 64] [--rounds 3]

Two sites as two ``twistd socketeer`` processes on loopback: site B runs the broker and the
sink, site A the source, whose channel to the broker goes through a relay in this process
that holds every byte for ``--delay-ms`` each way (the kernel here has no netem). A client
uploads ``--size-mib`` through the source's fixed forward to a target that counts the bytes
and answers with their number. Each round runs once with the default window auto-tuning and
once with it off (``maxwindow`` equal to ``window``), and prints MB/s for each: one stream is
capped at window / round trip without auto-tuning.
"""

from __future__ import annotations

import argparse
import heapq
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.sites import free_port, start_twistd, stop_all, wait_port

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


class DelayRelay:
    """Listens on ``port`` and relays each connection to ``target``, every chunk held for
    ``delay`` seconds in each direction (order kept; no bandwidth limit)."""

    def __init__(self, port: int, target: int, delay: float) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.target, self.delay = target, delay
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((a, b), (b, a)):
                self._pipe(src, dst)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        queue: list[tuple[float, int, bytes]] = []
        ready = threading.Condition()
        counter = [0]

        def read() -> None:
            while True:
                try:
                    data = src.recv(1 << 20)
                except OSError:
                    data = b""
                with ready:
                    counter[0] += 1
                    heapq.heappush(queue, (time.monotonic() + self.delay, counter[0], data))
                    ready.notify()
                if not data:
                    return

        def write() -> None:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, _, data = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        ready.wait(wait)
                        continue
                    heapq.heappop(queue)
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()


def counting_target(port: int) -> None:
    """Accepts connections; reads each to its end and answers with the byte count."""
    listener = socket.create_server(("127.0.0.1", port))

    def serve(conn: socket.socket) -> None:
        n = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            n += len(data)
        conn.sendall(f"{n}\n".encode())
        conn.close()

    def run() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()


def upload(port: int, size: int) -> float:
    """Seconds to send ``size`` bytes through ``port`` and get the target's count back."""
    block = os.urandom(MiB)
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as c:
        sent = 0
        while sent < size:
            c.sendall(block[: min(MiB, size - sent)])
            sent += min(MiB, size - sent)
        c.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n"):
            data = c.recv(64)
            if not data:
                break
            answer += data
    elapsed = time.monotonic() - start
    if answer.strip() != str(size).encode():
        raise SystemExit(f"the target counted {answer!r}, not {size}")
    return elapsed


def run_site(tuned: bool, delay: float, size: int, tmp: Path) -> float:
    broker, relay, forward, target = free_port(), free_port(), free_port(), free_port()
    counting_target(target)
    DelayRelay(relay, broker, delay)
    off = "" if tuned else "socketeer.sourcesink.{id}.maxwindow=4194304\n"
    configs = {
        "siteB": "socketeer.general.messagingserverenabled=true\n"
        f"socketeer.general.messagingserverport={broker}\n"
        "socketeer.sourcesink.si.clustername=c\nsocketeer.sourcesink.si.nodename=si\n"
        f"socketeer.sourcesink.si.channel=stomp://127.0.0.1:{broker}/wan\n"
        "socketeer.sourcesink.si.isSpawningAndResolvingSink=true\n" + off.format(id="si"),
        "siteA": "socketeer.sourcesink.so.clustername=c\nsocketeer.sourcesink.so.nodename=so\n"
        f"socketeer.sourcesink.so.channel=stomp://127.0.0.1:{relay}/wan\n"
        f"socketeer.sourcesink.so.serverport={forward}\nsocketeer.sourcesink.so.peernode=si\n"
        "socketeer.sourcesink.so.fixedHost=127.0.0.1\n"
        f"socketeer.sourcesink.so.fixedPort={target}\n" + off.format(id="so"),
    }
    procs = []
    try:
        for name, text in configs.items():
            procs.append(start_twistd(tmp / f"{name}-{tuned}.properties", text))
            if name == "siteB":
                wait_port(broker, time.monotonic() + 30)
        wait_port(forward, time.monotonic() + 30)
        time.sleep(1.0 + 4 * delay)  # both nodes subscribed, the session set up
        upload(forward, 1 * MiB)  # warm: the session and the first stream
        return upload(forward, size)
    finally:
        stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one way")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size, delay = args.size_mib * MiB, args.delay_ms / 1000
    tmp = Path(tempfile.mkdtemp(prefix="socketeer-wan-"))
    results: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for tuned in (False, True):
            seconds = run_site(tuned, delay, size, tmp)
            results[tuned].append(size / seconds / 1e6)
            print(f"{'auto-tuned' if tuned else 'fixed 4 MiB'}: {results[tuned][-1]:.1f} MB/s")
    rtt = 2 * args.delay_ms
    for tuned in (False, True):
        label = "window auto-tuning" if tuned else "fixed 4 MiB window"
        print(
            f"{label}, RTT {rtt:g} ms, {args.size_mib} MiB up: "
            f"median {statistics.median(results[tuned]):.1f} MB/s over {args.rounds} rounds"
        )


if __name__ == "__main__":
    main()
