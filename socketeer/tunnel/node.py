"""A node: one sourcesink's presence in a cluster, owning its streams and their messages.

The node sits between the streams and the channel: it stamps outgoing stream messages with
the cluster / node / resource address, sequence number, timestamp and incarnation, and it
dispatches incoming envelopes to the stream they belong to (or to the open handler of a
spawning sink). It knows nothing about sockets or STOMP frames beyond the envelope codec.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from socketeer import logs
from socketeer.config.defaults import DEFAULT_WINDOW
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stream import Stream
from socketeer.wire.envelope import (
    BROADCAST,
    Envelope,
    EnvelopeError,
    MsgType,
    check_name,
    encode_params,
    encode_send_parts,
    from_frame,
)

if TYPE_CHECKING:
    from socketeer.wire.seal import Sealer

#: How many ended streams a node remembers, to refuse their retransmitted OPENs.
RECENTLY_CLOSED = 4096


def _is_resync(env: Envelope) -> bool:
    """An ACK asking for retransmission (a peer that reconnected and lost messages)."""
    if env.type is not MsgType.ACK:
        return False
    try:
        return env.params().get("r") == "1"
    except EnvelopeError:
        return False


class ResolveError(Exception):
    """A remote name resolution failed; ``reason`` says why, in the front-ends' vocabulary."""

    def __init__(self, reason: OpenFailure) -> None:
        super().__init__(reason.value)
        self.reason = reason


class ChannelLink:
    """What a node needs from its channel connection (ChannelProtocol provides it)."""

    def send_bytes(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def send_parts(self, parts: Sequence[bytes]) -> None:
        """One frame in pieces; a link that can write them without joining overrides this."""
        self.send_bytes(b"".join(parts))


class Node:
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
        grace: float = 60.0,
        ping_interval: float = 5.0,
        sealer: Sealer | None = None,
    ) -> None:
        self.cluster = check_name(cluster, "cluster name")
        self.name = check_name(name, "node name")
        self.topic = check_name(topic, "topic")
        self.clock = clock
        self.window = window
        self.incarnation = incarnation or os.urandom(6).hex()
        #: With a codekey: seals what we send, opens (or refuses) what we receive.
        self.sealer = sealer
        self.streams: dict[tuple[str, str], Stream] = {}
        self.open_handler: Callable[[Envelope], None] | None = None
        self.stats: Counter[str] = Counter()
        self._link: ChannelLink | None = None
        self._congested = False
        self.grace = grace
        self.ping_interval = ping_interval
        # peer node -> (when we last heard from it, its incarnation)
        self._peers: dict[str, tuple[float, str]] = {}
        #: peer node -> (when its last PONG came, the round-trip time it measured)
        self.peer_rtt: dict[str, tuple[float, float]] = {}
        # Streams that ended recently: a retransmitted OPEN for one must not reopen it.
        self._recently_closed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._liveness: LoopingCall | None = None
        self._counter = 0
        self._ready_waiters: list[Deferred] = []
        self.resolve_handler: Callable[[Envelope], None] | None = None
        self._resolves: dict[tuple[str, str], tuple[Deferred, IDelayedCall]] = {}

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

    def send_stream_message(
        self, stream: Stream, kind: MsgType, seq: int, body: bytes = b""
    ) -> None:
        self._send(kind, stream.peer, stream.resource, seq, body)

    def stream_done(self, stream: Stream) -> None:
        if self.streams.get(stream.key) is stream:
            del self.streams[stream.key]
        self._recently_closed[stream.key] = None
        if len(self._recently_closed) > RECENTLY_CLOSED:
            self._recently_closed.popitem(last=False)
        if stream.failure is not None:
            self.stats[f"open-failed:{stream.failure.value}"] += 1
        else:
            self.stats["streams-closed"] += 1
        # Totals of ended streams; metrics add the live ones' counts.
        self.stats["bytes-out"] += stream.sent
        self.stats["bytes-in"] += stream.delivered

    # -- sending ---------------------------------------------------------------------------

    def _send(self, kind: MsgType, dest: str, resource: str, seq: int, body: bytes) -> None:
        link = self._link
        if link is None:
            self.stats["dropped-unconnected"] += 1
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
        )
        sealer = self.sealer
        parts = encode_send_parts(self.topic, env) if sealer is None else sealer.seal_parts(env)
        send_parts = getattr(link, "send_parts", None)
        if send_parts is not None:
            send_parts(parts)
        else:  # a bare link (tests, embedding) with send_bytes only
            link.send_bytes(b"".join(parts))
        self.stats["messages-out"] += 1
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
        self.streams[stream.key] = stream

    def open_stream(
        self,
        peer: str,
        host: str,
        port: int,
        *,
        client: str = "",
        kind: int = 0,
        timeout: float = 30.0,
    ) -> Stream:
        """Start a stream to ``host:port`` through the sink node ``peer``.

        The OPEN goes out at once when the channel is up, or as soon as it comes up; the local
        socket is not read until then. Either way the stream fails if no answer comes within
        ``timeout``.
        """
        stream = Stream(
            self,
            peer,
            self.new_resource_id(),
            self.window,
            target=f"{host}:{port}",
            client=client,
        )
        self.add_stream(stream)
        body = encode_params({"host": host, "port": port, "type": kind})
        stream.open_timer = self.clock.callLater(
            timeout, stream.fail, OpenFailure.NO_SINK, f"no answer from node {peer}"
        )
        self._peers.setdefault(peer, (self.clock.seconds(), ""))
        # Sent now, or (no channel yet) kept in the stream's outbox until the channel is ready.
        stream.send(MsgType.OPEN, body)
        # Logged after the OPEN left: the line costs tens of µs, not on the connect path.
        self.log.info(
            "stream {resource} from {client} to {target} via {peer}: opening",
            resource=stream.resource,
            client=client,
            target=stream.target,
            peer=peer,
        )
        self.stats["streams-opened"] += 1
        return stream

    def resolve(self, peer: str, name: str, *, reverse: bool = False, timeout: float = 30.0):
        """Ask sink node ``peer`` to resolve ``name`` (or, with ``reverse``, an address).

        Fires with the answer text, or fails with ResolveError carrying an OpenFailure.
        """
        self._counter += 1
        rid = f"{self.incarnation}-r{self._counter}"
        d: Deferred = Deferred()
        timer = self.clock.callLater(timeout, self._resolved, peer, rid, None)
        self._resolves[(peer, rid)] = (d, timer)
        body = encode_params({"name": name, "ptr": int(reverse)})
        if self._link is None:
            self._resolved(peer, rid, None, OpenFailure.CHANNEL_LOST)
        else:
            self._send(MsgType.RESOLVE, peer, rid, 0, body)
        return d

    def answer_resolve(self, request: Envelope, address: str | None, failure=None) -> None:
        """The sink's side: send the answer to a RESOLVE request."""
        if address is not None:
            params = {"address": address}
        else:
            params = {"reason": (failure or OpenFailure.NAME_NOT_FOUND).value}
        self._send(MsgType.RESOLVED, request.source, request.resource, 0, encode_params(params))

    def _resolved(
        self, peer: str, rid: str, env: Envelope | None, failure: OpenFailure | None = None
    ) -> None:
        entry = self._resolves.pop((peer, rid), None)
        if entry is None:
            return
        d, timer = entry
        if timer.active():
            timer.cancel()
        if env is not None:
            try:
                params = env.params()
            except EnvelopeError:
                params = {}
            if params.get("address"):
                d.callback(params["address"])
                return
            failure = OpenFailure.parse(params.get("reason", ""))
        d.errback(ResolveError(failure or OpenFailure.TIMEOUT))

    def ping(self, dest: str = BROADCAST) -> None:
        self._send(MsgType.PING, dest, "", 0, encode_params({"t": self.clock.seconds()}))

    # -- the channel -----------------------------------------------------------------------

    def when_ready(self) -> Deferred:
        """Fire once the node is connected and subscribed (for tests and embedding)."""
        if self._link is not None:
            return succeed(self)
        d: Deferred = Deferred()
        self._ready_waiters.append(d)
        return d

    def channel_ready(self, link: ChannelLink) -> None:
        """The channel is connected and subscribed: send what waited, let sockets be read."""
        self._link = link
        self._congested = False
        self.stats["channel-connects"] += 1
        self.log.info(
            "node {cluster}/{node} is on the channel", cluster=self.cluster, node=self.name
        )
        # Whatever was sent while the channel was down (or lost with the old connection) is
        # resent, and each peer is asked to resend what we missed: streams survive.
        for stream in list(self.streams.values()):
            stream.resync()
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
        self._update_all()
        for peer, rid in list(self._resolves):
            self._resolved(peer, rid, None, OpenFailure.CHANNEL_LOST)

    # -- liveness ------------------------------------------------------------------------

    def start(self) -> None:
        """Start pinging silent peers and expiring streams whose peer is gone."""
        if self._liveness is None and self.ping_interval > 0:
            self._liveness = LoopingCall(self.check_peers)
            self._liveness.clock = self.clock
            self._liveness.start(self.ping_interval, now=False)

    def stop(self) -> None:
        if self._liveness is not None and self._liveness.running:
            self._liveness.stop()
        self._liveness = None

    def check_peers(self) -> None:
        now = self.clock.seconds()
        by_peer: dict[str, list[Stream]] = {}
        for stream in self.streams.values():
            by_peer.setdefault(stream.peer, []).append(stream)
        for peer, streams in by_peer.items():
            heard = self._peers.get(peer, (now, ""))[0]
            silence = now - heard
            if silence > self.grace:
                self.log.warn(
                    "node {peer} silent for {silence:.0f}s: closing its {n} streams",
                    peer=peer,
                    silence=silence,
                    n=len(streams),
                )
                self.stats["streams-expired"] += len(streams)
                for stream in streams:
                    stream.expire()
            elif silence >= self.ping_interval:
                self.ping(peer)

    def _heard(self, env: Envelope) -> None:
        """Note that ``env.source`` is alive; a new incarnation means it restarted."""
        previous = self._peers.get(env.source)
        self._peers[env.source] = (self.clock.seconds(), env.incarnation)
        if previous and previous[1] and env.incarnation and previous[1] != env.incarnation:
            stale = [
                s
                for s in self.streams.values()
                if s.peer == env.source and s.peer_incarnation not in ("", env.incarnation)
            ]
            if stale:
                self.log.info(
                    "node {peer} restarted: resetting {n} stale streams",
                    peer=env.source,
                    n=len(stale),
                )
            for stream in stale:
                stream.abort()

    def shutdown(self) -> None:
        """Service stop: close every stream cleanly and tell the peers."""
        for stream in list(self.streams.values()):
            stream.shutdown()

    def _update_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.update_reading()

    # -- receiving -------------------------------------------------------------------------

    def frame_received(self, frame) -> None:
        """A MESSAGE from our destinations. Anything malformed is counted and dropped."""
        self.stats["messages-in"] += 1
        try:
            sealer = self.sealer
            env = from_frame(frame) if sealer is None else sealer.open(frame, self.clock.seconds())
        except EnvelopeError as e:
            now = self.clock.seconds()
            refusal = None if sealer is None else sealer.rejected(e, self.stats, now)
            if refusal is not None:
                if refusal.loggable:
                    self.log.warn(
                        "dropped a message ({reason}; {count} so far{more}): {problem}",
                        reason=refusal.reason,
                        count=refusal.count,
                        more=f", {refusal.not_logged} not logged" if refusal.not_logged else "",
                        problem=refusal.problem,
                    )
                return  # counted by the sealer; logged at most once per kind per interval
            self.stats["malformed"] += 1
            if self.stats["malformed"] <= 10 or self.stats["malformed"] % 1000 == 0:
                self.log.warn(
                    "dropped a malformed message ({count} so far): {problem}",
                    count=self.stats["malformed"],
                    problem=str(e),
                )
            return
        if env.cluster != self.cluster or env.destination not in (self.name, BROADCAST):
            self.stats["foreign"] += 1
            return
        if env.source == self.name and env.incarnation == self.incarnation:
            return  # our own broadcast
        self.envelope_received(env)

    def envelope_received(self, env: Envelope) -> None:
        if logs.trace:
            self.log.debug(
                "received {type} from {source}/{resource} seq {seq}, {size} bytes",
                type=env.type.value,
                source=env.source,
                resource=env.resource,
                seq=env.seq,
                size=len(env.body),
            )
        self._heard(env)
        if not env.resource:
            self._node_message(env)
            return
        if env.type is MsgType.RESOLVE:
            if self.resolve_handler is not None:
                self.resolve_handler(env)
            else:
                self.answer_resolve(env, None, OpenFailure.ERROR)
            return
        if env.type is MsgType.RESOLVED:
            self._resolved(env.source, env.resource, env)
            return
        stream = self.streams.get((env.source, env.resource))
        if stream is not None:
            stream.receive(env)
        elif env.type is MsgType.OPEN and env.key in self._recently_closed:
            # A retransmitted OPEN of a stream that already ended here: do not reopen it.
            self._send(MsgType.RESET, env.source, env.resource, 0, b"")
        elif env.type is MsgType.OPEN and self.open_handler is not None:
            self.open_handler(env)
        elif env.type is MsgType.OPEN:
            self.stats["open-refused"] += 1
            self._send(
                MsgType.OPEN_FAIL,
                env.source,
                env.resource,
                0,
                encode_params(
                    {
                        "reason": OpenFailure.ERROR.value,
                        "message": f"node {self.name} is not a sink",
                    }
                ),
            )
        elif env.type not in (MsgType.CLOSE, MsgType.ACK, MsgType.RESET) or _is_resync(env):
            # A stream we do not know (closed already, or from a previous incarnation):
            # tell the peer so it stops sending.
            self.stats["unknown-stream"] += 1
            self._send(MsgType.RESET, env.source, env.resource, 0, b"")

    def _node_message(self, env: Envelope) -> None:
        if env.type is MsgType.PING:
            self._send(MsgType.PONG, env.source, "", 0, env.body)
        elif env.type is MsgType.PONG:
            self.stats["pongs"] += 1
            try:
                rtt = self.clock.seconds() - float(env.params().get("t", ""))
            except (ValueError, EnvelopeError):
                return
            if 0 <= rtt < 3600:  # our own ping's timestamp came back
                self.peer_rtt[env.source] = (self.clock.seconds(), rtt)
        else:
            self.stats["malformed"] += 1
