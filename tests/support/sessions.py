"""Test helpers for a node's peer sessions (wire version 2): the peer's HELLO or HELLO_OK, and
the messages a peer sends within a session, with a fake link and a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from socketeer.tunnel.node import Node
from socketeer.wire.envelope import Envelope, MsgType, encode_params

from support.relay import Link

#: Node-level messages: the handshake and liveness, not part of any stream or request.
NODE_LEVEL = (MsgType.HELLO, MsgType.HELLO_OK, MsgType.SESSION_RESET, MsgType.PING, MsgType.PONG)


def handshake(node: Node, peer: str = "si", inc: str = "p1", window: int = 4 << 20) -> None:
    """``peer`` (incarnation ``inc``) greets ``node`` with a HELLO: the session is up (and,
    having been heard since the channel came up, confirmed)."""
    node.envelope_received(
        Envelope(MsgType.HELLO, "c", peer, "*", "", 0, 0, inc, encode_params({"w": window}))
    )


def hello_ok(node: Node, peer: str = "si", inc: str = "p1", window: int = 4 << 20) -> None:
    """``peer`` answers ``node``'s HELLO."""
    node.envelope_received(
        Envelope(
            MsgType.HELLO_OK,
            "c",
            peer,
            node.name,
            "",
            0,
            0,
            inc,
            encode_params({"w": window}),
            node.incarnation,
        )
    )


def from_peer(
    node: Node,
    kind: MsgType,
    resource: str,
    seq: int = 0,
    body: bytes = b"",
    *,
    peer: str = "si",
    inc: str = "p1",
    pinc: str | None = None,
) -> Envelope:
    """A message of ``peer`` (incarnation ``inc``) to ``node``, in the session with ``node``'s
    incarnation unless ``pinc`` says otherwise."""
    return Envelope(
        kind,
        "c",
        peer,
        node.name,
        resource,
        seq,
        0,
        inc,
        body,
        node.incarnation if pinc is None else pinc,
    )


def session_messages(link: Link) -> list[Envelope]:
    """What the node sent but node-level messages (handshakes, pings)."""
    return [e for e in link.sent if e.type not in NODE_LEVEL]


def source_node(**kw) -> tuple[Node, Clock, Link]:
    """Source node ``so`` (incarnation ``me``) on its channel, with a confirmed session with
    sink node ``si`` (``p1``)."""
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", **kw)
    link = Link()
    node.channel_ready(link)
    hello_ok(node)
    return node, clock, link
