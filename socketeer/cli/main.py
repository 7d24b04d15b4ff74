"""The ``socketeer`` command: configuration checks, keys, a status view and a stdio stream.

``twistd socketeer -c FILE`` runs a configuration; this command is the toolbox around it::

    socketeer check FILE                 validate FILE, print it resolved (secrets masked)
    socketeer genkey                     a strong random codekey
    socketeer hash-password              a pbkdf2-sha256$... hash for a password entry
    socketeer status [URL]               the status endpoint, as tables in the terminal
    socketeer connect -c FILE HOST PORT  one stream through the cluster on stdin/stdout

``connect`` is for ``ssh -o ProxyCommand='socketeer connect -c site.properties %h %p'``: it
starts only a node (no broker, no listener) for the configuration's first source (or the
sourcesink named by ``--via``), opens one stream to ``HOST:PORT`` through that source's
``peernode`` and relays it on standard input and output. The node is named
``<nodename>-<random>`` (or ``--node``), so it can run next to the daemon that uses the
same file. The source's lists apply as to a local client of its listener. Its log goes to
standard error (errors only, unless ``-v``).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import getpass
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.stdio import StandardIO
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import __version__
from socketeer.config.load import load_config
from socketeer.tap import build_service
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Stream

__all__ = ["main"]

DEFAULT_STATUS_URL = "http://127.0.0.1:9626/status"


# -- check -------------------------------------------------------------------------------


def _value(value: Any) -> str | None:
    """A scalar shown on one line, or None for something to unfold."""
    from socketeer.channel.url import ChannelSpec, Secret

    if value is None:
        return "none"
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, ChannelSpec):
        return value.redacted()
    describe = getattr(value, "describe", None)
    if callable(describe):
        return str(describe())
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, Mapping | list | tuple) and not value:
        return "none"
    if dataclasses.is_dataclass(value) or isinstance(value, Mapping | list | tuple):
        return None
    return str(value)


def describe_config(config: Any) -> list[str]:
    """The resolved configuration, one ``name: value`` line each, nested by indentation."""
    lines: list[str] = []

    def walk(name: str, value: Any, depth: int) -> None:
        pad = "  " * depth
        text = _value(value)
        if text is not None:
            lines.append(f"{pad}{name}: {text}")
            return
        lines.append(f"{pad}{name}:")
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f.name, getattr(value, f.name), depth + 1)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(str(key), item, depth + 1)
        else:
            for i, item in enumerate(value):
                walk(f"- {i}", item, depth + 1)

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "warnings":
            continue  # printed on their own
        if f.name == "sourcesinks":
            for ss in value:
                walk(f"sourcesink {ss.id}", ss, 0)
            continue
        walk(f.name, value, 0)
    return lines


def cmd_check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from socketeer.config.load import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=err)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=err)
    if not args.quiet:
        for line in describe_config(config):
            print(line, file=out)
    if args.strict and config.warnings:
        print(f"{args.config}: {len(config.warnings)} warnings (--strict)", file=err)
        return 1
    print(f"{args.config}: OK", file=err)
    return 0


# -- genkey, hash-password ------------------------------------------------------------


def cmd_genkey(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if not 16 <= args.bytes <= 1024:
        print("error: --bytes must be 16..1024", file=err)
        return 2
    print(secrets.token_urlsafe(args.bytes), file=out)  # URL-safe: fits in a channel URL
    return 0


def _read_password(stdin: IO[str], err: IO[str]) -> str | None:
    if stdin.isatty():
        first = getpass.getpass("Password: ", stream=err)
        if getpass.getpass("Again: ", stream=err) != first:
            print("error: the passwords differ", file=err)
            return None
        return first
    line = stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def cmd_hash_password(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from socketeer.passwords import hash_password

    password = _read_password(sys.stdin, err)
    if password is None:
        return 1
    if not password:
        print("error: empty password", file=err)
        return 1
    print(hash_password(password, iterations=args.iterations), file=out)
    return 0


# -- status ----------------------------------------------------------------------------


def _url_from_config(path: str) -> str:
    from socketeer.config.load import _endpoint_fields, load_config

    config = load_config(path)
    if config.status is None:
        raise ValueError(f"{path}: the status server is not enabled")
    kind = config.status.listen.split(":", 1)[0]
    args, kwargs = _endpoint_fields(config.status.listen)
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"{path}: cannot reach a {kind} status listener; give the URL")
    port = kwargs.get("port", args[0] if args else "")
    host = kwargs.get("interface", "127.0.0.1")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def fetch_status(url: str, user: str | None, password: str | None, timeout: float) -> dict:
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/status")
    query = urllib.parse.urlencode([("format", "json")])
    request = urllib.request.Request(
        urllib.parse.urlunsplit(parts._replace(query=query)),
        headers={"Accept": "application/json"},
    )
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _bytes(n: float) -> str:
    from socketeer.ops.status import human_bytes

    return human_bytes(n)


def _seconds(s: float | None) -> str:
    from socketeer.ops.status import human_seconds

    return human_seconds(s)


def _rate(n: float | None) -> str:
    return "-" if n is None else f"{_bytes(n)}/s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def render_status(
    snap: Mapping[str, Any], previous: Mapping[str, Any] | None = None, source: str = ""
) -> str:
    """The status snapshot as terminal tables; rates are per second since *previous*, or
    averages over each stream's life without one."""
    elapsed = snap["time"] - previous["time"] if previous else 0.0
    before_nodes: dict[str, Any] = {}
    before_streams: dict[tuple[str, str], Any] = {}
    if previous and elapsed > 0:
        for n in previous["nodes"]:
            before_nodes[n["id"]] = n["totals"]
            for s in n["streams"]:
                before_streams[(n["id"], s["id"])] = s

    def rate(now: float, before: float | None, age: float | None = None) -> float | None:
        if before is not None:
            return max(now - before, 0) / elapsed
        if age:
            return now / age
        return None

    head = f"Socketeer {snap['version']}"
    if source:
        head += f" at {source}"
    head += f", up {_seconds(snap['uptime'])}"
    if snap.get("broker"):
        head += f", embedded broker: {snap['broker']['connections']} connections"
    lines = [head, ""]
    rows = []
    for n in snap["nodes"]:
        ch, t = n["channel"], n["totals"]
        old = before_nodes.get(n["id"])
        state = f"up {ch['broker']}" if ch["connected"] else "DOWN"
        rows.append(
            (
                f"{n['cluster']}/{n['node']}",
                n["role"],
                state,
                ch["reconnects"],
                t["streams_open"],
                t["streams_opened"],
                sum(t["streams_failed"].values()),
                _bytes(t["bytes_out"]),
                _bytes(t["bytes_in"]),
                _rate(rate(t["bytes_out"], old and old["bytes_out"])) if old else "-",
                _rate(rate(t["bytes_in"], old and old["bytes_in"])) if old else "-",
            )
        )
    lines += _table(
        (
            "NODE",
            "ROLE",
            "CHANNEL",
            "RECONNECTS",
            "OPEN",
            "OPENED",
            "FAILED",
            "OUT",
            "IN",
            "OUT/s",
            "IN/s",
        ),
        rows,
    )
    peers = [
        (
            f"{n['cluster']}/{n['node']}",
            p["node"],
            _seconds(p["last_heard"]) + " ago",
            _seconds(p["rtt"]),
        )
        for n in snap["nodes"]
        for p in n["peers"]
    ]
    if peers:
        lines += ["", *_table(("NODE", "PEER", "LAST HEARD", "ROUND TRIP"), peers)]
    streams = []
    for n in snap["nodes"]:
        for s in n["streams"]:
            old = before_streams.get((n["id"], s["id"]))
            streams.append(
                (
                    f"{n['cluster']}/{n['node']}",
                    s["client"],
                    s["target"],
                    s["phase"],
                    _bytes(s["sent"]),
                    _bytes(s["received"]),
                    _seconds(s["age"]),
                    _rate(rate(s["sent"], old and old["sent"], s["age"])),
                    _rate(rate(s["received"], old and old["received"], s["age"])),
                    _bytes(s["window"]),
                )
            )
    if streams:
        lines += [
            "",
            *_table(
                (
                    "NODE",
                    "CLIENT",
                    "TARGET",
                    "PHASE",
                    "OUT",
                    "IN",
                    "AGE",
                    "OUT/s",
                    "IN/s",
                    "WINDOW",
                ),
                streams,
            ),
        ]
    else:
        lines += ["", "no open streams"]
    for n in snap["nodes"]:
        for title, counts in (
            ("open failures", n["totals"]["streams_failed"]),
            ("denials", n["denials"]),
            ("dropped messages", n["dropped"]),
        ):
            if counts:
                items = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                lines.append(f"{n['cluster']}/{n['node']} {title}: {items}")
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        url = args.url or (_url_from_config(args.config) if args.config else DEFAULT_STATUS_URL)
    except Exception as e:  # ConfigError or ValueError: a one-line message either way
        print(f"error: {e}", file=err)
        return 1
    password = os.environ.get("SOCKETEER_STATUS_PASSWORD")
    if args.user and password is None:
        password = getpass.getpass(f"Password for {args.user}: ", stream=err)
    previous = None
    while True:
        try:
            snap = fetch_status(url, args.user, password, args.timeout)
        except (OSError, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code == 401:
                print(f"error: {url}: authentication required (--user)", file=err)
            else:
                print(f"error: {url}: {e}", file=err)
            return 1
        if args.json:
            out.write(json.dumps(snap, indent=1) + "\n")
        else:
            if args.watch and out.isatty():
                out.write("\x1b[H\x1b[2J")
            out.write(render_status(snap, previous, url))
        out.flush()
        if not args.watch:
            return 0
        previous = snap
        time.sleep(args.watch)


# -- connect ---------------------------------------------------------------------------


def _pick_sourcesink(config: Any, via: str | None) -> Any:
    if via is not None:
        for ss in config.sourcesinks:
            if ss.id == via:
                if ss.peernode is None:
                    raise ValueError(f"sourcesink {via} has no peernode to connect through")
                return ss
        known = ", ".join(ss.id for ss in config.sourcesinks) or "none"
        raise ValueError(f"no sourcesink {via!r} in {config.path} (there are: {known})")
    for ss in config.sourcesinks:
        if ss.is_source:
            return ss
    raise ValueError(f"{config.path} has no source (a sourcesink with serverport and peernode)")


def connect_config(config: Any, ss: Any, node_name: str) -> Any:
    """*config* reduced to one node for *ss*: no broker, no listener, no status server."""
    solo = dataclasses.replace(
        ss, nodename=node_name, serverport=None, spawning_sink=False, proxy=None
    )
    return dataclasses.replace(
        config,
        broker=dataclasses.replace(config.broker, enabled=False),
        sourcesinks=(solo,),
        warnings=(),
        status=None,
    )


def _release_stdout(fd: int = 1) -> None:
    """Close our end of whatever fd 1 is, keeping the descriptor itself valid."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


@implementer(IHalfCloseableProtocol)
class StdioRelay(SocketRelay):
    """Standard input and output relayed to one stream; ``ended`` fires when both are done.

    StandardIO differs from a socket in two ways that matter here: closing its write half
    leaves fd 1 open, and it never calls ``connectionLost`` once its halves have closed one
    by one (stdin's EOF, then stdout flushed after the peer's EOF).
    """

    def __init__(self, stream: Stream) -> None:
        super().__init__(lambda relay: stream)
        self.ended: Deferred = Deferred()
        self._lost = False

    def writeConnectionLost(self) -> None:
        # The peer's EOF. Twisted stops writing stdout but keeps fd 1 open, so whoever
        # reads it (ssh's ProxyCommand, a pipe) would see no EOF until we exit, unlike
        # ``ssh -W``: point fd 1 at /dev/null, which closes our end of their pipe.
        _release_stdout()
        super().writeConnectionLost()

    def both_closed(self) -> None:
        super().both_closed()
        self.connectionLost(None)  # StandardIO will not

    def stream_ended(self) -> None:
        super().stream_ended()
        if self.write_closed:
            # The stream ended (the peer's CLOSE, or it expired) after stdout had closed on
            # the peer's EOF, with stdin still open: StandardIO will report nothing more.
            self.connectionLost(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._lost:  # reported by StandardIO, or by us when it would not
            return
        self._lost = True
        super().connectionLost(reason)
        self.ended.callback(None)


async def run_connect(reactor: Any, args: argparse.Namespace, err: IO[str]) -> int:
    config = load_config(args.config)
    ss = _pick_sourcesink(config, args.via)
    # The source's own lists, as for a client of its listener (a local one).
    host, port = args.host, args.port
    for decision in (
        ss.policy.admit("localhost"),
        ss.policy.evaluate(host, port, cluster=ss.clustername, node=ss.peernode),
    ):
        if not decision.allowed:
            print(f"socketeer connect: {host}:{port}: {decision.rule_text}", file=err)
            return 1
    host, port = decision.target_host, decision.target_port
    node_name = args.node or f"{ss.nodename}-{os.urandom(3).hex()}"
    root = build_service(connect_config(config, ss, node_name), reactor)
    node = root.nodes[ss.id]
    root.startService()
    stream = node.open_stream(
        ss.peernode,
        host,
        port,
        client="stdio",
        timeout=args.timeout or 3 * ss.connect_timeout,
    )
    failure: list[str] = []

    def open_failed(stream: Any, reason: Any, message: str) -> None:
        # The stream then ends the relay, which closes standard input and output.
        failure.append(f"{reason.value}{': ' + message if message else ''}")

    stream.on_open_failed = open_failed
    relay = StdioRelay(stream)
    StandardIO(relay, reactor=reactor)
    try:
        await relay.ended
    finally:
        await root.stopService()
    if failure:
        print(
            f"socketeer connect: cannot open {args.host}:{args.port} via node "
            f"{ss.peernode}: {failure[0]}",
            file=err,
        )
        return 1
    return 0


def cmd_connect(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred
    from twisted.logger import LogLevel, globalLogBeginner, textFileLogObserver

    from socketeer import logs
    from socketeer.config.load import ConfigError

    if not 0 < args.port < 65536:
        print("error: PORT must be 1..65535", file=err)
        return 2
    try:  # configuration problems first, as one line, before any reactor
        _pick_sourcesink(load_config(args.config), args.via)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=err)
        return 1
    level = {0: LogLevel.error, 1: LogLevel.info}.get(args.verbose, LogLevel.debug)
    # Standard output carries the stream: the log goes to standard error, and only there.
    globalLogBeginner.beginLoggingTo(
        [logs.filtered(textFileLogObserver(err), level)], redirectStandardIO=False
    )
    code: list[int] = []

    def go(reactor: Any) -> Deferred:
        return ensureDeferred(run_connect(reactor, args, err)).addCallback(code.append)

    try:
        task.react(go)  # runs the reactor, then exits: 1 if run_connect raised
    except SystemExit:
        pass
    return code[0] if code else 1


# -- main ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socketeer",
        description="Tools for Socketeer, the TCP tunnel over a STOMP broker. "
        "Run a configuration with: twistd -n socketeer -c FILE",
    )
    parser.add_argument("--version", action="version", version=f"socketeer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "check",
        help="validate a properties file and print it resolved",
        description="Validate FILE and print the configuration it resolves to (defaults "
        "filled in, secrets masked). Errors and warnings name file:line. Exit status 0 "
        "when it would run, 1 when not.",
    )
    p.add_argument("config", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and warnings")
    p.add_argument("--strict", action="store_true", help="warnings fail the check too")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "genkey",
        help="print a strong random codekey",
        description="Print a random key for a channel's codekey= parameter (URL-safe "
        "base64 of --bytes random bytes).",
    )
    p.add_argument("--bytes", type=int, default=32, help="random bytes (default 32)")
    p.set_defaults(func=cmd_genkey)

    p = sub.add_parser(
        "hash-password",
        help="print a pbkdf2-sha256 hash of a password",
        description="Read a password (prompted twice on a terminal, else the first line of "
        "standard input) and print the pbkdf2-sha256$... hash that authorisation users, "
        "broker users and status server users accept in place of the password.",
    )
    p.add_argument("--iterations", type=int, default=200_000, help="default 200000")
    p.set_defaults(func=cmd_hash_password)

    p = sub.add_parser(
        "status",
        help="show the status endpoint in the terminal",
        description="Fetch a running Socketeer's /status and show its nodes, peers and "
        f"streams. URL defaults to the status server of -c FILE, else {DEFAULT_STATUS_URL}. "
        "Credentials: http://user:pass@host:port/ or --user (password from "
        "$SOCKETEER_STATUS_PASSWORD or a prompt).",
    )
    p.add_argument("url", nargs="?", metavar="URL")
    p.add_argument("-c", "--config", metavar="FILE", help="find the status server in FILE")
    p.add_argument("--user", help="basic authentication login")
    p.add_argument("--json", action="store_true", help="print the JSON as it comes")
    p.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS, with rates"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "connect",
        help="relay stdin/stdout to HOST:PORT through the cluster (ssh ProxyCommand)",
        description="Open one stream to HOST:PORT through the peernode of the first source "
        "in FILE (or of --via ID) and relay it on standard input and output, e.g. "
        "ssh -o ProxyCommand='socketeer connect -c site.properties %%h %%p' host",
    )
    p.add_argument("-c", "--config", metavar="FILE", required=True)
    p.add_argument("--via", metavar="ID", help="the sourcesink to use (default: first source)")
    p.add_argument("--node", help="this node's name (default: <nodename>-<random>)")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the stream to open (default 3 x the sourcesink's connecttimeout)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.add_argument("host", metavar="HOST")
    p.add_argument("port", metavar="PORT", type=int)
    p.set_defaults(func=cmd_connect)
    return parser


def main(
    argv: Sequence[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """The ``socketeer`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
