"""Sealed messages: the channel's ``codekey`` as authenticated encryption of every message.

With a codekey, a node sends each tunnel message as a STOMP frame that shows the broker only
what it needs to route and what the receiver needs to find the key::

    SEND
    destination:/topic/<topic>.<cluster>.<dst>
    sk-cluster:<cluster>
    sk-src:<src>
    sk-dst:<dst>
    sk-inc:<src incarnation>
    sk-seal:1.<epoch: 32 hex digits>.<counter: decimal>
    content-length:<n>

    AES-256-GCM( type, resource, seq, timestamp, body )

The message type, stream (resource) id, sequence number, timestamp and the body (the target
host and port of an ``open``, resolve queries and answers, payload bytes) are inside the
ciphertext; a broker operator learns which nodes talk, when, and how much.

Keys. ``master = scrypt(codekey, salt = "socketeer-seal-1" | topic | cluster)`` (N=2**15, r=8,
p=1): a codekey that is a passphrase still costs an attacker a memory-hard guess, and one
cluster's key says nothing about another's. Each sender seals with its own key
``HKDF-SHA256(master, info = "sender" | src | incarnation | epoch)``, where ``epoch`` is 16
random bytes drawn when the Sealer is made (once per process run, and again after 2**48
messages). The 96-bit GCM nonce is the sender's message counter, which only goes up, so a
nonce is never used twice with one key, whatever incarnation id the node was given.

Associated data: the version, topic, cluster, src, dst, incarnation, epoch and counter. A
broker that rewrites any clear header (to redirect a message to another node or cluster,
or to pass it off as another sender's) makes the message fail authentication.

Replay and staleness. Per sender key (src, incarnation, epoch) the receiver keeps a sliding
window over the counter (``REPLAY_WINDOW`` messages; older ones are refused), updated only
after a message authenticated, so forged messages cannot move it. ACKs carry no stream
sequence number, so the counter, not the stream seq, is what stops replays. A message whose
sealed timestamp is more than ``max_age`` seconds from the receiver's clock (either way) is
refused as stale; that also bounds what could be replayed once a sender's window has been
forgotten. Retransmissions after a reconnect are sealed afresh, with new counters.

No sockets and no clock (the node passes the time in); refused messages are counted in the
node's stats and logged at most once per kind every ``LOG_INTERVAL`` seconds.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from socketeer.secret import Secret
from socketeer.wire.envelope import (
    H_CLUSTER,
    H_DEST,
    H_INC,
    H_PINC,
    H_SOURCE,
    H_TYPE,
    H_VERSION,
    WIRE_VERSION,
    Envelope,
    EnvelopeError,
    MsgType,
    check_name,
    check_version,
    destination_for,
    is_resource,
    message_type,
    read_route,
)

__all__ = [
    "H_SEAL",
    "REPLAY_WINDOW",
    "SealRejected",
    "Sealer",
    "derive_master_key",
    "pack_plain",
    "unpack_plain",
    "sealer_for",
]

H_SEAL = "sk-seal"
VERSION = "2"
#: How many message counters behind the newest one a receiver still accepts (reordering).
REPLAY_WINDOW = 4096
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
#: Senders (src, incarnation, epoch) whose replay window a receiver remembers.
MAX_SENDERS = 4096
#: A sender starts a new epoch (a new key) after this many messages.
MAX_COUNTER = 2**48
#: Seconds a sealed timestamp may be from the receiver's clock, either way (0: no check).
DEFAULT_MAX_AGE = 300.0
#: At most one log line per kind of refused message in this many seconds.
LOG_INTERVAL = 10.0
#: scrypt cost: about 32 MiB and a few tens of milliseconds, once per (codekey, cluster).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1

_TAG = b"socketeer-seal-" + VERSION.encode()
_PLAIN_HEAD = struct.Struct("!QQBH")  # seq, timestamp ms, len(type), len(resource)
# The sk-seal header: "<version>.<epoch>.<counter>"; the other clear headers are envelope's.
_EPOCH_RE = re.compile(r"[0-9a-f]{32}\Z")
_COUNTER_RE = re.compile(r"[1-9][0-9]{0,19}\Z")


def pack_plain(env: Envelope) -> bytes:
    """What a sealed message encrypts: sequence, timestamp, type, resource, body."""
    kind = env.type.value.encode("ascii")
    resource = env.resource.encode("ascii")
    head = _PLAIN_HEAD.pack(env.seq, env.timestamp, len(kind), len(resource))
    return b"".join((head, kind, resource, env.body))


def unpack_plain(plain: bytes, what: str) -> tuple[int, int, MsgType, str, bytes]:
    """``pack_plain`` undone: (seq, timestamp, type, resource, body); EnvelopeError if
    ``plain`` is not one (``what`` names the kind of message in the error)."""
    if len(plain) < _PLAIN_HEAD.size:
        raise EnvelopeError(f"{what} too short")
    seq, timestamp, type_len, res_len = _PLAIN_HEAD.unpack_from(plain)
    start = _PLAIN_HEAD.size
    end = start + type_len + res_len
    if end > len(plain):
        raise EnvelopeError(f"{what} truncated")
    try:
        type_name = plain[start : start + type_len].decode("ascii")
        resource = plain[start + type_len : end].decode("ascii")
    except UnicodeDecodeError:
        raise EnvelopeError(f"unknown message type or bad resource id in {what}") from None
    kind = message_type(type_name)
    if not is_resource(resource):
        raise EnvelopeError("invalid resource id")
    return seq, timestamp, kind, resource, plain[end:]


class SealRejected(EnvelopeError):
    """A message a sealing node refuses: ``reason`` is unsealed, auth, replay or stale."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@lru_cache(maxsize=16)
def _master(codekey: str, topic: str, cluster: str) -> bytes:
    salt = b"\0".join((_TAG, topic.encode(), cluster.encode()))
    kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(codekey.encode("utf-8"))


def derive_master_key(codekey: Secret | str, topic: str, cluster: str) -> bytes:
    """The cluster's master key (32 bytes) for ``codekey`` on ``topic``."""
    value = codekey.value if isinstance(codekey, Secret) else codekey
    if not value:
        raise ValueError("the codekey is empty")
    return _master(value, topic, cluster)


def _sender_key(master: bytes, source: str, incarnation: str, epoch: str) -> AESGCM:
    info = b"\0".join((_TAG, b"sender", source.encode(), incarnation.encode(), epoch.encode()))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)
    return AESGCM(key)


def _aad(
    topic: str, cluster: str, src: str, dst: str, inc: str, pinc: str, epoch: str, n: int
) -> bytes:
    return "\0".join((topic, cluster, src, dst, inc, pinc, epoch, str(n))).encode("ascii") + _TAG


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


@dataclass
class _Window:
    """Which counters of one sender key arrived: the highest, and a bitmap behind it."""

    cipher: AESGCM
    highest: int = 0
    seen: int = 0  # bit i set: counter (highest - i) arrived

    def check(self, n: int) -> bool:
        """True if ``n`` is new (and not too old to tell)."""
        if n > self.highest:
            return True
        offset = self.highest - n
        return offset < REPLAY_WINDOW and not (self.seen >> offset) & 1

    def mark(self, n: int) -> None:
        if n > self.highest:
            shift = n - self.highest
            # A jump past the window forgets it at once: the cost never grows with the jump
            # (a counter near 2**48 would otherwise make a 2**48-bit integer).
            if shift >= REPLAY_WINDOW:
                self.seen = 1
            else:
                self.seen = ((self.seen << shift) | 1) & _WINDOW_MASK
            self.highest = n
        else:
            self.seen |= 1 << (self.highest - n)


class Sealer:
    """Seals a node's outgoing messages and opens (or refuses) incoming ones.

    One Sealer belongs to one node (cluster and topic); every node of a cluster that shares
    the codekey can open every other's messages. The codekey itself is not kept.
    """

    def __init__(
        self,
        codekey: Secret | str,
        cluster: str,
        topic: str,
        *,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.cluster = check_name(cluster, "cluster name")
        self.topic = check_name(topic, "topic")
        self.max_age = max_age
        self._master = derive_master_key(codekey, self.topic, self.cluster)
        self._send_keys: dict[tuple[str, str], AESGCM] = {}
        self._windows: OrderedDict[tuple[str, str, str], _Window] = OrderedDict()
        self._logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._new_epoch()

    def __repr__(self) -> str:
        return f"<Sealer {self.topic}/{self.cluster}>"

    def _new_epoch(self) -> None:
        self.epoch = os.urandom(16).hex()
        self._counter = 0
        self._send_keys.clear()

    # -- sending ---------------------------------------------------------------------------

    def seal(self, env: Envelope) -> bytes:
        """The SEND frame (bytes) carrying ``env`` sealed; ``env`` must be this cluster's."""
        return b"".join(self.seal_parts(env))

    def seal_parts(self, env: Envelope) -> tuple[bytes, bytes, bytes]:
        """The same frame as ``seal`` in three pieces (head, sealed body, NUL), so that a
        large payload is not copied once more to join them (see ``fastwrite``)."""
        if env.cluster != self.cluster:
            raise ValueError(f"this sealer is for cluster {self.cluster!r}, not {env.cluster!r}")
        if self._counter >= MAX_COUNTER:
            self._new_epoch()
        self._counter += 1
        n = self._counter
        cipher = self._send_keys.get((env.source, env.incarnation))
        if cipher is None:
            cipher = _sender_key(self._master, env.source, env.incarnation, self.epoch)
            self._send_keys[(env.source, env.incarnation)] = cipher
        plain = pack_plain(env)
        aad = _aad(
            self.topic,
            env.cluster,
            env.source,
            env.destination,
            env.incarnation,
            env.peer_incarnation,
            self.epoch,
            n,
        )
        sealed = cipher.encrypt(_nonce(n), plain, aad)
        head = (
            f"SEND\ndestination:{destination_for(self.topic, env)}\n"
            f"{H_CLUSTER}:{env.cluster}\n{H_SOURCE}:{env.source}\n{H_DEST}:{env.destination}\n"
            f"{H_INC}:{env.incarnation}\n{H_PINC}:{env.peer_incarnation}\n"
            f"{H_VERSION}:{WIRE_VERSION}\n{H_SEAL}:{VERSION}.{self.epoch}.{n}\n"
            f"content-length:{len(sealed)}\n\n"
        )
        return (head.encode("ascii"), sealed, b"\x00")

    # -- receiving -------------------------------------------------------------------------

    def open(self, frame, now: float) -> Envelope:
        """Authenticate and decrypt a MESSAGE frame received at time ``now`` (seconds).

        Raises SealRejected (foreign, unsealed, auth, replay, stale) or EnvelopeError
        (malformed).
        """
        headers: Mapping[str, str] = frame.headers
        seal = headers.get(H_SEAL)
        if seal is None:
            if H_TYPE in headers:
                raise SealRejected(
                    "unsealed",
                    f"message from node {headers.get(H_SOURCE, '?')!r} is not sealed "
                    "(does it have the codekey?)",
                )
            raise EnvelopeError(f"missing header {H_SEAL}")
        check_version(headers)
        cluster, src, dst = read_route(headers)
        inc = headers.get(H_INC, "")
        pinc = headers.get(H_PINC, "")
        if not (is_resource(inc) and is_resource(pinc)):
            raise EnvelopeError("invalid incarnation")
        if cluster != self.cluster:
            raise SealRejected("foreign", f"message for cluster {cluster!r}")
        version, _, rest = seal.partition(".")
        epoch, _, counter = rest.partition(".")
        if version != VERSION:
            raise EnvelopeError(f"unknown seal version {version!r}")
        if not (_EPOCH_RE.match(epoch) and _COUNTER_RE.match(counter)):
            raise EnvelopeError("malformed seal header")
        n = int(counter)
        key = (src, inc, epoch)
        window = self._windows.get(key)
        if window is None:
            cipher = _sender_key(self._master, src, inc, epoch)
        elif not window.check(n):
            raise SealRejected("replay", f"replayed message {n} from node {src!r}")
        else:
            cipher = window.cipher
        body = frame.body
        try:
            plain = cipher.decrypt(
                _nonce(n), body, _aad(self.topic, cluster, src, dst, inc, pinc, epoch, n)
            )
        except InvalidTag:
            raise SealRejected(
                "auth", f"message claiming to be from node {src!r} failed authentication"
            ) from None
        seq, timestamp, kind, resource, payload = unpack_plain(plain, "sealed message")
        if self.max_age > 0 and abs(now * 1000 - timestamp) > self.max_age * 1000:
            raise SealRejected(
                "stale",
                f"message from node {src!r} is {abs(now - timestamp / 1000):.0f}s off our clock "
                f"(allowed: {self.max_age:g}s)",
            )
        if window is None:
            window = _Window(cipher)
            self._windows[key] = window
            if len(self._windows) > MAX_SENDERS:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
        window.mark(n)
        return Envelope(kind, cluster, src, dst, resource, seq, timestamp, inc, payload, pinc)

    def rejected(self, error: Exception, now: float) -> Refusal | None:
        """Say what a message ``open`` refused counts as and whether to log it; None if
        merely malformed.

        The caller (the node) counts it: another cluster's message as ``foreign``, like an
        unsealed one would be; the rest by reason (unsealed, auth, replay, stale). At most one
        refusal per kind every ``LOG_INTERVAL`` seconds is ``loggable``, so a flood of forged
        messages cannot flood the log; the caller writes the line.
        """
        if not isinstance(error, SealRejected):
            return None
        reason = error.reason
        if reason == "foreign":
            return Refusal(reason, 0, str(error), loggable=False)
        last = self._logged.get(reason)
        if last is not None and now - last < LOG_INTERVAL:
            self._suppressed[reason] += 1
            return Refusal(reason, 0, str(error), loggable=False)
        self._logged[reason] = now
        more = self._suppressed.pop(reason, 0)
        return Refusal(reason, more, str(error), loggable=True)


@dataclass(frozen=True)
class Refusal:
    """A sealed message refused: why, and whether this one earns a log line (and how many
    of its kind went unlogged since the last one)."""

    reason: str
    not_logged: int
    problem: str
    loggable: bool

    @property
    def foreign(self) -> bool:
        """Another cluster's message: counted with the other foreign ones, not as a refusal."""
        return self.reason == "foreign"


def sealer_for(channel: Any, cluster: str, max_age: float = DEFAULT_MAX_AGE) -> Sealer | None:
    """The Sealer for a sourcesink whose channel has a codekey, else None."""
    if channel.codekey is None:
        return None
    return Sealer(channel.codekey, cluster, channel.topic, max_age=max_age)
