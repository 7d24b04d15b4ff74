"""``python -m bench.logins``: what a SOCKS5 login costs, and whether the reactor stalls meanwhile.

One ``twistd socketeer`` process (embedded broker, a sink, a SOCKS5 proxy whose users are
PBKDF2 hashes with the default 200,000 iterations). Over real loopback sockets it measures:

* the time from sending RFC 1929 credentials to the ``01 01`` refusal, for a wrong password
  of a known user and for an unknown user (they should not differ: no user enumeration);
  with ``--door broker``, from sending a STOMP CONNECT to the broker's ``ERROR`` (the broker
  then has the hashed users, the nodes log in with a plain passcode, the proxy has none);
* the round trip of 64-byte pings on an echo stream through the same process, idle and
  while ``--loggers`` threads send wrong logins as fast as they are answered (the hash
  must not freeze the other streams).

``--root DIR`` runs another checkout (e.g. the main branch) for a before/after comparison.
Failure limits are off (``loginmaxfailures=0``) so that every attempt is hashed. Prints
JSON. Loopback only; it ends only the process it started.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.peers import emit, end, free_port, port_open, spawn, wait_for

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))
PASSWORD = "bench-password"


class EchoServer(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def run(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def auth_bytes(user: str, password: str) -> bytes:
    u, p = user.encode(), password.encode()
    return b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p


def login_time(port: int, user: str, password: str) -> tuple[float, bytes]:
    """Seconds from sending the credentials to the server's answer, and the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\x05\x01\x02")
        assert recv_exactly(s, 2) == b"\x05\x02"
        t0 = time.perf_counter()
        s.sendall(auth_bytes(user, password))
        answer = recv_exactly(s, 2)
        return time.perf_counter() - t0, answer


def stomp_login_time(port: int, user: str, password: str) -> tuple[float, bytes]:
    """Seconds from sending a CONNECT to the broker's answer, and the answer's command."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        frame = f"CONNECT\naccept-version:1.2\nhost:b\nlogin:{user}\npasscode:{password}\n\n\0"
        t0 = time.perf_counter()
        s.sendall(frame.encode())
        answer = b""
        while b"\0" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return time.perf_counter() - t0, answer.split(b"\n", 1)[0]


def echo_stream(port: int, target: int, authenticate: bool = True) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if authenticate:
        s.sendall(b"\x05\x01\x02" + auth_bytes("alice", PASSWORD))
        greeting = b"\x05\x02\x01\x00"
    else:
        s.sendall(b"\x05\x01\x00")
        greeting = b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + target.to_bytes(2, "big"))
    answer = recv_exactly(s, len(greeting) + 10)
    if answer[: len(greeting)] != greeting or answer[len(greeting) + 1] != 0:
        raise RuntimeError(f"echo stream not opened: {answer!r}")
    return s


def rtts(s: socket.socket, seconds: float) -> list[float]:
    out = []
    payload = b"x" * 64
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        s.sendall(payload)
        recv_exactly(s, len(payload))
        out.append(time.perf_counter() - t0)
        time.sleep(0.002)
    return out


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)

    def q(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 3)

    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p10_ms": q(0.10),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": round(ms[-1], 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.logins", description=__doc__.split("\n")[0])
    ap.add_argument("--attempts", type=int, default=40, help="logins per kind")
    ap.add_argument("--seconds", type=float, default=5.0, help="per RTT phase")
    ap.add_argument("--loggers", type=int, default=4, help="threads sending wrong logins")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument(
        "--door",
        choices=("proxy", "broker"),
        default="proxy",
        help="whose logins: the SOCKS5 proxy's or the embedded broker's (STOMP CONNECT)",
    )
    args = ap.parse_args(argv)
    broker_door = args.door == "broker"

    sys.path.insert(0, str(args.root))
    from socketeer.passwords import hash_password

    work = Path(tempfile.mkdtemp(prefix="socketeer-logins-"))
    broker_port, proxy_port = free_port(), free_port()
    channel = f"stomp://127.0.0.1:{broker_port}/logins"
    if broker_door:
        channel += "?username=node&password=node-pass"
    users = {"alice": hash_password(PASSWORD), "bob": hash_password("other-" + PASSWORD)}
    lines = [
        "socketeer.general.messagingserverenabled=true",
        f"socketeer.general.messagingserverport=tcp:{broker_port}:interface=127.0.0.1",
        "socketeer.general.loginmaxfailures=0",
        "socketeer.sourcesink.si.clustername=b",
        "socketeer.sourcesink.si.nodename=si",
        f"socketeer.sourcesink.si.channel={channel}",
        "socketeer.sourcesink.si.isSpawningAndResolvingSink=true",
        "socketeer.sourcesink.px.clustername=b",
        "socketeer.sourcesink.px.nodename=px",
        f"socketeer.sourcesink.px.channel={channel}",
        f"socketeer.sourcesink.px.serverport=tcp:{proxy_port}:interface=127.0.0.1",
        "socketeer.sourcesink.px.peernode=si",
    ]
    if broker_door:
        lines.append("socketeer.general.messagingserveruser.node=node-pass")
        lines += [f"socketeer.general.messagingserveruser.{u}={h}" for u, h in users.items()]
    else:
        lines.append("socketeer.sourcesink.px.authorisation=staff")
        lines += [f"socketeer.authorisation.staff.user.{u}={h}" for u, h in users.items()]
    if broker_door:

        def attempt(user: str, password: str) -> tuple[float, bytes]:
            return stomp_login_time(broker_port, user, password)

        refused = b"ERROR"
    else:

        def attempt(user: str, password: str) -> tuple[float, bytes]:
            return login_time(proxy_port, user, password)

        refused = b"\x01\x01"
    path = work / "logins.properties"
    path.write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.root), env.get("PYTHONPATH")]))
    proc = spawn("logins", [TWISTD, "-n", "--pidfile=", "socketeer", "-c", str(path)], work, env)
    echo = EchoServer()
    echo.start()
    try:
        wait_for(lambda: port_open("127.0.0.1", proxy_port), 30, "the proxy port")
        stream = None
        deadline = time.monotonic() + 30
        while stream is None:
            try:
                stream = echo_stream(proxy_port, echo.port, authenticate=not broker_door)
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # both nodes on the channel yet?

        known, unknown = [], []
        for i in range(args.attempts):
            for user, into in (("alice", known), ("mallory", unknown))[:: 1 if i % 2 else -1]:
                seconds, answer = attempt(user, "wrong-" + PASSWORD)
                assert answer == refused, answer
                into.append(seconds)

        idle = rtts(stream, args.seconds)
        stop = threading.Event()
        attempts = [0]

        def hammer(n: int) -> None:
            while not stop.is_set():
                attempt("alice" if n % 2 else "mallory", "wrong")
                attempts[0] += 1

        threads = [
            threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(args.loggers)
        ]
        for t in threads:
            t.start()
        busy = rtts(stream, args.seconds)
        stop.set()
        for t in threads:
            t.join(30)
        stream.close()
        result = {
            "root": str(args.root),
            "door": args.door,
            "wrong_password_known_user": summary(known),
            "unknown_user": summary(unknown),
            "echo_rtt_idle": summary(idle),
            "echo_rtt_during_logins": summary(busy),
            "logins_during_rtt_phase": attempts[0],
            "loggers": args.loggers,
        }
    finally:
        end([proc])
    emit(result, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
