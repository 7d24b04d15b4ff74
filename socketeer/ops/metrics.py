"""Prometheus metrics: a collector that reads the nodes' counters at scrape time.

Every series carries ``cluster`` and ``node`` labels (one node per sourcesink). The numbers
come from each node's snapshot (its counters plus its live streams), so nothing is counted
twice and nothing on the data path changes when metrics are on:

=========================================== ==============================================
``socketeer_streams_opened_total``          streams started (open now, closed or failed)
``socketeer_streams_closed_total``          streams that ended after opening
``socketeer_streams_failed_total{reason}``  streams that could not open, by reason
                                            (``refused``, ``denied``, ``timeout``, ...)
``socketeer_streams_expired_total``         streams ended because their peer went silent
``socketeer_streams{phase}``                streams now ``opening``, ``open`` or ``closing``
``socketeer_relayed_bytes_total{direction}`` payload bytes: ``out`` (read from local
                                            sockets, sent to peers), ``in`` (written to them)
``socketeer_messages_total{direction}``     tunnel messages sent (``out``) and received
``socketeer_messages_dropped_total{reason}`` malformed, foreign, unknown-stream, unsealed,
                                            forged (``seal-auth``), replayed, stale, ...
``socketeer_denied_total{rule}``            connections and streams refused by a rule
``socketeer_channel_connected``             1 while the node's broker connection is up
``socketeer_channel_waiting``               new OPENs and RESOLVEs waiting for that connection
``socketeer_channel_connects_total``        successful broker connections (and subscribes)
``socketeer_channel_reconnects_total``      the same, less the first
``socketeer_peer_rtt_seconds{peer}``        last measured ping round trip to a peer node
``socketeer_peer_last_seen_timestamp_seconds{peer}`` when a peer node was last heard from
``socketeer_events_total{event}``           every other node counter (pongs, ...)
``socketeer_broker_connections``            clients of the embedded broker
``socketeer_broker_refused_total{reason}``  connections and requests the broker refused:
                                            over a cap (``connections``,
                                            ``connections-per-address``), before login
                                            (``connect-too-large``, ``handshake-timeout``,
                                            ``authentication``, ``login-locked-out``,
                                            ``login-busy``, ``handshake``), and
                                            transactions (``transaction``, ``transactions``,
                                            ``transaction-bytes``)
``socketeer_broker_queued_bytes``           bytes waiting for congested subscribers
``socketeer_broker_paused_publishers``      publishers not read: a queue they fill is full
``socketeer_broker_slow_disconnects_total`` subscribers disconnected: over their queue
                                            bound too long
``socketeer_logins_total{door,outcome}``    proxy (``door="proxy"``), status server and
                                            broker (``door="broker"``, a CONNECT's
                                            passcode) password checks: ``ok``,
                                            ``cached``, ``failed``, ``locked-out``, ``busy``
``socketeer_logins_pending``                logins waiting for (or running) a hash
``socketeer_info{version}``                 always 1
=========================================== ==============================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from socketeer.ops.snapshot import ServiceSnapshot

__all__ = ["LoginCollector", "SocketeerCollector"]

_LABELS = ["cluster", "node"]
#: What ``describe`` renders: no nodes, but every family.
_EMPTY = ServiceSnapshot("", 0.0, 0.0, None, 0, (), 0, 0, 0)


class SocketeerCollector(Collector):
    """Turns a status snapshot (:func:`socketeer.ops.snapshot.take_snapshot`) into metrics."""

    def __init__(self, take: Callable[[], ServiceSnapshot]) -> None:
        self._take = take

    def describe(self) -> list[Metric]:
        """Every family this collector may yield (``?name[]=`` selects among them)."""
        return list(self._families(_EMPTY))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._take())

    def _families(self, snap: ServiceSnapshot) -> Iterator[Metric]:

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=[*_LABELS, *extra])

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*_LABELS, *extra])

        info = GaugeMetricFamily(
            "socketeer_info", "Socketeer build information", labels=["version"]
        )
        info.add_metric([snap.version], 1)
        yield info

        opened = counter("socketeer_streams_opened", "Streams started")
        closed = counter("socketeer_streams_closed", "Streams that ended after opening")
        failed = counter("socketeer_streams_failed", "Streams that could not open", ("reason",))
        expired = counter("socketeer_streams_expired", "Streams ended by a silent peer")
        live = gauge("socketeer_streams", "Streams now opening, open or closing", ("phase",))
        relayed = counter("socketeer_relayed_bytes", "Payload bytes relayed", ("direction",))
        messages = counter("socketeer_messages", "Tunnel messages", ("direction",))
        dropped = counter("socketeer_messages_dropped", "Messages dropped, by reason", ("reason",))
        denied = counter("socketeer_denied", "Connections and streams refused, by rule", ("rule",))
        connected = gauge("socketeer_channel_connected", "1 while the broker connection is up")
        connects = counter("socketeer_channel_connects", "Broker connections made")
        reconnects = counter("socketeer_channel_reconnects", "Broker connections after the first")
        waiting = gauge(
            "socketeer_channel_waiting", "New OPENs and RESOLVEs waiting for the broker connection"
        )
        rtt = gauge("socketeer_peer_rtt_seconds", "Last ping round trip to a peer", ("peer",))
        seen = gauge(
            "socketeer_peer_last_seen_timestamp_seconds", "When a peer was last heard", ("peer",)
        )
        events = counter("socketeer_events", "Other node counters", ("event",))

        for ss in snap.sourcesinks:
            n = ss.node
            c = n.counts
            who = [n.cluster, n.node]
            opened.add_metric(who, n.streams_opened)
            closed.add_metric(who, c.streams_closed)
            for reason, count in sorted(c.open_failed.items()):
                failed.add_metric([*who, reason.value], count)
            expired.add_metric(who, c.streams_expired)
            phases = {"opening": 0, "open": 0, "closing": 0}
            for s in n.streams:
                phases[s.phase] = phases.get(s.phase, 0) + 1
            for phase, count in phases.items():
                live.add_metric([*who, phase], count)
            relayed.add_metric([*who, "out"], n.bytes_out)
            relayed.add_metric([*who, "in"], n.bytes_in)
            messages.add_metric([*who, "out"], c.messages_out)
            messages.add_metric([*who, "in"], c.messages_in)
            for reason, count in sorted(c.dropped.items()):
                dropped.add_metric([*who, reason], count)
            for rule, count in sorted(c.denied.items()):
                denied.add_metric([*who, rule], count)
            ch = n.channel
            connected.add_metric(who, 1 if ch.connected else 0)
            connects.add_metric(who, ch.connects)
            reconnects.add_metric(who, ch.reconnects)
            waiting.add_metric(who, ch.waiting)
            for p in n.peers:
                if p.rtt is not None:
                    rtt.add_metric([*who, p.node], p.rtt)
                seen.add_metric([*who, p.node], p.last_heard)
            for event, count in sorted(c.events.items()):
                events.add_metric([*who, event], count)

        yield from (opened, closed, failed, expired, live, relayed, messages, dropped, denied)
        yield from (connected, connects, reconnects, waiting, rtt, seen, events)
        if snap.broker_connections is not None:
            broker = GaugeMetricFamily(
                "socketeer_broker_connections", "Clients of the embedded broker"
            )
            broker.add_metric([], snap.broker_connections)
            yield broker
            refused = CounterMetricFamily(
                "socketeer_broker_refused",
                "Connections and requests the embedded broker refused, by reason",
                labels=["reason"],
            )
            for reason, count in sorted(snap.broker_refused.items()):
                refused.add_metric([reason], count)
            yield refused
        if snap.broker_queued_bytes is not None:
            queued = GaugeMetricFamily(
                "socketeer_broker_queued_bytes", "Bytes waiting for congested broker subscribers"
            )
            queued.add_metric([], snap.broker_queued_bytes)
            paused = GaugeMetricFamily(
                "socketeer_broker_paused_publishers",
                "Broker publishers not read because a subscriber queue they fill is full",
            )
            paused.add_metric([], snap.broker_paused_publishers or 0)
            slow = CounterMetricFamily(
                "socketeer_broker_slow_disconnects",
                "Broker subscribers disconnected for staying over their queue bound",
            )
            slow.add_metric([], snap.broker_slow_disconnects or 0)
            yield from (queued, paused, slow)


class LoginCollector(Collector):
    """The process's login counters (:class:`socketeer.logins.Logins`), read at scrape time."""

    def __init__(self, logins: Any) -> None:
        self._logins = logins

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "socketeer_logins", "Password checks by door and outcome", labels=["door", "outcome"]
        )
        for (door, outcome), count in sorted(self._logins.counts.items()):
            total.add_metric([door, outcome], count)
        yield total
        pending = GaugeMetricFamily(
            "socketeer_logins_pending", "Logins waiting for (or running) a password hash"
        )
        pending.add_metric([], self._logins.pending)
        yield pending
