"""A node: one sourcesink's presence in a cluster, addressing and dispatching its messages.

The node sits between the streams and the channel: it stamps outgoing stream messages with
the cluster / node / resource address, sequence number, timestamp and incarnation, and it
dispatches incoming envelopes to the stream they belong to, to the RESOLVE client, or to the
sink that serves it. It knows nothing about sockets or STOMP frames beyond the envelope codec.

It composes the parts that keep state: :class:`~socketeer.tunnel.registry.StreamRegistry`
(live and recently ended streams), :class:`~socketeer.tunnel.peers.PeerTable` (liveness,
restarts, round trips), :class:`~socketeer.tunnel.resolve.PendingResolves` (the RESOLVE RPC)
and :class:`~socketeer.tunnel.stats.NodeStats` (counters); :meth:`Node.snapshot` shows them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from socketeer import logs
from socketeer.config.defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIXED_TYPE,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_PENDING_OPENS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_PEER,
    DEFAULT_MAX_WINDOW,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BUDGET,
)
from socketeer.tunnel.handshake import HANDSHAKES, PeerSessions
from socketeer.tunnel.peers import Liveness, PeerTable
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.registry import StreamRegistry
from socketeer.tunnel.resolve import PendingResolves, answer_body, request_body
from socketeer.tunnel.snapshot import ChannelState, NodeSnapshot
from socketeer.tunnel.stats import NodeStats
from socketeer.tunnel.stream import Phase, Stream
from socketeer.wire.envelope import (
    BROADCAST,
    SEQUENCED,
    Envelope,
    EnvelopeError,
    MsgType,
    check_name,
    encode_params,
    encode_send_parts,
    from_frame,
)
from socketeer.wire.sessionframe import read_session_header
from socketeer.wire.sessionframe import seal as seal_session

if TYPE_CHECKING:
    from socketeer.tunnel.sessions import SessionKeys
    from socketeer.wire.seal import Sealer

__all__ = ["ChannelLink", "Node", "SinkHandler"]


#: What a node with keys accepts outside a session.
_OUTSIDE_SESSIONS = HANDSHAKES | {MsgType.HELLO, MsgType.PING, MsgType.PONG}


def _is_resync(env: Envelope) -> bool:
    """An ACK asking for retransmission (a peer that reconnected and lost messages)."""
    if env.type is not MsgType.ACK:
        return False
    try:
        return env.params().get("r") == "1"
    except EnvelopeError:
        return False


#: Seconds before an unanswered OPEN or RESOLVE is first sent again; the delay doubles up to
#: RETRY_MAX. A healthy sink answers in milliseconds, so this only fires after a loss.
RETRY_FIRST = 0.5
RETRY_MAX = 4.0
#: RESOLVE requests a sink remembers (and their answers), to answer a repeat without a lookup.
SERVED_RESOLVES = 4096
#: Lookups a sink runs at once; beyond, a RESOLVE is answered with an error at once.
MAX_LOOKUPS = 256
#: Retransmission timeout: a stream whose oldest unacknowledged message is older than this
#: (checked every ping interval) resynchronises with its peer; at least a few round trips.
RTO_MIN = 2.0
RTO_MAX = 10.0
#: A stream quiet for this many grace periods is checked with its peer (a RESET to us may
#: have been lost): one small exchange per quiet stream and period.
PROBE_AFTER = 2
#: Peers without streams are forgotten after this many grace periods of silence.
FORGET_AFTER = 10


class ChannelLink:
    """What a node needs from its channel connection (ChannelProtocol provides it)."""

    #: ``host:port`` of the broker this connection reached, for status; None if unknown.
    broker: str | None = None

    def send_bytes(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def send_parts(self, parts: Sequence[bytes]) -> None:
        """One frame in pieces; a link that can write them without joining overrides this."""
        self.send_bytes(b"".join(parts))


class SinkHandler(Protocol):
    """What serves the OPEN and RESOLVE requests addressed to a sink node (``Node.serve``)."""

    def open(self, request: Envelope) -> None:
        """An OPEN for a stream this node does not have: start it (or refuse it)."""

    def resolve(self, request: Envelope) -> None:
        """A RESOLVE: look the name up and answer with ``Node.answer_resolve``."""


class Node(PeerSessions):
    """One sourcesink: cluster and node name, its streams, its channel link."""

    log = Logger()

    def __init__(
        self,
        cluster: str,
        name: str,
        topic: str,
        clock: IReactorTime,
        *,
        window: int = DEFAULT_WINDOW,
        incarnation: str | None = None,
        grace: float = DEFAULT_GRACE_PERIOD,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        sealer: Sealer | None = None,
        channel_wait: float = DEFAULT_CONNECT_TIMEOUT,
        max_waiting: int = DEFAULT_MAX_PENDING_OPENS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_streams_per_peer: int = DEFAULT_MAX_STREAMS_PER_PEER,
        keys: SessionKeys | None = None,
        max_window: int = DEFAULT_MAX_WINDOW,
        window_budget: int = DEFAULT_WINDOW_BUDGET,
    ) -> None:
        self.cluster = check_name(cluster, "cluster name")
        self.name = check_name(name, "node name")
        self.topic = check_name(topic, "topic")
        self.clock = clock
        self.window = window
        self.incarnation = incarnation or os.urandom(6).hex()
        #: With a codekey: seals what we send, opens (or refuses) what we receive.
        self.sealer = sealer
        self.stats = NodeStats()
        #: Peer nodes: when each was last heard, its incarnation, round trips.
        self._streams = StreamRegistry()
        self.peers = PeerTable(grace=grace, ping_interval=ping_interval, busy=self._busy_peer)
        self.max_streams = max_streams
        #: Window auto-tuning: each stream's window may grow up to ``max_window``; what all
        #: streams grew beyond their first window adds up to ``window_budget`` at most.
        self.max_window = max(max_window, window)
        self.window_budget = window_budget
        self._grown = 0
        self.max_streams_per_peer = max_streams_per_peer
        #: (peer, incarnation) told lately that we have no session with it: when.
        self._told_stale: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: With a codekey or node identities: sessions are set up by a Noise handshake and
        #: their messages sealed with its keys (``tunnel.sessions``).
        self.keys = keys
        #: (peer, incarnation) we started a handshake with lately: when.
        self._initiated: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._handshake_second = float("-inf")
        self._handshakes_started = 0
        self._resolves = PendingResolves(clock)
        self._sink: SinkHandler | None = None
        self._link: ChannelLink | None = None
        self._congested = False
        self._liveness: LoopingCall | None = None
        self._counter = 0
        self._ready_waiters: list[Deferred] = []
        #: How long a new OPEN or RESOLVE waits for a channel that is down, and how many may.
        self.channel_wait = channel_wait
        self.max_waiting = max_waiting
        #: OPENs (by stream key) and RESOLVEs (by (peer, request id)) waiting for the channel.
        self._waiting: dict[tuple[str, str], IDelayedCall] = {}
        #: RESOLVEs in flight, for retransmission: (peer, request id) -> body, retry timer.
        self._resolve_bodies: dict[tuple[str, str], bytes] = {}
        self._resolve_retries: dict[tuple[str, str], IDelayedCall] = {}
        #: A sink's RESOLVEs seen lately, by (source, request id): None while the lookup runs,
        #: then the answer's body. Bounded; it makes a repeated request cost no lookup.
        self._served_resolves: OrderedDict[tuple[str, str], bytes | None] = OrderedDict()
        #: Lookups running (entries of ``_served_resolves`` still None).
        self._lookups = 0

    @property
    def streams(self) -> StreamRegistry:
        """Live streams by ``(peer, resource)`` (a read-only mapping, plus the ended ids)."""
        return self._streams

    def serve(self, sink: SinkHandler) -> None:
        """Make this node a sink: OPENs of new streams and RESOLVEs go to ``sink``."""
        self._sink = sink

    def snapshot(self) -> NodeSnapshot:
        """The node as it is now, for status and metrics."""
        link = self._link
        return NodeSnapshot(
            cluster=self.cluster,
            node=self.name,
            incarnation=self.incarnation,
            time=self.clock.seconds(),
            channel=ChannelState(
                connected=link is not None,
                congested=link is not None and self._congested,
                broker=getattr(link, "broker", None),  # a bare link (tests) has none
                connects=self.stats.channel_connects,
                waiting=len(self._waiting),
            ),
            peers=self.peers.states(),
            streams=self._streams.states(),
            counts=self.stats.snapshot(),
        )

    # -- StreamHost --------------------------------------------------------------------------

    @property
    def channel_paused(self) -> bool:
        return self._link is None or self._congested

    @property
    def connected(self) -> bool:
        """The channel is up and subscribed (for status and metrics)."""
        return self._link is not None

    def seconds(self) -> float:
        return self.clock.seconds()

    def call_later(self, delay: float, f: Callable[[], object]) -> IDelayedCall:
        return self.clock.callLater(delay, f)

    def window_violated(self, stream: Stream) -> None:
        self.stats.window_violations += 1

    def grow_window(self, stream: Stream, wanted: int) -> int:
        """Bytes ``stream``'s window may grow by (``wanted`` at most), from the budget."""
        granted = max(0, min(wanted, self.window_budget - self._grown))
        self._grown += granted
        if granted:
            self.stats.windows_grown += 1
        return granted

    def send_stream_message(
        self, stream: Stream, kind: MsgType, seq: int, body: bytes = b""
    ) -> None:
        pinc = stream.peer_incarnation
        if pinc:  # without a session the stream holds its messages (``Stream.send``)
            self._send(kind, stream.peer, stream.resource, seq, body, pinc)

    def _busy_peer(self, peer: str) -> bool:
        """Whether ``peer`` has streams (its table entry must stay)."""
        return self._streams.count(peer) > 0 or any(k[0] == peer for k in self._waiting)

    def stream_window(self, peer: str) -> int:
        """The window of a stream with ``peer``: the smaller of ours and the one it announced."""
        theirs = self.peers.window(peer)
        return min(self.window, theirs) if theirs else self.window

    def stream_done(self, stream: Stream) -> None:
        self._streams.ended(stream)
        self._grown -= stream.grown  # its share of the window budget is free again
        waiting = self._waiting.pop(stream.key, None)
        if waiting is not None and waiting.active():
            waiting.cancel()  # the client gave up while the OPEN waited for the channel
        stats = self.stats
        if stream.failure is not None:
            stats.open_failed[stream.failure] += 1
        else:
            stats.streams_closed += 1
        # Totals of ended streams; metrics add the live ones' counts.
        stats.bytes_out += stream.sent
        stats.bytes_in += stream.delivered

    # -- sending ---------------------------------------------------------------------------

    def _send(
        self, kind: MsgType, dest: str, resource: str, seq: int, body: bytes, pinc: str = ""
    ) -> None:
        link = self._link
        if link is None:
            self.stats.dropped_unconnected += 1
            return
        env = Envelope(
            kind,
            self.cluster,
            self.name,
            dest,
            resource,
            seq,
            int(self.clock.seconds() * 1000),
            self.incarnation,
            body,
            pinc,
        )
        keys = self.keys
        if keys is not None and pinc and kind not in HANDSHAKES:
            session = keys.sender(dest, pinc)
            if session is None:  # the session is gone (the peer restarted meanwhile)
                self.stats.dropped_unconnected += 1
                return
            parts = seal_session(self.topic, env, session.transport, session.sid)
        elif (sealer := self.sealer) is not None:
            parts = sealer.seal_parts(env)
        else:
            parts = encode_send_parts(self.topic, env)
        send_parts = getattr(link, "send_parts", None)
        if send_parts is not None:
            send_parts(parts)
        else:  # a bare link (tests, embedding) with send_bytes only
            link.send_bytes(b"".join(parts))
        self.stats.messages_out += 1
        if logs.trace:
            self.log.debug(
                "sent {type} to {dest}/{resource} seq {seq}, {size} bytes",
                type=kind.value,
                dest=dest,
                resource=resource,
                seq=seq,
                size=len(body),
            )

    # -- streams ---------------------------------------------------------------------------

    def new_resource_id(self) -> str:
        """Stream ids are unique across restarts: the incarnation plus a counter."""
        self._counter += 1
        return f"{self.incarnation}-{self._counter}"

    def add_stream(self, stream: Stream) -> None:
        self._streams.add(stream)

    def open_stream(
        self,
        peer: str,
        host: str,
        port: int,
        *,
        client: str = "",
        kind: int = DEFAULT_FIXED_TYPE,
        timeout: float = DEFAULT_OPEN_TIMEOUT,
    ) -> Stream:
        """Start a stream to ``host:port`` through the sink node ``peer``.

        The OPEN goes out at once when the channel is up. While the channel is down it waits
        for it, up to ``channel_wait`` seconds (then the stream fails with CHANNEL_LOST, as a
        slow target would time out); at most ``max_waiting`` OPENs and RESOLVEs wait at once.
        An OPEN the peer has not answered is sent again, with backoff, until the peer is
        heard on the stream: one sent while the peer itself was reconnecting would otherwise
        be lost. The sink drops a repeated OPEN of a stream it has (or ended recently), so
        the target sees one connection. Either way the stream fails if no answer comes
        within ``timeout``. The local socket is not read until the stream is open.
        """
        stream = Stream(
            self,
            peer,
            self.new_resource_id(),
            self.stream_window(peer),
            target=f"{host}:{port}",
            client=client,
            peer_incarnation=self._usable_session(peer),
        )
        stream.max_window = max(stream.window, self.max_window)  # the OPEN_OK's mw settles it
        self.stats.streams_opened += 1
        limit = self._stream_limit(peer)
        if limit:
            self.stats.stream_limit += 1
            stream.fail(OpenFailure.LIMIT, limit, notify_peer=False)
            return stream
        self.add_stream(stream)
        body = encode_params(
            {"host": host, "port": port, "type": kind, "w": self.window, "mw": self.max_window}
        )
        stream.open_timer = self.clock.callLater(
            timeout, stream.fail, OpenFailure.NO_SINK, f"no answer from node {peer}"
        )
        self.peers.expect(peer, self.clock.seconds())
        if not stream.peer_incarnation:
            self._wait_for_session(
                peer, stream.key, lambda why: stream.fail(OpenFailure.CHANNEL_LOST, why)
            )
        # Sent now, or (no session yet) held by the stream until the handshake is done.
        stream.send(MsgType.OPEN, body)
        if stream.peer_incarnation:
            self._schedule_retry(stream, self._first_retry(peer))
        # Logged after the OPEN left: the line costs tens of µs, not on the connect path.
        self.log.info(
            "stream {resource} from {client} to {target} via {peer}: opening",
            resource=stream.resource,
            client=client,
            target=stream.target,
            peer=peer,
        )
        return stream

    def _usable_session(self, peer: str) -> str:
        """The session with ``peer`` to send in now: one confirmed since our channel came up."""
        if self._link is None or not self.peers.confirmed(peer):
            return ""
        return self.peers.session(peer)

    def _stream_limit(self, peer: str) -> str:
        """Why a new stream with ``peer`` is refused (a cap is reached), or ""."""
        if len(self._streams) >= self.max_streams:
            return f"this node has {self.max_streams} streams already (maxstreams)"
        if self._streams.count(peer) >= self.max_streams_per_peer:
            return (
                f"{self.max_streams_per_peer} streams with node {peer} already (maxstreamsperpeer)"
            )
        return ""

    def accept_stream(self, request: Envelope, params: dict[str, str] | None = None) -> Stream:
        """A sink's side of a new stream, for the OPEN ``request`` (``Sink.open``), whose
        ``params`` the caller may have read already."""
        window = self.stream_window(request.source)
        try:
            asked = int((request.params() if params is None else params).get("w", "0"))
        except (ValueError, EnvelopeError):
            asked = 0
        if asked > 0:
            window = min(window, asked)
        stream = Stream(
            self,
            request.source,
            request.resource,
            window,
            rx_seq=1,
            peer_incarnation=request.incarnation,
        )
        stream.max_window = self.max_window
        stream._agree_max_window(request)
        return stream

    def resolve(
        self, peer: str, name: str, *, reverse: bool = False, timeout: float = DEFAULT_OPEN_TIMEOUT
    ) -> Deferred:
        """Ask sink node ``peer`` to resolve ``name`` (or, with ``reverse``, an address).

        Fires with the answer text, or fails with ResolveError carrying an OpenFailure.
        """
        self._counter += 1
        rid = f"{self.incarnation}-r{self._counter}"
        d = self._resolves.expect(peer, rid, timeout)
        key = (peer, rid)
        body = self._resolve_bodies[key] = request_body(name, reverse)
        d.addBoth(self._resolve_settled, key)
        session = self._usable_session(peer)
        if not session:  # waits for the channel and the session, as an OPEN does
            self.peers.expect(peer, self.clock.seconds())
            self._wait_for_session(
                peer, key, lambda why: self._resolves.fail(peer, rid, OpenFailure.CHANNEL_LOST)
            )
        else:
            self._send(MsgType.RESOLVE, peer, rid, 0, body, session)
            self._schedule_resolve_retry(key, self._first_retry(peer))
        return d

    def _resolve_settled(self, result: object, key: tuple[str, str]) -> object:
        self._resolve_bodies.pop(key, None)
        retry = self._resolve_retries.pop(key, None)
        if retry is not None and retry.active():
            retry.cancel()
        waiting = self._waiting.pop(key, None)
        if waiting is not None and waiting.active():
            waiting.cancel()
        return result

    # -- waiting for the channel, and sending again --------------------------------------------

    def _wait_for_session(
        self, peer: str, key: tuple[str, str], give_up: Callable[[str], object]
    ) -> None:
        """Keep a new OPEN or RESOLVE until the channel is up and ``peer`` has answered our
        HELLO, ``channel_wait`` at most.

        Past ``max_waiting`` it is refused instead, on the next reactor turn (after the caller
        has set its callbacks), so an outage cannot pile up connections without bound.
        """
        if len(self._waiting) >= self.max_waiting:
            self.stats.channel_wait_refused += 1
            why = f"{self.max_waiting} requests already wait for the channel to the broker"
            self.clock.callLater(0, give_up, why)
            return
        self.stats.channel_waits += 1
        self._waiting[key] = self.clock.callLater(
            self.channel_wait, self._wait_expired, key, give_up
        )
        self._hello(peer)

    def _wait_expired(self, key: tuple[str, str], give_up: Callable[[str], object]) -> None:
        if self._waiting.pop(key, None) is None:
            return
        self.stats.channel_wait_expired += 1
        if self._link is None:
            give_up(f"no channel to the broker for {self.channel_wait:g}s")
        else:
            give_up(f"node {key[0]} did not answer a handshake in {self.channel_wait:g}s")

    def _first_retry(self, peer: str) -> float:
        """The first resend waits for several round trips to ``peer`` (when one is known), so
        a sink that is merely slow to connect is not sent copies."""
        rtt = self.peers.rtt(peer)
        return RETRY_FIRST if rtt is None else min(max(RETRY_FIRST, 4 * rtt), RETRY_MAX)

    def _schedule_retry(self, stream: Stream, delay: float) -> None:
        stream.retry_timer = self.clock.callLater(delay, self._retry_open, stream, delay)

    def _retry_open(self, stream: Stream, delay: float) -> None:
        """The OPEN got no answer yet: send it again (and ask the peer to resend its side),
        unless the peer has been heard on the stream."""
        stream.retry_timer = None
        if stream.phase is not Phase.OPENING or stream.heard_from_peer:
            return
        if self._link is not None and not self._congested:  # a full broker gets no copies
            self.stats.retransmits += 1
            stream.resync()
        self._schedule_retry(stream, min(delay * 2, RETRY_MAX))

    def _schedule_resolve_retry(self, key: tuple[str, str], delay: float) -> None:
        old = self._resolve_retries.pop(key, None)
        if old is not None and old.active():
            old.cancel()
        self._resolve_retries[key] = self.clock.callLater(delay, self._retry_resolve, key, delay)

    def _retry_resolve(self, key: tuple[str, str], delay: float) -> None:
        self._resolve_retries.pop(key, None)
        body = self._resolve_bodies.get(key)
        if body is None:
            return  # answered, failed or timed out
        session = self._usable_session(key[0])
        if session and not self._congested and key not in self._waiting:
            self.stats.retransmits += 1
            self._send(MsgType.RESOLVE, key[0], key[1], 0, body, session)
        self._schedule_resolve_retry(key, min(delay * 2, RETRY_MAX))

    def answer_resolve(
        self, request: Envelope, address: str | None, failure: OpenFailure | None = None
    ) -> None:
        """The sink's side: send the answer to a RESOLVE request."""
        body = answer_body(address, failure)
        key = (request.source, request.resource)
        if key in self._served_resolves:  # kept, so that a repeated request gets it again
            if self._served_resolves[key] is None:
                self._lookups -= 1
            self._served_resolves[key] = body
        self._send(MsgType.RESOLVED, request.source, request.resource, 0, body, request.incarnation)

    def ping(self, dest: str = BROADCAST) -> None:
        """Ping ``dest`` (or the cluster). With keys, a peer with a session is pinged in it,
        so that only it can answer: its PONG is what keeps its streams alive."""
        pinc = self._usable_session(dest) if self.keys is not None and dest != BROADCAST else ""
        self._send(MsgType.PING, dest, "", 0, encode_params({"t": self.clock.seconds()}), pinc)

    # -- the channel -----------------------------------------------------------------------

    def when_ready(self) -> Deferred:
        """Fire once the node is connected and subscribed (for tests and embedding)."""
        if self._link is not None:
            return succeed(self)
        d: Deferred = Deferred()
        self._ready_waiters.append(d)
        return d

    def channel_ready(self, link: ChannelLink) -> None:
        """The channel is connected and subscribed: greet the cluster, let sockets be read.

        Streams resume per peer once that peer answers our HELLO with the incarnation they
        were with (``_session_up``); a peer that restarted meanwhile gets none of them.
        """
        self._link = link
        self._congested = False
        self.stats.channel_connects += 1
        self.log.info(
            "node {cluster}/{node} is on the channel", cluster=self.cluster, node=self.name
        )
        # Nothing could be heard while we were away: every peer's silence counts from now.
        self.peers.reset_silence(self.clock.seconds())
        self.peers.unconfirm_all()
        self._send(MsgType.HELLO, BROADCAST, "", 0, self._hello_body())
        self._update_all()
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    def channel_congested(self, congested: bool) -> None:
        """The broker connection's send buffer is full (or drained): stop (or restart) reading."""
        self._congested = congested
        self._update_all()

    def channel_lost(self) -> None:
        """The broker connection is gone: streams wait (unread) for it to come back.

        They resume on reconnect; a peer not heard from for ``grace`` seconds ends them.
        """
        if self._link is None:
            return
        self._link = None
        self.peers.unconfirm_all()
        self._update_all()

    # -- liveness ------------------------------------------------------------------------

    def start(self) -> None:
        """Start pinging silent peers and expiring streams whose peer is gone."""
        interval = self.peers.ping_interval
        if self._liveness is None and interval > 0:
            self._liveness = LoopingCall(self.check_peers)
            self._liveness.clock = self.clock
            self._liveness.start(interval, now=False)

    def stop(self) -> None:
        if self._liveness is not None and self._liveness.running:
            self._liveness.stop()
        self._liveness = None

    def _serve_resolve(self, env: Envelope) -> None:
        """Hand a RESOLVE to the sink once: a repeat (the source sends again when no answer
        came) of one still being looked up is dropped, of one answered gets that answer."""
        key = (env.source, env.resource)
        if key in self._served_resolves:
            body = self._served_resolves[key]
            if body is not None:
                self._send(MsgType.RESOLVED, env.source, env.resource, 0, body, env.incarnation)
            return
        if self._lookups >= MAX_LOOKUPS:
            self.stats.lookup_limit += 1
            self.answer_resolve(env, None, OpenFailure.LIMIT)
            return
        self._served_resolves[key] = None
        self._lookups += 1
        if len(self._served_resolves) > SERVED_RESOLVES:
            _, answer = self._served_resolves.popitem(last=False)
            if answer is None:
                self._lookups -= 1  # forgotten while running: its answer is not counted
        self._sink.resolve(env)

    def check_peers(self) -> None:
        """Every ping interval: ping quiet peers that carry streams, end the streams of a
        silent one, resynchronise streams whose outbox went unacknowledged for an RTO, greet
        peers that owe us a handshake, and forget long-silent peers without streams.

        Streams whose OPEN still waits for our channel or a handshake are left to their own
        deadline (``channel_wait``). A stream's silence never counts from before it began.
        """
        now = self.clock.seconds()
        for peer, streams in self._streams.by_peer().items():
            streams = [s for s in streams if s.key not in self._waiting]
            if not streams:
                self._hello(peer)
                continue
            pinged = False
            gone = []
            for stream in streams:
                liveness = self.peers.liveness(peer, now, stream.started)
                if liveness is Liveness.GONE:
                    gone.append(stream)
                elif liveness is Liveness.PING and not pinged:
                    pinged = True
                    self.ping(peer)
            if gone:
                self.log.warn(
                    "node {peer} silent for {silence:.0f}s: closing its {n} streams",
                    peer=peer,
                    silence=self.peers.silence(peer, now),
                    n=len(gone),
                )
                self.stats.streams_expired += len(gone)
                for stream in gone:
                    stream.expire()
            if self._link is None or self._congested:
                continue
            if not self.peers.confirmed(peer):
                self._hello(peer)
                continue
            rto = self._rto(peer)
            probe = PROBE_AFTER * self.peers.grace
            for stream in streams:
                if (
                    stream.phase is Phase.CLOSING
                    and now - max(stream.closing_since, stream.progress) > self.peers.grace
                ):
                    stream.abort()  # a peer that acknowledges nothing of ours: let it go
                elif stream.unacknowledged and now - max(stream.progress, stream.resent) > rto:
                    self.stats.retransmits += 1
                    stream.resent = now
                    stream.resync()
                elif min(now - stream.last_rx, now - stream.probed) > probe:
                    # Quiet for long: ask the peer about it. A peer that lost it (its RESET
                    # to us lost too) answers RESET; one that has it, its position.
                    stream.probed = now
                    stream.resync()
        for key in list(self._waiting):
            self._hello(key[0])
        self.peers.forget_idle(now, FORGET_AFTER * self.peers.grace)

    def _rto(self, peer: str) -> float:
        rtt = self.peers.rtt(peer)
        return RTO_MIN if rtt is None else min(max(RTO_MIN, 4 * rtt), RTO_MAX)

    def _heard(self, env: Envelope) -> float:
        """Note that ``env.source`` is alive (liveness only; sessions change by handshake);
        the time now."""
        now = self.clock.seconds()
        self.peers.heard(env.source, env.incarnation, now, env.timestamp)
        return now

    def shutdown(self) -> None:
        """Service stop: every stream dies with the process; peers reset their side."""
        for stream in list(self._streams.values()):
            stream.shutdown()

    def _update_all(self) -> None:
        for stream in list(self._streams.values()):
            stream.update_reading()

    # -- receiving -------------------------------------------------------------------------

    def frame_received(self, frame) -> None:
        """A MESSAGE from our destinations. Anything malformed is counted and dropped."""
        stats = self.stats
        stats.messages_in += 1
        sealer = self.sealer
        try:
            clear = read_session_header(frame.headers)
        except EnvelopeError as e:
            self._malformed(e)
            return
        if clear is not None:
            self._session_frame(clear, frame.body)
            return
        try:
            env = from_frame(frame) if sealer is None else sealer.open(frame, self.clock.seconds())
        except EnvelopeError as e:
            refusal = None if sealer is None else sealer.rejected(e, self.clock.seconds())
            if refusal is not None:
                if refusal.foreign:
                    stats.foreign += 1
                    return
                stats.seal_refused[refusal.reason] += 1
                if refusal.loggable:
                    self.log.warn(
                        "dropped a message ({reason}; {count} so far{more}): {problem}",
                        reason=refusal.reason,
                        count=stats.seal_refused[refusal.reason],
                        more=f", {refusal.not_logged} not logged" if refusal.not_logged else "",
                        problem=refusal.problem,
                    )
                return  # logged at most once per kind per interval
            self._malformed(e)
            return
        if env.cluster != self.cluster or env.destination not in (self.name, BROADCAST):
            stats.foreign += 1
            return
        if self.keys is not None and env.type not in _OUTSIDE_SESSIONS:
            # With keys, a session's messages come sealed in it; anything else is refused.
            stats.seal_refused["outside-session"] += 1
            return
        if env.source == self.name:
            # Our own broadcast; or another process under our name (an earlier life of ours,
            # a misconfiguration, an impostor): a node holds no session with its own name.
            if env.incarnation != self.incarnation:
                stats.foreign += 1
            return
        self.envelope_received(env, authentic=self.keys is None)

    def _malformed(self, error: Exception) -> None:
        stats = self.stats
        stats.malformed += 1
        if stats.malformed <= 10 or stats.malformed % 1000 == 0:
            self.log.warn(
                "dropped a malformed message ({count} so far): {problem}",
                count=stats.malformed,
                problem=str(error),
            )

    def envelope_received(self, env: Envelope, *, authentic: bool = True) -> None:
        """Dispatch one message. ``authentic``: it may count as a sign of the peer's life.
        With keys, a message outside a session does not (it may be a replay of an old one)
        but for a PONG to one of our recent pings."""
        if logs.trace:
            self.log.debug(
                "received {type} from {source}/{resource} seq {seq}, {size} bytes",
                type=env.type.value,
                source=env.source,
                resource=env.resource,
                seq=env.seq,
                size=len(env.body),
            )
        now = self._heard(env) if authentic else 0.0
        if not env.resource:
            self._node_message(env, authentic)
            return
        session = self.peers.session(env.source)
        if env.peer_incarnation == self.incarnation and not session:
            # The peer knows us (it had our HELLO) but we never had its HELLO_OK (lost in an
            # outage of ours): greet it; its answer sets the session up and it resends.
            self.stats.stale_session += 1
            self._hello(env.source)
            return
        if env.peer_incarnation != self.incarnation or session != env.incarnation:
            # Meant for an earlier life of ours, or from an incarnation of the peer we have
            # no session with (a late message of a dead one, or one that forgot us).
            self.stats.stale_session += 1
            self._tell_stale(env.source, env.incarnation, env.peer_incarnation, env.type)
            return
        if env.type is MsgType.RESOLVE:
            if self._sink is not None:
                self._serve_resolve(env)
            else:
                self.answer_resolve(env, None, OpenFailure.ERROR)
            return
        if env.type is MsgType.RESOLVED:
            self._resolves.answered(env)
            return
        stream = self._streams.get((env.source, env.resource))
        if stream is not None:
            if authentic:
                stream.last_rx = now
            stream.receive(env)
            return
        kind = env.type
        if kind is MsgType.OPEN:
            self._open_received(env)
            return
        final = self._streams.final_seq(env.key)
        if final is not None and kind in SEQUENCED:
            # The stream ended cleanly here; the peer resends because our last ACK was lost.
            self._send(
                MsgType.ACK,
                env.source,
                env.resource,
                0,
                encode_params({"n": 0, "s": final}),
                env.incarnation,
            )
        elif kind is not MsgType.RESET and (kind is not MsgType.ACK or _is_resync(env)):
            self.stats.unknown_stream += 1
            counter = self._peer_stream_counter(env)
            if counter is not None and not self.peers.opened(env.source, counter):
                return  # its OPEN has not arrived (lost in an outage): it will be resent
            # A stream that ended here (or was never ours): tell the peer so it stops.
            self._send(MsgType.RESET, env.source, env.resource, 0, b"", env.incarnation)

    @staticmethod
    def _peer_stream_counter(env: Envelope) -> int | None:
        """The counter of a stream id the peer made (``<its incarnation>-<n>``), else None."""
        prefix, _, counter = env.resource.rpartition("-")
        if prefix != env.incarnation or not counter.isdigit() or len(counter) > 18:
            return None
        return int(counter)

    def _open_received(self, env: Envelope) -> None:
        """An OPEN of a stream we do not have: run it once, whatever is resent."""
        counter = self._peer_stream_counter(env)
        if counter is None:
            self.stats.malformed += 1
            self._send(MsgType.RESET, env.source, env.resource, 0, b"", env.incarnation)
            return
        if not self.peers.first_open(env.source, counter):
            # Opened here before (and ended), or too old to tell: never a second connection.
            self.stats.repeated_opens += 1
            self._send(MsgType.RESET, env.source, env.resource, 0, b"", env.incarnation)
            return
        if self._sink is None:
            self.stats.open_refused += 1
            why = f"node {self.name} is not a sink"
            reason = OpenFailure.ERROR
        else:
            why = self._stream_limit(env.source)
            reason = OpenFailure.LIMIT
            if why:
                self.stats.stream_limit += 1
        if why:
            self._send(
                MsgType.OPEN_FAIL,
                env.source,
                env.resource,
                0,
                encode_params({"reason": reason.value, "message": why}),
                env.incarnation,
            )
            return
        self._sink.open(env)  # its OPEN_OK (or OPEN_FAIL) acknowledges the OPEN

    def _node_message(self, env: Envelope, authentic: bool = True) -> None:
        kind = env.type
        if kind is MsgType.HELLO or kind is MsgType.HELLO_OK:
            self._on_hello(env, answer=kind is MsgType.HELLO)
        elif kind is MsgType.SESSION_RESET:
            self._session_reset(env)
        elif kind is MsgType.HANDSHAKE:
            self._on_handshake(env)
        elif kind is MsgType.HANDSHAKE_OK:
            self._on_handshake_ok(env)
        elif kind is MsgType.PING:
            # Answered the way it came: in the session, or (no session) in the clear.
            pinc = env.incarnation if env.peer_incarnation else ""
            self._send(MsgType.PONG, env.source, "", 0, env.body, pinc)
        elif env.type is MsgType.PONG:
            self.stats.pongs += 1
            try:
                pinged = float(env.params().get("t", ""))
            except (ValueError, EnvelopeError):
                return
            fresh = self.peers.grace if authentic else 0.0  # a sign of life only if authentic
            self.peers.pong(env.source, pinged, self.clock.seconds(), fresh)
        else:
            self.stats.malformed += 1
