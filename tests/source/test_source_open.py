"""The source's policy-checked open, shared by the fixed forward and the proxy handlers."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock

from socketeer.config.load import parse_config
from socketeer.policy import PolicyRef
from socketeer.source.open import describe_peer, open_checked
from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stream import Phase
from socketeer.wire.envelope import MsgType

from support.relay import Link
from support.sessions import hello_ok, session_messages


def source(props: str = "") -> tuple[Node, Link, PolicyRef]:
    text = (
        "socketeer.sourcesink.so.clustername=c\n"
        "socketeer.sourcesink.so.nodename=so\n"
        "socketeer.sourcesink.so.channel=stomp://127.0.0.1:61626/t\n"
        "socketeer.sourcesink.so.serverport=tcp:1080:interface=127.0.0.1\n"
        "socketeer.sourcesink.so.peernode=si\n" + props
    )
    config = parse_config(text, "source.properties")
    node = Node("c", "so", "t", Clock(), incarnation="me")
    link = Link()
    node.channel_ready(link)
    hello_ok(node)
    return node, link, PolicyRef(config.sourcesinks[0].policy)


BLACKLIST = "socketeer.sourcesink.so.blacklist=b\nsocketeer.blacklist.b.host=10.0.0.1\n"


def test_an_allowed_target_is_opened_at_the_sink():
    node, link, policy = source(BLACKLIST)
    stream = open_checked(node, "si", "10.0.0.2", 80, client="c:1", timeout=5, policy=policy)
    assert stream.phase is Phase.OPENING
    (request,) = session_messages(link)
    assert request.type is MsgType.OPEN and request.params()["host"] == "10.0.0.2"


def test_a_denied_target_fails_at_once_counted_and_unsent():
    node, link, policy = source(BLACKLIST)
    told: list[OpenFailure] = []
    stream = open_checked(
        node,
        "si",
        "10.0.0.1",
        80,
        client="c:1",
        timeout=5,
        policy=policy,
        on_denied=lambda s, reason, message: told.append(reason),
    )
    assert stream.phase is Phase.CLOSED
    assert stream.failure is OpenFailure.DENIED
    assert told == [OpenFailure.DENIED]
    assert session_messages(link) == []
    assert sum(node.stats.denied.values()) == 1


def test_without_a_policy_every_target_is_opened():
    node, link, _ = source()
    open_checked(node, "si", "10.0.0.1", 80, client="c:1", timeout=5)
    assert [e.type for e in session_messages(link)] == [MsgType.OPEN]


def test_describe_peer():
    assert describe_peer(IPv4Address("TCP", "192.0.2.1", 5000)) == "192.0.2.1:5000"
    assert describe_peer(UNIXAddress(None)) == "unix:?"  # an unnamed unix socket
