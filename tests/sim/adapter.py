"""The one place the simulation touches the socketeer API (issue 13's core may change it).

Everything else under ``tests/sim`` talks to the real objects only through these functions:
build a node (``Node``), make it a sink (``sink.connect.Sink``), open a stream the way the
fixed forward does (``source.forward.FixedForwardFactory``) or the way ``socketeer connect``
does (``Node.open_stream`` + ``Stream.attach_protocol``), move the channel up and down
(``Node.channel_ready`` / ``channel_lost``), deliver a MESSAGE (``Node.frame_received``), and
read what the invariants need (live streams and their buffers, the node's maps). When the
protocol changes, adapt it here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IReactorTime

from socketeer.sink.connect import Sink
from socketeer.source.forward import FixedForwardFactory
from socketeer.tunnel.node import ChannelLink, Node
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.sessions import SessionKeys
from socketeer.tunnel.stream import Stream
from socketeer.wire.envelope import (
    BROADCAST,
    Envelope,
    MsgType,
    cluster_destination,
    encode_params,
    encode_send,
    node_destination,
)
from socketeer.wire.noise import Identity, codekey_psk
from socketeer.wire.seal import Sealer

__all__ = [
    "BROADCAST",
    "NodeParams",
    "StreamView",
    "channel_down",
    "channel_up",
    "deliver",
    "destinations",
    "forged_frame",
    "forward_factory",
    "live_streams",
    "map_sizes",
    "new_node",
    "open_direct",
    "public_key",
    "refusals",
    "relay_stream_key",
    "rogue_data",
    "serve_sink",
]

#: Frame types a stranger forges (node-level PING, a stream RESET, a stream OPEN).
FORGEABLE = ("ping", "reset", "open")


@dataclass(frozen=True)
class NodeParams:
    """Per-node settings, scaled down so that simulated minutes pass in milliseconds."""

    window: int = 16 * 1024
    #: How far auto-tuning may grow a stream's window (the node's ``maxwindow``).
    growth: int = 4
    grace: float = 10.0
    ping_interval: float = 2.0
    open_timeout: float = 10.0
    channel_wait: float = 10.0
    connect_timeout: float = 3.0
    codekey: str | None = None
    seal_max_age: float = 300.0
    #: A node identity (32 private key bytes) and its allowlist (node name -> public key),
    #: as ``identity`` and ``peerkeys`` configure them.
    identity: bytes | None = None
    peer_keys: Mapping[str, bytes] | None = None


def public_key(private: bytes) -> bytes:
    """The public key of an identity's 32 private bytes (what a peer's allowlist lists)."""
    return Identity.from_bytes(private).public_key


def new_node(
    cluster: str,
    name: str,
    topic: str,
    clock: IReactorTime,
    incarnation: str,
    params: NodeParams,
    epoch: str,
) -> Node:
    """A fresh node (a process start): new incarnation, empty memory, liveness running.

    ``epoch`` replaces the sealer's random epoch so that runs are reproducible.
    """
    sealer = None
    if params.codekey is not None:
        sealer = Sealer(params.codekey, cluster, topic, max_age=params.seal_max_age)
        sealer.epoch = epoch  # os.urandom otherwise; nothing is sealed yet
    node = Node(
        cluster,
        name,
        topic,
        clock,
        window=params.window,
        max_window=params.window * params.growth,
        incarnation=incarnation,
        grace=params.grace,
        ping_interval=params.ping_interval,
        sealer=sealer,
        channel_wait=params.channel_wait,
    )
    if params.codekey is not None or params.identity is not None:
        # As app.session_keys: sessions by a Noise handshake (NNpsk0 with a codekey only,
        # IKpsk2 with identities).
        node.keys = SessionKeys(
            topic,
            cluster,
            name,
            incarnation,
            psk=None if params.codekey is None else codekey_psk(params.codekey, topic, cluster),
            identity=None if params.identity is None else Identity.from_bytes(params.identity),
            peer_keys=None if params.peer_keys is None else dict(params.peer_keys),
        )
    node.start()
    return node


class _Endpoint:
    """What ``Sink`` connects through: the world decides when and whether it connects."""

    def __init__(self, connect: Callable[[str, int, Any], Deferred], host: str, port: int) -> None:
        self._connect, self.host, self.port = connect, host, port

    def connect(self, factory: Any) -> Deferred:
        return self._connect(self.host, self.port, factory)


def serve_sink(
    node: Node,
    connect: Callable[[str, int, Any], Deferred],
    clock: IReactorTime,
    params: NodeParams,
) -> Sink:
    """Make ``node`` a spawning sink (the real ``Sink``); ``connect(host, port, factory)``
    is the simulated outbound connect: it builds the factory's protocol on a simulated
    socket and fires with it, or fails."""
    return Sink(
        node,
        lambda host, port: _Endpoint(connect, host, port),
        clock,
        connect_timeout=params.connect_timeout,
    )


def forward_factory(node: Node, peer: str, host: str, port: int, params: NodeParams) -> Any:
    """The fixed forward's factory: ``buildProtocol(addr)`` is a ``SocketRelay`` that opens
    a stream on connect and relays the client socket to it."""
    return FixedForwardFactory(node, peer, host, port, open_timeout=params.open_timeout)


def relay_stream_key(relay: SocketRelay) -> tuple[str, str] | None:
    """The (peer node, stream id) a connected relay carries, None if it has no stream."""
    stream = relay.stream
    return None if stream is None else (stream.peer, stream.resource)


def open_direct(
    node: Node, peer: str, host: str, port: int, params: NodeParams, protocol: IProtocol
) -> str:
    """Open a stream and attach ``protocol`` to it at once (as ``socketeer connect`` and the
    HTTP proxy run a protocol on a stream); returns the stream id."""
    stream = node.open_stream(peer, host, port, timeout=params.open_timeout)
    stream.attach_protocol(protocol)
    return stream.resource


def channel_up(node: Node, link: ChannelLink) -> None:
    node.channel_ready(link)


def channel_down(node: Node) -> None:
    node.channel_lost()


def deliver(node: Node, frame: Any) -> None:
    node.frame_received(frame)


def destinations(topic: str, cluster: str, name: str) -> tuple[str, str]:
    """What a node subscribes to: its own destination and the cluster broadcast."""
    return node_destination(topic, cluster, name), cluster_destination(topic, cluster)


def incarnation_of(node: Node) -> str:
    return node.incarnation


@dataclass(frozen=True)
class StreamView:
    """What the invariants read of one live stream."""

    peer: str
    resource: str
    phase: str
    window: int
    outbox: int  # payload bytes kept for retransmission
    reorder: int  # payload bytes received early
    pending: int  # payload bytes waiting for a protocol to attach


def live_streams(node: Node) -> list[StreamView]:
    views = []
    for stream in node.streams.values():
        views.append(
            StreamView(
                stream.peer,
                stream.resource,
                stream.phase.value,
                stream.window,
                sum(len(body) for _, _, body in stream._outbox),
                sum(len(env.body) for env in stream._reorder.values()),
                sum(len(env.body) for env in stream._pending),
            )
        )
    return views


def map_sizes(node: Node) -> dict[str, int]:
    """The sizes of a node's bookkeeping maps (each must stay bounded)."""
    return {
        "peers": len(node.peers),
        "streams": len(node.streams),
        "ended_ids": len(node.streams._ended),
        "stale_told": len(node._told_stale),
        "initiated": len(node._initiated),
    }


def refusals(node: Node) -> dict[str, int]:
    """Handshakes and sealed frames a node refused, by reason (``/status`` ``seal-<reason>``)."""
    return dict(node.stats.seal_refused)


def rogue_data(node: Node, peer: str, resource: str, data: bytes) -> None:
    """Send ``data`` on a stream as DATA, ignoring the window (a misbehaving peer)."""
    stream: Stream = node.streams[(peer, resource)]
    stream.sent += len(data)
    stream._send_now(MsgType.DATA, data)  # past the stream's own window check


def forged_frame(
    kind: str,
    cluster: str,
    topic: str,
    source: str,
    destination: str,
    resource: str,
    incarnation: str,
    seq: int,
    timestamp_ms: int,
    peer_incarnation: str = "",
) -> bytes:
    """A SEND frame a stranger on the broker publishes: ``kind`` in FORGEABLE, a made-up
    incarnation, unsealed (a stranger has no codekey); ``peer_incarnation``: the receiver's
    real one, which a stranger reading the broker's traffic sees in clear."""
    msg = {"ping": MsgType.PING, "reset": MsgType.RESET, "open": MsgType.OPEN}[kind]
    body = b""
    if msg is MsgType.PING:
        resource = ""
        body = encode_params({"t": timestamp_ms / 1000})
    elif msg is MsgType.OPEN:
        body = encode_params({"host": "forged", "port": 80, "type": 0})
    env = Envelope(
        msg,
        cluster,
        source,
        destination,
        resource,
        seq,
        timestamp_ms,
        incarnation,
        body,
        "" if msg is MsgType.PING else peer_incarnation,
    )
    return encode_send(topic, env)


def frame_route(frame: Any) -> tuple[str, str, str]:
    """(source node, destination node, stream id or "") of a published frame, as a broker
    would log it; the stream id is "" when sealed."""
    headers = frame.headers
    return headers.get("sk-src", ""), headers.get("sk-dst", ""), headers.get("sk-res", "")
