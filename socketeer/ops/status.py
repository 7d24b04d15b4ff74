"""The status server: ``/metrics`` for Prometheus and ``/status`` as JSON or a small HTML page.

Off by default; ``socketeer.general.statusserverenabled=true`` turns it on (see
:mod:`socketeer.config.status` for the keys). Everything shown is read at request time from the
running nodes, so nothing here sits on the data path:

* ``/status``: every sourcesink's node, its channel (connected, reconnects, the broker in
  use out of a failover list), its peers (last heard, last pong, round-trip time), its open
  streams (client, target, bytes each way, age, window), denials by rule and dropped or
  forged messages. JSON unless the client prefers ``text/html`` (a browser); ``?format=json``
  or ``?format=html`` decides explicitly.
* ``/metrics``: the same numbers as Prometheus counters and gauges (:mod:`socketeer.ops.metrics`).

While the status server runs, each node broadcasts a ping to its cluster every
:data:`PING_INTERVAL` seconds, so that peers and their round-trip times are known even when
no stream is open.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import resource, server

from socketeer.config.keys import K_STATUS_PORT
from socketeer.listening import keyed_listener
from socketeer.logins import Logins
from socketeer.ops.human import human_bytes, human_seconds
from socketeer.ops.snapshot import ServiceSnapshot, SourcesinkState, take_snapshot
from socketeer.policy import client_host
from socketeer.secret import Secret

__all__ = ["PING_INTERVAL", "StatusService", "node_report", "report"]

#: Seconds between the broadcast pings that keep peers' round-trip times fresh.
PING_INTERVAL = 15.0


def channel_report(ss: SourcesinkState) -> dict[str, Any]:
    """Where the node's channel goes and whether it is up."""
    ch = ss.node.channel
    return {
        "connected": ch.connected,
        "congested": ch.congested,
        "broker": ch.broker,
        "brokers": list(ss.brokers),
        "url": ss.url,
        "connects": ch.connects,
        "reconnects": ch.reconnects,
        "waiting": ch.waiting,
    }


def node_report(ss: SourcesinkState, now: float) -> dict[str, Any]:
    """One sourcesink's node as plain data (the ``/status`` JSON's ``nodes`` items)."""
    node = ss.node
    counts = node.counts
    peers = [
        {
            "node": p.node,
            "incarnation": p.incarnation,
            "last_heard": round(now - p.last_heard, 3),
            "last_pong": None if p.last_pong is None else round(now - p.last_pong, 3),
            "rtt": None if p.rtt is None else round(p.rtt, 6),
        }
        for p in node.peers
    ]
    streams = [
        {
            "id": s.id,
            "peer": s.peer,
            "client": s.client or s.peer,
            "target": s.target,
            "phase": s.phase,
            "sent": s.sent,
            "received": s.received,
            "age": round(now - s.started, 3),
            "window": s.window,
            "unacknowledged": s.unacknowledged,
        }
        for s in node.streams
    ]
    return {
        "id": ss.id,
        "cluster": node.cluster,
        "node": node.node,
        "role": ss.role,
        "peernode": ss.peernode,
        "incarnation": node.incarnation,
        "channel": channel_report(ss),
        "peers": peers,
        "streams": streams,
        "totals": {
            "streams_open": len(streams),
            "streams_opened": node.streams_opened,
            "streams_closed": counts.streams_closed,
            "streams_failed": {k.value: v for k, v in counts.open_failed.items()},
            "streams_expired": counts.streams_expired,
            "bytes_out": node.bytes_out,
            "bytes_in": node.bytes_in,
            "messages_out": counts.messages_out,
            "messages_in": counts.messages_in,
        },
        "denials": dict(counts.denied),
        "dropped": counts.dropped,
        "counters": counts.by_name(),
    }


def report(snap: ServiceSnapshot) -> dict[str, Any]:
    """Everything ``/status`` shows, as plain data (its JSON)."""
    return {
        "version": snap.version,
        "time": snap.time,
        "uptime": round(snap.uptime, 3),
        "config": snap.config,
        "broker": None
        if snap.broker_connections is None
        else {
            "connections": snap.broker_connections,
            "queued_bytes": snap.broker_queued_bytes,
            "paused_publishers": snap.broker_paused_publishers,
            "slow_disconnects": snap.broker_slow_disconnects,
        },
        "nodes": [node_report(ss, snap.time) for ss in snap.sourcesinks],
    }


# -- HTML --------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.4em 0 1em}"
    "th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:90%}"
    "th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".up{color:#070}.down{color:#b00}"
)


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], numeric: set[int]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{e(str(v))}</td>' if i in numeric else f"<td>{e(str(v))}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _counts(title: str, counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    items = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(counts.items()))
    return f"<p><b>{html.escape(title)}</b>: {items}</p>"


def render_html(snap: Mapping[str, Any]) -> str:
    """The ``/status`` page: one section per node, refreshed every 5 seconds."""
    e = html.escape
    parts = [
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="5"><title>Socketeer status</title>'
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Socketeer {e(snap['version'])}</h1>",
        f"<p>up {e(human_seconds(snap['uptime']))}"
        + (f"; configuration {e(snap['config'])}" if snap.get("config") else "")
        + (
            f"; embedded broker: {snap['broker']['connections']} connections"
            if snap.get("broker")
            else ""
        )
        + '; <a href="status?format=json">JSON</a>, <a href="metrics">metrics</a></p>',
    ]
    for n in snap["nodes"]:
        ch, t = n["channel"], n["totals"]
        state = (
            f'<span class="up">connected to {e(ch["broker"] or "?")}</span>'
            if ch["connected"]
            else '<span class="down">not connected</span>'
        )
        brokers = ", ".join(b for b in ch["brokers"] if b)
        parts.append(
            f"<h2>{e(n['id'])}: {e(n['cluster'])}/{e(n['node'])} ({e(n['role'])})</h2>"
            f"<p>channel {state}; {ch['reconnects']} reconnects; brokers: {e(brokers)}"
            + (f"; {ch['waiting']} waiting for it" if ch["waiting"] else "")
            + "</p>"
            f"<p>streams: {t['streams_open']} open, {t['streams_opened']} opened, "
            f"{t['streams_closed']} closed; {e(human_bytes(t['bytes_out']))} out, "
            f"{e(human_bytes(t['bytes_in']))} in; messages {t['messages_out']} out, "
            f"{t['messages_in']} in</p>"
        )
        parts.append(_counts("open failures", t["streams_failed"]))
        parts.append(_counts("denials by rule", n["denials"]))
        parts.append(_counts("dropped messages", n["dropped"]))
        if n["peers"]:
            parts.append(
                _table(
                    ("peer", "last heard", "last pong", "round trip"),
                    (
                        (
                            p["node"],
                            human_seconds(p["last_heard"]) + " ago",
                            "-"
                            if p["last_pong"] is None
                            else human_seconds(p["last_pong"]) + " ago",
                            human_seconds(p["rtt"]),
                        )
                        for p in n["peers"]
                    ),
                    {1, 2, 3},
                )
            )
        if n["streams"]:
            parts.append(
                _table(
                    ("stream", "client", "target", "phase", "out", "in", "age", "window"),
                    (
                        (
                            s["id"],
                            s["client"],
                            s["target"],
                            s["phase"],
                            human_bytes(s["sent"]),
                            human_bytes(s["received"]),
                            human_seconds(s["age"]),
                            human_bytes(s["window"]),
                        )
                        for s in n["streams"]
                    ),
                    {4, 5, 6, 7},
                )
            )
    parts.append("</body></html>")
    return "".join(parts)


# -- the web resources -------------------------------------------------------------------


def _wants_html(request: server.Request) -> bool:
    fmt = request.args.get(b"format", [b""])[0]
    if fmt:
        return fmt == b"html"
    accept = (request.getHeader("accept") or "").lower()
    return "text/html" in accept


class StatusResource(resource.Resource):
    """``/status``: the snapshot as JSON, or as HTML for a browser."""

    isLeaf = True

    def __init__(self, take: Callable[[], ServiceSnapshot]) -> None:
        super().__init__()
        self._take = take

    def render_GET(self, request: server.Request) -> bytes:
        snap = report(self._take())
        request.setHeader("cache-control", "no-store")
        if _wants_html(request):
            request.setHeader("content-type", "text/html; charset=utf-8")
            return render_html(snap).encode("utf-8")
        request.setHeader("content-type", "application/json")
        return json.dumps(snap, indent=1).encode("utf-8") + b"\n"


class MetricsResource(resource.Resource):
    """``/metrics``: a registry in the Prometheus (or OpenMetrics) text format.

    ``prometheus_client.twisted.MetricsResource`` would render in the global reactor's
    thread pool; our collectors read live node state, which only the reactor thread may
    touch, so this renders in the reactor thread (a scrape takes well under a millisecond
    per hundred streams).
    """

    isLeaf = True

    def __init__(self, registry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: server.Request) -> bytes:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.getHeader("accept") or "")
        registry = self._registry
        names = [n.decode("utf-8", "replace") for n in request.args.get(b"name[]", [])]
        if names:
            registry = registry.restricted_registry(names)
        request.setHeader("content-type", content_type)
        return encoder(registry)


class _Index(resource.Resource):
    def render_GET(self, request: server.Request) -> bytes:
        request.redirect(b"status")
        return b""


class _Unauthorized(resource.Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader("www-authenticate", 'Basic realm="socketeer status"')
        request.setHeader("content-type", "text/plain")
        return b"authentication required\n"


class _Checking(resource.Resource):
    """A request whose password is being checked off the reactor thread: answered when the
    verdict comes (the resource it asked for, or 401), or forgotten if the client left."""

    isLeaf = True

    def __init__(self, site: StatusSite, verdict: Deferred) -> None:
        super().__init__()
        self._site = site
        self._verdict = verdict

    def render(self, request: server.Request) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(ok: bool) -> None:
            if gone:
                return
            target = self._site.resource_for(request) if ok else _Unauthorized()
            body = target.render(request)
            if body is server.NOT_DONE_YET:  # pragma: no cover - our resources answer at once
                return
            if request.method != b"HEAD":
                request.write(body)
            request.finish()

        self._verdict.addCallback(answer)
        return server.NOT_DONE_YET


class StatusSite(server.Site):
    """The status server's site: HTTP basic authentication when users are configured
    (checked by a :class:`socketeer.logins.Door`: off the reactor thread, cached, failures
    limited per address), and no access log (a Prometheus scrape every few seconds would
    drown the useful lines)."""

    def __init__(
        self, root: resource.Resource, users: Mapping[str, Secret], reactor, logins: Logins
    ) -> None:
        super().__init__(root, reactor=reactor)
        self._door = logins.door("status", users) if users else None

    def log(self, request: server.Request) -> None:
        pass

    def resource_for(self, request: server.Request) -> resource.Resource:
        """The resource *request* asks for, once it is authorized."""
        return super().getResourceFor(request)

    def getResourceFor(self, request: server.Request) -> resource.Resource:
        if self._door is None:
            return self.resource_for(request)
        if request.getHeader("authorization") is None:
            return _Unauthorized()  # a browser's first request: not a failed login
        login = request.getUser().decode("utf-8", "replace")
        password = request.getPassword().decode("utf-8", "replace")
        address = client_host(request.getClientAddress())
        d = self._door.login(login, password, address)
        verdict: list[bool] = []
        d.addCallback(verdict.append)
        if not verdict:
            return _Checking(self, d.addCallback(lambda _: verdict[0]))
        return self.resource_for(request) if verdict[0] else _Unauthorized()


class StatusService(MultiService):
    """The status listener, and the broadcast pings that keep peers' round trips known."""

    log = Logger()

    def __init__(self, root: Any, config: Any, reactor, *, ping_interval: float = PING_INTERVAL):
        super().__init__()
        from prometheus_client import CollectorRegistry
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        from socketeer.ops.metrics import LoginCollector, SocketeerCollector

        self.root = root
        self.config = config
        self.clock = reactor
        self.started = reactor.seconds()
        self.ping_interval = ping_interval
        #: This service's own registry (not prometheus_client's global one).
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(SocketeerCollector(self.snapshot))
        logins = getattr(root, "logins", None)
        if logins is None:
            logins = Logins(config.logins, reactor)
        self.registry.register(LoginCollector(logins))
        top = resource.Resource()
        top.putChild(b"", _Index())
        top.putChild(b"status", StatusResource(self.snapshot))
        top.putChild(b"metrics", MetricsResource(self.registry))
        self.site = StatusSite(top, config.status.users, reactor, logins)
        listener = keyed_listener(K_STATUS_PORT, config.status.listen, self.site, reactor)
        listener.setName("listener")
        listener.setServiceParent(self)
        self._pinger: LoopingCall | None = None

    def snapshot(self) -> ServiceSnapshot:
        return take_snapshot(self.root, self.config, self.clock, self.started)

    def ping_peers(self) -> None:
        """Every connected node asks its whole cluster for a pong."""
        for node in self.root.nodes.values():
            if node.connected:
                node.ping()

    def startService(self) -> None:
        super().startService()
        self.log.info("status server on {listen}", listen=self.config.status.listen)
        if self.ping_interval > 0:
            self._pinger = LoopingCall(self.ping_peers)
            self._pinger.clock = self.clock
            self._pinger.start(self.ping_interval, now=False)
        for node in self.root.nodes.values():  # a first round trip as soon as each is up
            node.when_ready().addCallback(lambda n: n.ping())

    def stopService(self):
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        self._pinger = None
        return super().stopService()
