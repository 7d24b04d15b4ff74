"""Sink refusals with a fake channel link and a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from socketeer.sink.connect import Sink
from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.wire.envelope import Envelope, MsgType, encode_params

from support.relay import Link
from support.sessions import handshake, session_messages


def test_an_endpoint_that_cannot_be_built_is_one_open_failure():
    clock = Clock()
    node = Node("c", "si", "t", clock, incarnation="sink")
    link = Link()
    node.channel_ready(link)
    handshake(node, peer="so", inc="src")

    def endpoint_for(host: str, port: int):
        raise ValueError(f"cannot reach {host}")

    Sink(node, endpoint_for, clock)
    body = encode_params({"host": "bad.example", "port": 80, "type": 0})
    node.envelope_received(
        Envelope(MsgType.OPEN, "c", "so", "si", "src-1", 0, 0, "src", body, "sink")
    )
    (reply,) = session_messages(link)
    assert reply.type is MsgType.OPEN_FAIL and reply.peer_incarnation == "src"
    assert reply.params()["reason"] == "name-not-found"
    assert node.stats.open_failed[OpenFailure.NAME_NOT_FOUND] == 1
    assert node.stats.streams_closed == 0
    assert not node.streams
