"""The peer table: which nodes a node talks to, when each was last heard, restarts, round trips.

Pure bookkeeping with the time passed in; the node acts on what it says (pings a quiet peer,
expires the streams of a silent one, resets the streams of a restarted one).

Liveness: a peer that has been quiet for ``ping_interval`` seconds is pinged; one silent for
more than ``grace`` seconds is gone, and the streams it carried end.

Sessions: the table also holds each peer's session, set by the HELLO handshake
(``docs/protocol.rst``): the peer incarnation the session is with, the window it announced,
and which of its stream counters have been opened here (so that an OPEN runs at most once).
Only a handshake changes a session; a message from another incarnation is not a restart.

Bounded: at most ``max_peers`` peers are kept; a new one pushes out the one heard from
longest ago that ``busy`` does not protect (the node protects peers with streams).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from socketeer.config.defaults import DEFAULT_GRACE_PERIOD, DEFAULT_PING_INTERVAL
from socketeer.tunnel.snapshot import PeerState

__all__ = ["MAX_PEERS", "MAX_RTT", "OPEN_WINDOW", "Liveness", "PeerTable", "SeenCounters"]

#: A round trip longer than this (or negative) is not our ping's timestamp coming back.
MAX_RTT = 3600.0
#: Peers a node keeps; beyond, the quietest peer without streams is forgotten.
MAX_PEERS = 4096
#: Stream counters of a session a sink tells apart: an OPEN older than the newest by this
#: many is refused (RESET), never run, since the sink can no longer tell if it ran.
OPEN_WINDOW = 16384
#: Peer incarnations whose opened stream counters are remembered (2 KiB each); beyond, the
#: least recently used is forgotten, and its incarnation refused OPENs from then on.
MAX_OPEN_WINDOWS = 1024
#: Forgotten ones remembered by name only (an OPEN from one is refused, never run).
MAX_FORGOTTEN_WINDOWS = 65536
#: Replaced incarnations remembered per peer.
MAX_RETIRED = 8


@dataclass
class SeenCounters:
    """Which counters arrived: the highest, and a bitmap of the ``size`` behind it."""

    size: int = OPEN_WINDOW
    highest: int = 0
    seen: int = 0  # bit i set: counter (highest - i) arrived

    def seen_or_old(self, n: int) -> bool:
        """Whether ``n`` arrived already, or is too old to tell (without marking it)."""
        if n > self.highest:
            return False
        offset = self.highest - n
        return offset >= self.size or bool((self.seen >> offset) & 1)

    def first(self, n: int) -> bool:
        """Mark ``n``; True if it is new (never seen, and not too old to tell)."""
        if n > self.highest:
            shift = n - self.highest
            self.seen = (
                ((self.seen << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            )
            self.highest = n
            return True
        offset = self.highest - n
        if offset >= self.size or (self.seen >> offset) & 1:
            return False
        self.seen |= 1 << offset
        return True


class Liveness(Enum):
    """What to do about a peer that carries streams."""

    ALIVE = "alive"
    PING = "ping"  # quiet for a ping interval: ask it for a pong
    GONE = "gone"  # silent for longer than the grace period: end its streams


@dataclass
class _Peer:
    heard: float
    incarnation: str
    pong: float | None = None
    rtt: float | None = None
    #: Silence is not counted before this (we could not hear anyone while disconnected).
    since: float = 0.0
    #: The session: the peer incarnation it is with ("" before the handshake), the window
    #: the peer announced, its stream counters opened here, and whether the peer answered
    #: our HELLO since our channel last came up.
    session: str = ""
    window: int = 0
    confirmed: bool = False
    hello_sent: float = float("-inf")
    #: The newest timestamp (ms, its clock) of the peer's messages.
    sent: int = 0
    #: Incarnations of the peer that a newer one replaced: a late handshake from one of
    #: them (a broker redelivering an old HELLO) must not take the session back.
    retired: list[str] = field(default_factory=list)


class PeerTable:
    """Every peer node heard from (or about to be talked to), by name."""

    def __init__(
        self,
        *,
        grace: float = DEFAULT_GRACE_PERIOD,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        max_peers: int = MAX_PEERS,
        busy: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.grace = grace
        self.ping_interval = ping_interval
        self.max_peers = max_peers
        self._busy = busy
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        #: Stream counters opened here, per peer incarnation (not per session: a session
        #: set up again with the same incarnation, by a replayed HELLO say, must not make an
        #: old OPEN new again).
        self._opens: OrderedDict[tuple[str, str], SeenCounters] = OrderedDict()
        self._forgotten: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _add(self, name: str, peer: _Peer) -> _Peer:
        peers = self._peers
        if len(peers) >= self.max_peers:
            for old in peers:  # least recently heard first
                if not self._busy(old):
                    del peers[old]
                    break
        peers[name] = peer
        return peer

    def forget_idle(self, now: float, idle: float) -> None:
        """Forget peers without streams not heard from for ``idle`` seconds (bounded maps and
        metric labels: every ``socketeer connect`` is a peer for a moment)."""
        for name in [n for n, p in self._peers.items() if now - p.heard > idle]:
            if not self._busy(name):
                del self._peers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._peers

    def __iter__(self) -> Iterator[str]:
        return iter(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def heard(self, name: str, incarnation: str, now: float, sent: int = 0) -> None:
        """A message from ``name`` arrived (liveness only: a new incarnation id in it is not
        taken as a restart; only a handshake says that).

        ``sent`` is the message's own timestamp (ms, the sender's clock): one older than the
        newest seen from that peer is a late or replayed message, which proves nothing about
        the peer being alive now, so it does not count.
        """
        peer = self._peers.get(name)
        if peer is None:
            self._add(name, _Peer(now, incarnation, sent=sent))
            return
        if sent < peer.sent:
            return
        peer.sent = sent
        peer.heard = now
        if not peer.incarnation:
            peer.incarnation = incarnation
        self._peers.move_to_end(name)

    def expect(self, name: str, now: float) -> None:
        """We are about to talk to ``name``: its silence counts from now if it is new."""
        if name not in self._peers:
            self._add(name, _Peer(now, ""))

    def incarnation(self, name: str) -> str:
        """The peer's incarnation id ("" if unknown): its session's, once there is one."""
        peer = self._peers.get(name)
        return "" if peer is None else peer.incarnation

    # -- sessions ----------------------------------------------------------------------------

    def session(self, name: str) -> str:
        """The peer incarnation our session with ``name`` is with; "" if there is none."""
        peer = self._peers.get(name)
        return "" if peer is None else peer.session

    def retired(self, name: str, incarnation: str) -> bool:
        """Whether ``incarnation`` of ``name`` was replaced by a newer one (it is dead)."""
        peer = self._peers.get(name)
        return peer is not None and incarnation in peer.retired

    def window(self, name: str) -> int:
        """The window ``name`` announced in its handshake (0 without a session)."""
        peer = self._peers.get(name)
        return 0 if peer is None or not peer.session else peer.window

    def confirmed(self, name: str) -> bool:
        """The peer answered our HELLO since our channel last came up."""
        peer = self._peers.get(name)
        return peer is not None and peer.confirmed and bool(peer.session)

    def set_session(
        self, name: str, incarnation: str, window: int, now: float, *, confirmed: bool
    ) -> str:
        """A handshake with ``name``'s ``incarnation``: the session is (now) with it.

        Returns the incarnation of the session this one replaces ("" if none, or the same).
        """
        peer = self._peers.get(name)
        if peer is None:
            peer = self._add(name, _Peer(now, incarnation))
        old = peer.session
        if old and old != incarnation:
            peer.retired.append(old)
            del peer.retired[:-MAX_RETIRED]
        peer.session = peer.incarnation = incarnation
        peer.window = window
        peer.heard = now
        peer.confirmed = peer.confirmed or confirmed
        self._peers.move_to_end(name)
        return old if old != incarnation else ""

    def end_session(self, name: str) -> None:
        """The peer says it has no session with us: forget ours (a handshake starts anew)."""
        peer = self._peers.get(name)
        if peer is not None:
            peer.session = ""
            peer.confirmed = False

    def unconfirm_all(self) -> None:
        """Our channel went down: every session must be confirmed again by a handshake."""
        for peer in self._peers.values():
            peer.confirmed = False
            peer.hello_sent = float("-inf")

    def hello_due(self, name: str, now: float, interval: float) -> bool:
        """Whether to send ``name`` a HELLO now (at most one per ``interval``), and note it."""
        peer = self._peers.get(name)
        if peer is None:
            peer = self._add(name, _Peer(now, ""))
        if now - peer.hello_sent < interval:
            return False
        peer.hello_sent = now
        return True

    def _opens_of(self, name: str, *, create: bool) -> SeenCounters | bool:
        """The opened-counters window of our session with ``name``; or a verdict for every
        counter: True (refuse: no session, or its window was forgotten), False (nothing
        opened yet, and ``create`` is off)."""
        peer = self._peers.get(name)
        if peer is None or not peer.session:
            return True
        key = (name, peer.session)
        seen = self._opens.get(key)
        if seen is None:
            if key in self._forgotten:
                return True  # its window was forgotten: an OPEN from it may have run
            if not create:
                return False
            seen = self._opens[key] = SeenCounters()
            while len(self._opens) > MAX_OPEN_WINDOWS:
                old, _ = self._opens.popitem(last=False)
                self._forgotten[old] = None
                if len(self._forgotten) > MAX_FORGOTTEN_WINDOWS:
                    self._forgotten.popitem(last=False)
        self._opens.move_to_end(key)
        return seen

    def opened(self, name: str, counter: int) -> bool:
        """Whether stream ``counter`` of ``name`` was opened here (or is too old to tell)."""
        seen = self._opens_of(name, create=False)
        return seen if isinstance(seen, bool) else seen.seen_or_old(counter)

    def first_open(self, name: str, counter: int) -> bool:
        """Mark stream ``counter`` of our session with ``name`` opened; False if it was (or
        is too old to tell, or there is no session)."""
        seen = self._opens_of(name, create=True)
        return False if isinstance(seen, bool) else seen.first(counter)

    def silence(self, name: str, now: float) -> float:
        """Seconds since ``name`` was last heard (0 for a peer never met)."""
        peer = self._peers.get(name)
        return 0.0 if peer is None else now - max(peer.heard, peer.since)

    def reset_silence(self, now: float) -> None:
        """Our channel is back: count every peer's silence from ``now``, not from before the
        outage, so that streams just resent are not expired before the peer can answer."""
        for peer in self._peers.values():
            peer.since = now

    def liveness(self, name: str, now: float, since: float = float("-inf")) -> Liveness:
        """What to do about ``name`` for streams that started at ``since``: a stream's own
        silence does not count from before it began (a peer idle for an hour is not gone
        for a stream opened a second ago)."""
        silence = self.silence(name, now)
        if min(silence, now - since) > self.grace:
            return Liveness.GONE
        if silence >= self.ping_interval:
            return Liveness.PING
        return Liveness.ALIVE

    def pong(self, name: str, pinged: float, now: float, fresh: float = MAX_RTT) -> None:
        """A PONG from ``name`` echoed our ping's time ``pinged``: note the round trip. One
        that answers a ping of the last ``fresh`` seconds also shows the peer alive now (a
        replayed old PONG does not)."""
        rtt = now - pinged
        peer = self._peers.get(name)
        if peer is not None and 0 <= rtt < min(fresh, MAX_RTT):
            peer.pong, peer.rtt = now, rtt
            peer.heard = now

    def rtt(self, name: str) -> float | None:
        """The last round trip measured to ``name``, if any."""
        peer = self._peers.get(name)
        return None if peer is None else peer.rtt

    def states(self) -> tuple[PeerState, ...]:
        """Every peer, by name."""
        return tuple(
            PeerState(name, p.incarnation, p.heard, p.pong, p.rtt)
            for name, p in sorted(self._peers.items())
        )
