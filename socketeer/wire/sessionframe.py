"""Messages sealed in a peer session: the session's own keys, not the cluster's codekey.

Once two node incarnations have run a session handshake (:mod:`socketeer.wire.noise`), every
message between them that belongs to the session (stream messages, RESOLVE and its answer,
the initiator's HELLO_OK) is sealed with that session's transport keys, the way WireGuard
seals data after its Noise handshake::

    SEND
    destination:/topic/<topic>.<cluster>.<dst>
    sk-v:2
    sk-cluster:<cluster>
    sk-src:<src>
    sk-dst:<dst>
    sk-inc:<src incarnation>
    sk-pinc:<dst incarnation>
    sk-sess:<session id: 16 hex digits>.<counter>
    content-length:<n>

    AES-256-GCM(session key, counter; type, resource, seq, timestamp, body)

The clear headers are the associated data, so a broker that rewrites any of them (to pass a
message off as another node's, or to another session) makes it fail. Keys are fresh per
session (forward secrecy: recorded frames are useless once the session's processes are gone),
the counter is explicit so that frames may arrive reordered or twice (each is accepted once),
and with node identities only the holder of a node's static key can seal as that node.

Sans-IO: no Twisted, no clock.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from functools import lru_cache

from socketeer.wire.envelope import (
    H_CLUSTER,
    H_DEST,
    H_INC,
    H_PINC,
    H_SOURCE,
    H_VERSION,
    WIRE_VERSION,
    Envelope,
    EnvelopeError,
    check_version,
    destination_for,
    is_resource,
    read_route,
)
from socketeer.wire.noise import SessionTransport
from socketeer.wire.seal import pack_plain, unpack_plain

__all__ = ["H_SESSION", "SessionFrame", "open_session_frame", "read_session_header", "seal"]

H_SESSION = "sk-sess"
_TAG = b"socketeer-session-1"
_PLAIN_HEAD = struct.Struct("!QQBH")  # seq, timestamp ms, len(type), len(resource)
_HEADER_RE = re.compile(r"([0-9a-f]{16})\.(0|[1-9][0-9]{0,19})\Z")


def session_id(transport: SessionTransport) -> str:
    """The id both ends give a session: the start of its Noise handshake hash."""
    return transport.handshake_hash[:8].hex()


@lru_cache(maxsize=1024)
def _ad_prefix(
    topic: str, cluster: str, src: str, dst: str, inc: str, pinc: str, sid: str
) -> bytes:
    # The same for every frame of one session and direction: built once.
    return "\0".join((topic, cluster, src, dst, inc, pinc, sid, "")).encode("ascii")


def _ad(
    topic: str, cluster: str, src: str, dst: str, inc: str, pinc: str, sid: str, counter: int
) -> bytes:
    return b"".join((_ad_prefix(topic, cluster, src, dst, inc, pinc, sid), b"%d" % counter, _TAG))


def seal(
    topic: str, env: Envelope, transport: SessionTransport, sid: str | None = None
) -> tuple[bytes, bytes, bytes]:
    """The SEND frame carrying ``env`` sealed in ``transport``'s session, in three pieces
    (head, sealed body, NUL), as ``envelope.encode_send_parts``."""
    plain = pack_plain(env)
    sid = session_id(transport) if sid is None else sid
    counter = transport.sent
    # The counter is part of the associated data: seal() uses exactly this one.
    ad = _ad(
        topic,
        env.cluster,
        env.source,
        env.destination,
        env.incarnation,
        env.peer_incarnation,
        sid,
        counter,
    )
    sealed_counter, sealed = transport.seal(plain, ad)
    assert sealed_counter == counter
    head = (
        f"SEND\ndestination:{destination_for(topic, env)}\n{H_VERSION}:{WIRE_VERSION}\n"
        f"{H_CLUSTER}:{env.cluster}\n{H_SOURCE}:{env.source}\n{H_DEST}:{env.destination}\n"
        f"{H_INC}:{env.incarnation}\n{H_PINC}:{env.peer_incarnation}\n"
        f"{H_SESSION}:{sid}.{counter}\ncontent-length:{len(sealed)}\n\n"
    )
    return (head.encode("ascii"), sealed, b"\x00")


class SessionFrame:
    """The clear part of a session-sealed frame: who sent it, in which session."""

    __slots__ = (
        "cluster",
        "source",
        "destination",
        "incarnation",
        "peer_incarnation",
        "sid",
        "counter",
    )

    def __init__(
        self,
        cluster: str,
        source: str,
        destination: str,
        incarnation: str,
        peer_incarnation: str,
        sid: str,
        counter: int,
    ) -> None:
        self.cluster = cluster
        self.source = source
        self.destination = destination
        self.incarnation = incarnation
        self.peer_incarnation = peer_incarnation
        self.sid = sid
        self.counter = counter


def read_session_header(headers: Mapping[str, str]) -> SessionFrame | None:
    """The clear session fields of a frame; None if it is not session-sealed.

    Raises EnvelopeError for a session frame that is malformed.
    """
    value = headers.get(H_SESSION)
    if value is None:
        return None
    check_version(headers)
    cluster, src, dst = read_route(headers)
    inc = headers.get(H_INC, "")
    pinc = headers.get(H_PINC, "")
    if not (inc and pinc and is_resource(inc) and is_resource(pinc)):
        raise EnvelopeError("invalid incarnation in a session frame")
    match = _HEADER_RE.match(value)
    if match is None:
        raise EnvelopeError(f"malformed {H_SESSION} header")
    return SessionFrame(cluster, src, dst, inc, pinc, match.group(1), int(match.group(2)))


def open_session_frame(
    topic: str, clear: SessionFrame, body: bytes, transport: SessionTransport
) -> Envelope:
    """Authenticate and decrypt a session frame's body (raises the transport's NoiseError
    subclasses, or EnvelopeError for a plaintext that is not a message)."""
    ad = _ad(
        topic,
        clear.cluster,
        clear.source,
        clear.destination,
        clear.incarnation,
        clear.peer_incarnation,
        clear.sid,
        clear.counter,
    )
    plain = transport.open(clear.counter, body, ad)
    seq, timestamp, kind, resource, payload = unpack_plain(plain, "session message")
    return Envelope(
        kind,
        clear.cluster,
        clear.source,
        clear.destination,
        resource,
        seq,
        timestamp,
        clear.incarnation,
        payload,
        clear.peer_incarnation,
    )
