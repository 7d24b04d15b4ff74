"""The Socketeer message envelope: tunnel messages <-> STOMP frames.

This is the only module that knows Socketeer's header names and broker destinations, so
that the channel, the streams and the sealing layer (``seal.py``) all speak one vocabulary. A
message carries a timestamp, the originating and the destination sourcesink, a sequence id
and the payload; each is a STOMP header except the payload, which is the frame's binary body
(never base64 or URL-encoded: relayed bytes must not grow). Control messages carry their
parameters in the body as URL-encoded ``key=value`` pairs (a "partially URL encoded"
datagram), so that the routing headers are the only thing a broker needs to read.

Sans-IO: no twisted imports, no clocks (timestamps are passed in).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode

from stompest.protocol import StompFrame

__all__ = [
    "BROADCAST",
    "Envelope",
    "EnvelopeError",
    "MsgType",
    "Route",
    "VersionError",
    "WIRE_VERSION",
    "check_version",
    "check_name",
    "cluster_destination",
    "decode_params",
    "encode_params",
    "encode_send",
    "encode_send_parts",
    "from_frame",
    "is_name",
    "is_resource",
    "message_type",
    "node_destination",
    "read_route",
]

#: Destination node name that addresses every node of a cluster.
BROADCAST = "*"

#: Characters allowed in topic, cluster, node and resource names. They appear unescaped in
#: STOMP headers and broker destinations (RabbitMQ routing keys use "." as separator), so
#: nothing that STOMP escapes (":" "\\" CR LF) and no "." may appear.
_NAME = re.compile(r"[A-Za-z0-9_\-%]+\Z")
_RESOURCE = re.compile(r"[A-Za-z0-9_\-%]*\Z")


class MsgType(StrEnum):
    """The message types: a stream's control, data and flow credit, name lookups, liveness."""

    OPEN = "open"  # source -> sink: open a TCP connection (body: host, port, type)
    OPEN_OK = "open-ok"  # sink -> source: connected (body: bound address)
    OPEN_FAIL = "open-fail"  # sink -> source: could not connect (body: reason, message)
    DATA = "data"  # either way: payload bytes
    EOF = "eof"  # either way: the sender will send no more data (TCP half-close)
    CLOSE = "close"  # either way: the stream is gone
    ACK = "ack"  # either way: flow-control credit (body: cumulative bytes consumed)
    RESET = "reset"  # either way: "no such stream here" (unsequenced, so it always lands)
    RESOLVE = "resolve"  # source -> sink: resolve a name (body: name, ptr)
    RESOLVED = "resolved"  # sink -> source: the answer (body: address, or reason + message)
    PING = "ping"  # node liveness probe
    PONG = "pong"  # answer to ping
    HELLO = "hello"  # node -> node(s): start a session (body: w = window, [noise])
    HELLO_OK = "hello-ok"  # answer to hello: the session is up (body: w = window, [noise])
    SESSION_RESET = "session-reset"  # "I have no session with that incarnation of you"
    HANDSHAKE = "handshake"  # with keys: the first Noise handshake message (body: binary)
    HANDSHAKE_OK = "handshake-ok"  # with keys: the answer, the second message


_TYPES = {t.value: t for t in MsgType}


#: Message types that are ordered by sequence number within a stream. ACK is cumulative
#: and idempotent, so it needs no ordering and may overtake data; RESET ends the stream
#: whatever came before it.
SEQUENCED = frozenset(
    {MsgType.OPEN, MsgType.OPEN_OK, MsgType.OPEN_FAIL, MsgType.DATA, MsgType.EOF, MsgType.CLOSE}
)

H_TYPE = "sk-type"
H_CLUSTER = "sk-cluster"
H_SOURCE = "sk-src"
H_DEST = "sk-dst"
H_RESOURCE = "sk-res"
H_SEQ = "sk-seq"
H_TS = "sk-ts"
H_INC = "sk-inc"
H_PINC = "sk-pinc"
H_VERSION = "sk-v"
#: The wire version this code speaks (``sk-v``). Version 2 added peer sessions: a frame
#: names the receiver's incarnation it was meant for (``sk-pinc``). Frames of another
#: version are refused, so that a mixed cluster fails loudly instead of half-working.
WIRE_VERSION = "2"


class EnvelopeError(ValueError):
    """A frame on a Socketeer destination is not a well-formed Socketeer message."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One tunnel message, addressed by cluster / node / resource."""

    type: MsgType
    cluster: str
    source: str
    destination: str
    resource: str = ""
    seq: int = 0
    timestamp: int = 0  # milliseconds since the epoch, sender's clock
    incarnation: str = ""  # the sending node's incarnation id (changes on restart)
    body: bytes = b""
    #: The receiver's incarnation as the sender knows it: the session the message belongs
    #: to. Empty on messages to any incarnation (hello, ping, pong).
    peer_incarnation: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """The stream this message belongs to, as the receiver files it."""
        return (self.source, self.resource)

    def params(self) -> dict[str, str]:
        """The URL-encoded parameters of a control message."""
        return decode_params(self.body)


class Route(NamedTuple):
    """The addressing every Socketeer frame carries in clear, sealed or not."""

    cluster: str
    source: str
    destination: str  # a node name, or BROADCAST


def is_name(value: str) -> bool:
    """True if ``value`` may be a topic, cluster or node name."""
    return _NAME.match(value) is not None


def is_resource(value: str) -> bool:
    """True if ``value`` may be a resource (stream) id or an incarnation id; empty is allowed."""
    return _RESOURCE.match(value) is not None


#: Incarnation ids seen valid lately: every frame carries two, and a node talks to few.
_VALID_IDS: set[str] = set()
_MAX_VALID_IDS = 1024


def _known_id(value: str) -> bool:
    """``is_resource`` for incarnation ids, remembered (this runs twice per message)."""
    if value in _VALID_IDS:
        return True
    if _RESOURCE.match(value) is None:
        return False
    if len(_VALID_IDS) >= _MAX_VALID_IDS:
        _VALID_IDS.clear()
    _VALID_IDS.add(value)
    return True


def message_type(value: str) -> MsgType:
    """The message type called ``value`` on the wire; EnvelopeError if there is none."""
    try:
        return _TYPES[value]
    except KeyError:
        raise EnvelopeError(f"unknown message type {value!r}") from None


def read_route(headers: Mapping[str, str]) -> Route:
    """The cluster, source and destination headers of a frame, present and well-formed.

    Both the plain envelope and the sealed one (:mod:`socketeer.wire.seal`) route by these
    headers, so both read them here, by one set of rules.
    """
    try:
        route = Route(headers[H_CLUSTER], headers[H_SOURCE], headers[H_DEST])
    except KeyError as e:
        raise EnvelopeError(f"missing header {e.args[0]}") from None
    if not (is_name(route.cluster) and is_name(route.source)):
        raise EnvelopeError("invalid cluster or source node name")
    if route.destination != BROADCAST and not is_name(route.destination):
        raise EnvelopeError("invalid destination node name")
    return route


def check_name(value: str, what: str) -> str:
    """Validate a topic, cluster or node name for use in destinations and headers."""
    if not is_name(value):
        raise EnvelopeError(f"invalid {what} {value!r}: use letters, digits, '_', '-' or %xx")
    return value


def node_destination(topic: str, cluster: str, node: str) -> str:
    """The destination a node subscribes to for messages addressed to it alone.

    ``/topic/<topic>.<cluster>.<node>`` is a routing key on RabbitMQ's amq.topic exchange and
    a plain name on the embedded broker, so each node receives only its own traffic.
    """
    return f"/topic/{topic}.{cluster}.{node}"


def cluster_destination(topic: str, cluster: str) -> str:
    """The destination every node of a cluster subscribes to for broadcasts."""
    return f"/topic/{topic}.{cluster}"


def destination_for(topic: str, env: Envelope) -> str:
    if env.destination == BROADCAST:
        return cluster_destination(topic, env.cluster)
    return node_destination(topic, env.cluster, env.destination)


def encode_params(params: Mapping[str, object]) -> bytes:
    return urlencode({k: str(v) for k, v in params.items()}).encode("ascii")


def decode_params(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("ascii")
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
    except (UnicodeDecodeError, ValueError) as e:
        raise EnvelopeError(f"malformed control parameters: {e}") from None


def encode_send(topic: str, env: Envelope) -> bytes:
    """Serialise ``env`` as a STOMP SEND frame."""
    return b"".join(encode_send_parts(topic, env))


def encode_send_parts(topic: str, env: Envelope) -> tuple[bytes, bytes, bytes]:
    """``encode_send`` as three pieces (head, body, NUL), for a scatter write of a large body.

    Written directly rather than through ``StompFrame.__bytes__`` because this runs once per
    relayed chunk: every header value is validated to need no STOMP escaping.
    """
    head = (
        f"SEND\ndestination:{destination_for(topic, env)}\n"
        f"{H_TYPE}:{env.type.value}\n{H_CLUSTER}:{env.cluster}\n{H_SOURCE}:{env.source}\n"
        f"{H_DEST}:{env.destination}\n{H_RESOURCE}:{env.resource}\n{H_SEQ}:{env.seq}\n"
        f"{H_TS}:{env.timestamp}\n{H_INC}:{env.incarnation}\n{H_PINC}:{env.peer_incarnation}\n"
        f"{H_VERSION}:{WIRE_VERSION}\n"
        f"content-length:{len(env.body)}\n\n"
    )
    return (head.encode("ascii"), env.body, b"\x00")


def _int_header(headers: Mapping[str, str], name: str) -> int:
    try:
        value = int(headers[name])
    except KeyError:
        raise EnvelopeError(f"missing header {name}") from None
    except ValueError:
        raise EnvelopeError(f"header {name} is not an integer: {headers[name]!r}") from None
    if value < 0:
        raise EnvelopeError(f"header {name} is negative")
    return value


def from_frame(frame: StompFrame) -> Envelope:
    """Read a MESSAGE (or SEND) frame as an envelope; anything else raises EnvelopeError."""
    headers = frame.headers
    check_version(headers)
    try:
        type_name = headers[H_TYPE]
    except KeyError:
        raise EnvelopeError(f"missing header {H_TYPE}") from None
    kind = message_type(type_name)
    route = read_route(headers)
    resource = headers.get(H_RESOURCE, "")
    if not is_resource(resource):
        raise EnvelopeError("invalid resource id")
    incarnation = headers.get(H_INC, "")
    peer_incarnation = headers.get(H_PINC, "")
    if not (_known_id(incarnation) and _known_id(peer_incarnation)):
        raise EnvelopeError("invalid incarnation id")
    return Envelope(
        type=kind,
        cluster=route.cluster,
        source=route.source,
        destination=route.destination,
        resource=resource,
        seq=_int_header(headers, H_SEQ),
        timestamp=_int_header(headers, H_TS),
        incarnation=incarnation,
        body=frame.body,
        peer_incarnation=peer_incarnation,
    )


class VersionError(EnvelopeError):
    """A frame of another wire version: a node running an older or newer Socketeer."""


def check_version(headers: Mapping[str, str]) -> None:
    """Refuse a frame that is not of this wire version (``sk-v``), saying which it is."""
    version = headers.get(H_VERSION)
    if version != WIRE_VERSION:
        seen = "1 (no sk-v header)" if version is None else repr(version)[:20]
        raise VersionError(
            f"wire version {seen} from node {str(headers.get(H_SOURCE, '?'))[:64]!r}; this node "
            f"speaks version {WIRE_VERSION}: run the same Socketeer release on every node"
        )
