"""The service snapshot rendered as the /status JSON and as metrics, from nodes on a Clock."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from socketeer import __version__
from socketeer.broker.protocol import BrokerFactory, BrokerProtocol
from socketeer.broker.router import Router
from socketeer.ops.metrics import SocketeerCollector
from socketeer.ops.snapshot import take_snapshot
from socketeer.ops.status import report
from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.relay import SocketRelay
from socketeer.wire.envelope import Envelope, MsgType

from support.relay import Link
from support.sessions import hello_ok


class Root:
    """A service tree with one node and no broker or channel services."""

    def __init__(self, node: Node) -> None:
        self.nodes = {"so": node}

    def getServiceNamed(self, name: str):
        raise KeyError(name)


def busy_node(clock: Clock) -> Node:
    node = Node("c", "so", "t", clock, incarnation="me", window=1 << 20)
    link = Link()
    link.broker = "127.0.0.1:61613"
    node.channel_ready(link)
    hello_ok(node)
    stream = node.open_stream("si", "example.org", 80, client="127.0.0.1:4000")
    SocketRelay(lambda relay: stream).makeConnection(StringTransport())
    node.envelope_received(
        Envelope(MsgType.OPEN_OK, "c", "si", "so", stream.resource, 0, 0, "p1", b"", "me")
    )
    stream.write(b"x" * 10)
    clock.advance(2)
    node.stats.denied["blacklist b"] += 2
    node.stats.open_failed[OpenFailure.REFUSED] += 1
    node.stats.seal_refused["auth"] += 3
    node.stats.malformed += 1
    node.stats.pongs += 4
    return node


def test_status_json_of_a_node():
    clock = Clock()
    clock.advance(100)
    node = busy_node(clock)
    (stream,) = node.streams.values()
    snap = report(take_snapshot(Root(node), None, clock, 90.0))
    assert snap == {
        "version": __version__,
        "time": 102.0,
        "uptime": 12.0,
        "config": None,
        "broker": None,
        "nodes": [
            {
                "id": "so",
                "cluster": "c",
                "node": "so",
                "role": "node",
                "peernode": None,
                "incarnation": "me",
                "channel": {
                    "connected": True,
                    "congested": False,
                    "broker": "127.0.0.1:61613",
                    "brokers": [],
                    "url": None,
                    "connects": 1,
                    "reconnects": 0,
                    "waiting": 0,
                },
                "peers": [
                    {
                        "node": "si",
                        "incarnation": "p1",
                        "last_heard": 2.0,
                        "last_pong": None,
                        "rtt": None,
                    }
                ],
                "streams": [
                    {
                        "id": stream.resource,
                        "peer": "si",
                        "client": "127.0.0.1:4000",
                        "target": "example.org:80",
                        "phase": "open",
                        "sent": 10,
                        "received": 0,
                        "age": 2.0,
                        "window": 1 << 20,
                        "unacknowledged": stream.unacknowledged,
                    }
                ],
                "totals": {
                    "streams_open": 1,
                    "streams_opened": 2,
                    "streams_closed": 0,
                    "streams_failed": {"refused": 1},
                    "streams_expired": 0,
                    "bytes_out": 10,
                    "bytes_in": 0,
                    "messages_out": 4,  # HELLO, OPEN, the ACK of OPEN_OK, DATA
                    "messages_in": 0,
                },
                "denials": {"blacklist b": 2},
                "dropped": {"malformed": 1, "seal-auth": 3},
                "counters": {
                    "channel-connects": 1,
                    "denied:blacklist b": 2,
                    "malformed": 1,
                    "messages-out": 4,
                    "open-failed:refused": 1,
                    "pongs": 4,
                    "seal-auth": 3,
                    "streams-opened": 1,
                },
            }
        ],
    }


def test_metrics_of_a_node():
    clock = Clock()
    clock.advance(100)
    node = busy_node(clock)
    registry = CollectorRegistry()
    registry.register(SocketeerCollector(lambda: take_snapshot(Root(node), None, clock, 90.0)))
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    who = (("cluster", "c"), ("node", "so"))

    def metric(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted((*who, *labels.items()))))]

    assert metric("socketeer_streams_opened_total") == 2
    assert metric("socketeer_streams_failed_total", reason="refused") == 1
    assert metric("socketeer_streams", phase="open") == 1
    assert metric("socketeer_streams", phase="opening") == 0
    assert metric("socketeer_relayed_bytes_total", direction="out") == 10
    assert metric("socketeer_messages_dropped_total", reason="malformed") == 1
    assert metric("socketeer_messages_dropped_total", reason="seal-auth") == 3
    assert metric("socketeer_denied_total", rule="blacklist b") == 2
    assert metric("socketeer_channel_connected") == 1
    assert metric("socketeer_peer_last_seen_timestamp_seconds", peer="si") == 100
    assert metric("socketeer_events_total", event="pongs") == 4
    events = {dict(k[1])["event"] for k in values if k[0] == "socketeer_events_total"}
    assert events == {"pongs"}
    assert not any(name == "socketeer_peer_rtt_seconds" for name, _ in values)  # no pong yet
    assert not any(name == "socketeer_broker_connections" for name, _ in values)


class BrokerRoot(Root):
    """A service tree with one node and the embedded broker's listener service."""

    def __init__(self, node: Node, factory: BrokerFactory) -> None:
        super().__init__(node)
        self.broker = SimpleNamespace(factory=factory)

    def getServiceNamed(self, name: str):
        if name == "broker":
            return self.broker
        raise KeyError(name)


def stomp_client(factory: BrokerFactory, *frames: bytes) -> BrokerProtocol:
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    proto.makeConnection(StringTransport())
    proto.dataReceived(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0" + b"".join(frames))
    return proto


def test_metrics_of_the_broker_queues_and_slow_subscribers():
    clock = Clock()
    factory = BrokerFactory(Router(), clock, subscriber_queue=1000, slow_subscriber_timeout=30)
    sub = stomp_client(factory, b"SUBSCRIBE\nid:0\ndestination:/topic/zz\n\n\0")
    sub.pauseProducing()  # its transport is full
    send = b"SEND\ndestination:/topic/zz\n\n" + b"x" * 600 + b"\0"
    pub = stomp_client(factory, send, send)
    node = busy_node(clock)

    def metrics() -> dict[str, float]:
        snap = take_snapshot(BrokerRoot(node, factory), None, clock, 0.0)
        registry = CollectorRegistry()
        registry.register(SocketeerCollector(lambda: snap))
        text = generate_latest(registry).decode()
        values = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("socketeer_broker")
        }
        values["status"] = report(snap)["broker"]
        return values

    before = metrics()
    assert before["socketeer_broker_connections"] == 2
    assert before["socketeer_broker_queued_bytes"] == sub.queued_bytes > 1000
    assert before["socketeer_broker_paused_publishers"] == 1 and pub.paused
    assert before["socketeer_broker_slow_disconnects_total"] == 0
    assert before["status"]["queued_bytes"] == sub.queued_bytes
    clock.advance(31)
    after = metrics()
    assert after["socketeer_broker_queued_bytes"] == 0
    assert after["socketeer_broker_paused_publishers"] == 0
    assert after["socketeer_broker_slow_disconnects_total"] == 1
    assert after["status"]["slow_disconnects"] == 1
