"""The tunnels under test ("peers"): how each is set up on loopback, found and torn down.

Every peer but ``direct`` ends in a SOCKS5 port on 127.0.0.1 that the common client uses.
Processes are started with ``start_new_session`` and ended by their PID (SIGTERM, then
SIGKILL after a grace period); nothing else on the machine is touched, except that sshd
needs its privilege-separation directory /run/sshd to exist.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
GCM = "aes128-gcm@openssh.com"
CODEKEY = "bench-codekey-not-secret"
RABBIT = ("127.0.0.1", 61613)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def socks_probe(proxy: tuple[str, int] | None, target: dict) -> bool:
    """One SOCKS5 CONNECT to the echo server and one echoed byte; True if it all worked."""
    host, port = target["host"], target["echo"]
    try:
        with socket.create_connection(proxy or (host, port), timeout=3) as s:
            s.settimeout(3)
            if proxy is not None:
                s.sendall(b"\x05\x01\x00")
                if s.recv(2) != b"\x05\x00":
                    return False
                s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
                head = _recv_exactly(s, 10)
                if head[1] != 0:
                    return False
            s.sendall(b"?")
            return s.recv(1) == b"?"
    except OSError:
        return False


class ThreadedServer(threading.Thread):
    """A loopback TCP server for the stress scripts: a thread per connection runs ``serve``.

    Threads, not a reactor: the server must keep answering while the processes under test
    are frozen or killed, and must not share their event loop.
    """

    def __init__(self, backlog: int = 64) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.sock.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        conn.close()


def emit(result: dict, path: Path | None, indent: int = 2) -> None:
    """Print a script's result as JSON, and write it to ``path`` too when given."""
    text = json.dumps(result, indent=indent)
    print(text)
    if path is not None:
        path.write_text(text + "\n")


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        piece = s.recv(n - len(out))
        if not piece:
            raise OSError("closed")
        out += piece
    return out


# -- processes -------------------------------------------------------------------------------


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def with_descendants(pids: list[int]) -> list[int]:
    kids = children_map()
    out: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in out or not os.path.exists(f"/proc/{pid}"):
            continue
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return sorted(out)


def memory(pids: list[int]) -> dict[str, float]:
    """Total RSS, peak RSS (VmHWM) and PSS of ``pids``, in MiB."""
    rss = hwm = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return {
        "rss_mib": rss / 1024,
        "hwm_mib": hwm / 1024,
        "pss_mib": pss / 1024,
        "processes": len(pids),
    }


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    twistd_log: Path | None = None  # a Socketeer process's own log (--logfile)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name: str, args: list[str], workdir: Path, env: dict | None = None) -> Proc:
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def end(procs: list[Proc], grace: float = 10.0) -> None:
    """SIGTERM each of our processes (and the descendants they made), then SIGKILL laggards."""
    pids = with_descendants([p.pid for p in procs if p.alive()])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for pid in pids:
        if os.path.exists(f"/proc/{pid}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


# -- peers -----------------------------------------------------------------------------------


@dataclass
class Context:
    """What every peer needs: a scratch directory, the target, the code under test."""

    workdir: Path
    target: dict
    code: Path  # a directory holding the socketeer package and twisted/plugins to run
    python: str = sys.executable


@dataclass
class Peer:
    name: str
    label: str
    procs: list[Proc] = field(default_factory=list)
    proxy: tuple[str, int] | None = None
    info: dict = field(default_factory=dict)
    # memory of these processes counts as the peer's (a shared broker such as RabbitMQ
    # does not)
    family: str = ""

    def start(self, ctx: Context) -> None:  # pragma: no cover - overridden
        pass

    def stop(self) -> None:
        end(self.procs)
        self.procs = []

    def pids(self) -> list[int]:
        return with_descendants([p.pid for p in self.procs if p.alive()])

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(
                    f"{self.name}: {p.name} exited ({p.popen.returncode}):\n{p.tail()}"
                )

    def wait_ready(self, ctx: Context, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self.check_alive()
            return socks_probe(self.proxy, ctx.target)

        wait_for(ready, timeout, f"{self.name} to relay")


class Direct(Peer):
    def __init__(self) -> None:
        super().__init__("direct", "direct TCP", family="direct")


class Ssh(Peer):
    """A private sshd on a loopback port and ``ssh -N -D`` to it."""

    def __init__(self, cipher: str | None) -> None:
        name = "ssh-gcm" if cipher == GCM else "ssh-default"
        label = f"ssh -D ({'aes128-gcm' if cipher == GCM else 'default cipher'})"
        super().__init__(name, label, family="ssh")
        self.cipher = cipher

    @staticmethod
    def available() -> str | None:
        if not os.path.exists(SSHD):
            return f"{SSHD} not installed (apt-get install openssh-server)"
        if shutil.which("ssh") is None:
            return "ssh not installed (apt-get install openssh-client)"
        return None

    def start(self, ctx: Context) -> None:
        d = ctx.workdir / self.name
        d.mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "user_key"):
            if not (d / key).exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True
                )
        shutil.copy(d / "user_key.pub", d / "authorized_keys")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privsep directory
        sshd_port, socks_port = free_port(), free_port()
        (d / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress 127.0.0.1:{sshd_port}",
                    f"HostKey {d / 'host_key'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    f"PidFile {d / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "AllowTcpForwarding yes",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "UseDNS no",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        sshd = spawn("sshd", [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], d)
        self.procs.append(sshd)
        wait_for(lambda: port_open("127.0.0.1", sshd_port) or not sshd.alive(), 10, "sshd")
        self.check_alive()
        user = os.environ.get("USER") or "root"
        base = [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(d / "user_key"),
            "-p",
            str(sshd_port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={d / 'known_hosts'}",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
        ]
        if self.cipher:
            base += ["-o", f"Ciphers={self.cipher}"]
        # What the default actually negotiates, from one short verbose session.
        probe = subprocess.run(
            base + ["-v", f"{user}@127.0.0.1", "true"], capture_output=True, text=True, timeout=20
        )
        for line in probe.stderr.splitlines():
            if "kex: client->server cipher:" in line:
                self.info["cipher"] = line.split("cipher:", 1)[1].split()[0]
            if "kex: algorithm:" in line:
                self.info["kex"] = line.split("algorithm:", 1)[1].strip()
        ssh = spawn("ssh", base + ["-N", "-D", f"127.0.0.1:{socks_port}", f"{user}@127.0.0.1"], d)
        self.procs.append(ssh)
        self.proxy = ("127.0.0.1", socks_port)
        self.wait_ready(ctx)


class Pproxy(Peer):
    """pproxy as a SOCKS5 server; with ``hops=2`` a second pproxy chained behind the first."""

    def __init__(self, hops: int) -> None:
        super().__init__(
            f"pproxy-{hops}", f"pproxy ({hops} hop{'s' if hops > 1 else ''})", family="pproxy"
        )
        self.hops = hops

    @staticmethod
    def available() -> str | None:
        try:
            import pproxy  # noqa: F401
        except ImportError:
            return "pproxy not installed (pip install pproxy, or the bench extra)"
        return None

    def start(self, ctx: Context) -> None:
        d = ctx.workdir / self.name
        d.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(self.hops)]
        # the last hop first: each one forwards to the next
        for i in reversed(range(self.hops)):
            args = [ctx.python, "-m", "pproxy", "-l", f"socks5://127.0.0.1:{ports[i]}"]
            if i + 1 < self.hops:
                args += ["-r", f"socks5://127.0.0.1:{ports[i + 1]}"]
            self.procs.append(spawn(f"pproxy{i}", args, d))
        self.proxy = ("127.0.0.1", ports[0])
        self.wait_ready(ctx)


class Socketeer(Peer):
    """Socketeer's proxy port: source, broker and sink as 3 processes, as 1, or via RabbitMQ."""

    def __init__(
        self, layout: str, codekey: bool, code: Path | None = None, variant: str = ""
    ) -> None:
        assert layout in ("3p", "1p", "rabbit")
        name = (
            f"socketeer-{layout}" + ("-key" if codekey else "") + (f"@{variant}" if variant else "")
        )
        what = {"3p": "3 processes", "1p": "1 process", "rabbit": "RabbitMQ"}[layout]
        label = f"Socketeer ({what}, {'codekey' if codekey else 'no codekey'})"
        if variant:
            label += f" [{variant}]"
        super().__init__(name, label, family="socketeer")
        self.layout = layout
        self.codekey = codekey
        #: Another version of the code (``--compare``); None: the run's code under test.
        self.code = code

    @staticmethod
    def rabbit_available() -> str | None:
        if not port_open(*RABBIT):
            return "RabbitMQ's STOMP plugin is not listening on 127.0.0.1:61613"
        return None

    def _channel(self, broker_port: int | None, topic: str) -> str:
        params = []
        if self.layout == "rabbit":
            url = f"stomp://127.0.0.1:{RABBIT[1]}/{topic}"
            params += ["username=guest", "password=guest", "vhost=/"]
        else:
            url = f"stomp://127.0.0.1:{broker_port}/{topic}"
        if self.codekey:
            params.append(f"codekey={CODEKEY}")
        return url + ("?" + "&".join(params) if params else "")

    def start(self, ctx: Context) -> None:
        d = ctx.workdir / self.name
        d.mkdir(parents=True, exist_ok=True)
        topic = f"bench{os.getpid()}{int(time.time()) % 100000}"
        broker_port = None if self.layout == "rabbit" else free_port()
        proxy_port = free_port()
        channel = self._channel(broker_port, topic)
        broker = [
            "socketeer.general.messagingserverenabled=true",
            f"socketeer.general.messagingserverport=tcp:{broker_port}:interface=127.0.0.1",
        ]
        sink = [
            "socketeer.sourcesink.si.clustername=bench",
            "socketeer.sourcesink.si.nodename=si",
            f"socketeer.sourcesink.si.channel={channel}",
            "socketeer.sourcesink.si.isSpawningAndResolvingSink=true",
        ]
        source = [
            "socketeer.sourcesink.px.clustername=bench",
            "socketeer.sourcesink.px.nodename=px",
            f"socketeer.sourcesink.px.channel={channel}",
            f"socketeer.sourcesink.px.serverport=tcp:{proxy_port}:interface=127.0.0.1:backlog=1024",
            "socketeer.sourcesink.px.peernode=si",
        ]
        if self.layout == "1p":
            files = {"all": broker + sink + source}
        elif self.layout == "3p":
            files = {"broker": broker, "sink": sink, "source": source}
        else:
            files = {"sink": sink, "source": source}
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.code or ctx.code)
        env.pop("PYTHONSTARTUP", None)
        twistd = str(Path(ctx.python).with_name("twistd"))
        if "broker" in files:  # the broker first, so the nodes' first connect succeeds
            order = ["broker"] + [k for k in files if k != "broker"]
        else:
            order = list(files)
        for role in order:
            cfg = d / f"{role}.properties"
            cfg.write_text("\n".join(files[role]) + "\n")
            log = d / f"{role}.twistd.log"
            log.unlink(missing_ok=True)
            proc = spawn(
                role,
                [twistd, "-n", "--pidfile=", f"--logfile={log}", "socketeer", "-c", str(cfg)],
                d,
                env,
            )
            proc.twistd_log = log
            self.procs.append(proc)
            if role == "broker":
                wait_for(
                    lambda p=proc: port_open("127.0.0.1", broker_port) or not p.alive(),
                    30,
                    "the embedded broker",
                )
                self.check_alive()
        nodes = {p.name: (2 if p.name == "all" else 1) for p in self.procs if p.name != "broker"}

        def on_channel() -> bool:
            self.check_alive()
            for p in self.procs:
                if p.name in nodes:
                    try:
                        text = p.twistd_log.read_text(errors="replace")
                    except OSError:
                        return False
                    if text.count("is on the channel") < nodes[p.name]:
                        return False
            return True

        wait_for(on_channel, 60, f"{self.name}'s nodes to join the channel", step=0.1)
        self.proxy = ("127.0.0.1", proxy_port)
        self.info["processes"] = len(self.procs)
        self.wait_ready(ctx)

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                log = p.twistd_log or p.log
                try:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                except OSError:
                    tail = p.tail()
                raise RuntimeError(
                    f"{self.name}: {p.name} exited ({p.popen.returncode}):\n{tail}\n{p.tail()}"
                )

    def role_pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.procs if p.alive()}


def seal_available(code: Path) -> bool:
    """Whether the code under test seals messages with a codekey: a seal module exists and the
    service tree uses it (so ``codekey=`` in a channel URL is not silently ignored). Both
    layouts count: role packages (``wire/seal.py``, ``app.py``) and the older flat one."""
    pkg = code / "socketeer"
    seal = [pkg / "wire" / "seal.py", pkg / "seal.py"]
    tree = [pkg / "app.py", pkg / "tap.py"]
    return any(p.exists() for p in seal) and any(
        p.exists() and "seal" in p.read_text() for p in tree
    )
