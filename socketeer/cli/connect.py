"""``socketeer connect -c FILE HOST PORT``: one stream through the cluster on stdin/stdout.

It is for ``ssh -o ProxyCommand='socketeer connect -c site.properties %h %p'``: it starts
only a node (no broker, no listener) for the configuration's first source (or the
sourcesink named by ``--via``), opens one stream to ``HOST:PORT`` through that source's
``peernode`` and relays it on standard input and output (``StdioRelay``). The node is named
``<nodename>-<random>`` (or ``--node``), so it can run next to the daemon that uses the
same file. The source's lists apply as to a local client of its listener. Its log goes to
standard error (errors only, unless ``-v``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import IO, Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.stdio import StandardIO
from twisted.logger import LogLevel, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import logs
from socketeer.app import build_service
from socketeer.config.load import load_config
from socketeer.config.model import ConfigError
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Stream


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

    def stream_reset(self) -> None:
        # Standard output has no reset: close it, as an ended stream does.
        self.stream_ended()

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
        timeout=args.timeout or ss.open_timeout,
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
