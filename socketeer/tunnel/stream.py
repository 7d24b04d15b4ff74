"""One relayed connection as one node sees it, and the transport its protocol writes to.

A stream orders its messages, carries half-close, keeps flow control, and is a Twisted
transport, as a TCP connection is, for one ordinary protocol attached to it
(``attach_protocol``): the stream calls its ``dataReceived``, ``readConnectionLost`` (an
``IHalfCloseableProtocol``) and ``connectionLost``; the protocol calls ``write``,
``loseWriteConnection``, ``loseConnection`` and registers its producer. On a source or a
sink that protocol is usually ``relay.SocketWriter``, joining the stream to a local socket;
the HTTP proxy attaches a response reader, ``socketeer connect`` standard input and output.
The story of a stream, from the source:

    (OPENING) local connect      -> send OPEN; what the protocol writes is sent optimistically
    (OPENING) rx OPEN_OK         -> (OPEN)
    (OPENING) rx OPEN_FAIL       -> connectionLost -> (CLOSED)
    (OPENING) open timer expires -> send CLOSE, connectionLost -> (CLOSED)
    (any)     write()            -> send DATA       ; loseWriteConnection() -> send EOF
    (any)     rx DATA            -> dataReceived    ; rx EOF -> readConnectionLost
    (any)     rx CLOSE           -> connectionLost, -> (CLOSED)
    (any)     rx RESET           -> connectionLost, -> (CLOSED)   (peer has no such stream)
    (any)     loseConnection()   -> send CLOSE, connectionLost, -> (CLOSED)
    (any)     peer silent > grace -> send CLOSE, connectionLost -> (CLOSED)   (node decides)

On a sink the stream is born on rx OPEN (OPENING while the outbound connect runs), answers
OPEN_OK (``accept``) or OPEN_FAIL (``refuse``), and then behaves the same way.

Ordering and resumption: every message except ACK and RESET carries a per-direction
sequence number; messages that arrive early wait in a bounded reorder buffer, duplicates are
dropped. Each sequenced message stays in an outbox until the peer's ACK says it arrived
(``s``). When the channel comes back after a broker restart or a failover, the stream
resends its outbox and sends an ACK with ``r=1`` asking the peer to resend what it missed;
and the peer answers with its outbox and its last ACK again; so a broker outage is a pause,
not a reset.

Flow control, SSH-window style: the sender never has more than ``window`` bytes that the
peer has not acknowledged; beyond that it pauses the producer registered on the stream (the
local socket's reading). The receiver acknowledges bytes once they are delivered to its
protocol, and withholds acknowledgements while the stream is paused as a producer (the
local socket's transport is full). So a slow reader anywhere stops the fast writer at the
other end, and each side holds at most one window. Like a TCP receive window, pausing
withholds credit: what the peer sent before it ran out (at most a window) still arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import fastwrite
from socketeer.tunnel.reasons import OpenFailure
from socketeer.wire.envelope import Envelope, EnvelopeError, MsgType, encode_params

#: A reorder buffer larger than this means the peer is broken or hostile.
MAX_REORDER = 4096
#: Largest payload in one DATA message. Local sockets are read in chunks this big
#: (``fastwrite.large_reads``): fewer, larger messages cost far less per byte on every hop,
#: and stay well below brokers' frame limits (RabbitMQ: 4 MiB). Bigger writes are split.
MAX_DATA_MESSAGE = fastwrite.LARGE_READ

#: What the protocol's ``connectionLost`` gets: the stream ended cleanly (CLOSE either
#: way), or it was dropped (RESET, a failed open, an expired peer). Built once, as
#: Twisted's own ``connectionDone`` is.
ENDED = Failure(ConnectionDone("the stream was closed"))
DROPPED = Failure(ConnectionLost("the stream was dropped"))


class Phase(Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSED = "closed"


class StreamHost(TypingProtocol):
    """What a stream needs from its node: a way to send, and to be forgotten."""

    channel_paused: bool

    def send_stream_message(
        self, stream: Stream, kind: MsgType, seq: int, body: bytes = b""
    ) -> None: ...

    def stream_done(self, stream: Stream) -> None: ...

    def seconds(self) -> float: ...


@implementer(IAddress)
@dataclass(frozen=True)
class StreamAddress:
    """Where a stream leads, as ``getPeer``/``getHost`` report it: the peer node, the stream."""

    node: str
    resource: str


@implementer(ITransport, IConsumer, IPushProducer)
class Stream:
    """One relayed connection: a transport for its protocol, a peer node's stream on the other
    side."""

    log = Logger()

    def __init__(
        self,
        host: StreamHost,
        peer: str,
        resource: str,
        window: int,
        *,
        target: str = "",
        client: str = "",
        rx_seq: int = 0,
    ) -> None:
        self.host = host
        self.peer = peer
        self.resource = resource
        self.window = window
        self.target = target
        self.client = client
        self._phase = Phase.OPENING
        self.started = host.seconds()
        self.failure: OpenFailure | None = None
        self.on_open: Callable[[Stream, dict[str, str]], None] | None = None
        self.on_open_failed: Callable[[Stream, OpenFailure, str], None] | None = None
        self.on_finish: Callable[[Stream], None] | None = None
        self.open_timer: IDelayedCall | None = None
        self.retry_timer: IDelayedCall | None = None  # the node's OPEN retransmission
        self.protocol: IProtocol | None = None  # what runs on the stream, once attached
        self._half_closeable = False  # the protocol takes readConnectionLost
        self._producer: IPushProducer | None = None  # what the window pauses (the protocol's)
        self._tx_seq = 0
        self._rx_seq = rx_seq
        self._reorder: dict[int, Envelope] = {}
        self._pending: list[Envelope] = []  # remote messages that arrived before the protocol
        self.sent = 0  # payload bytes sent to the peer
        self._peer_consumed = 0  # payload bytes the peer has acknowledged
        self.delivered = 0  # payload bytes delivered to the protocol
        self._acked = 0  # the last acknowledgement we sent
        self._reading_paused = False
        self._consumer_paused = False
        self._eof_sent = False
        # Sequenced messages the peer has not acknowledged yet: resent after a reconnect.
        # Bounded by the window, since the peer acknowledges as it consumes.
        self._outbox: deque[tuple[int, MsgType, bytes]] = deque()
        self.peer_incarnation = ""  # the peer node's incarnation, from its first message

    @property
    def key(self) -> tuple[str, str]:
        return (self.peer, self.resource)

    @property
    def phase(self) -> Phase:
        """OPENING, OPEN or CLOSED; only the stream's own transitions change it."""
        return self._phase

    def __repr__(self) -> str:
        return f"<Stream {self.peer}/{self.resource} {self._phase.value} {self.target}>"

    # -- sending ---------------------------------------------------------------------------

    def send(self, kind: MsgType, body: bytes = b"") -> None:
        """Send a sequenced message on this stream, keeping it until the peer has it."""
        seq = self._tx_seq
        self._tx_seq += 1
        self._outbox.append((seq, kind, body))
        self.host.send_stream_message(self, kind, seq, body)

    def _send_ack(self, resync: bool = False, *, repeat: bool = False) -> None:
        # n: payload bytes consumed (flow control); s: next sequence number expected
        # (what may leave the peer's outbox); r: "resend what I have not got".
        # ``repeat``: say again what we acknowledged last (no new credit).
        if not repeat:
            self._acked = self.delivered
        params: dict[str, int] = {"n": self._acked, "s": self._rx_seq}
        if resync:
            params["r"] = 1
        self.host.send_stream_message(self, MsgType.ACK, 0, encode_params(params))

    def resync(self) -> None:
        """After the channel came back: resend our unacknowledged messages, ask for theirs."""
        if self._phase is Phase.CLOSED:
            return
        self._retransmit()
        self._send_ack(resync=True)

    def _retransmit(self) -> None:
        for seq, kind, body in list(self._outbox):
            self.host.send_stream_message(self, kind, seq, body)

    @property
    def unacknowledged(self) -> int:
        """Messages kept for retransmission (for tests and status)."""
        return len(self._outbox)

    # -- the sink's answer -----------------------------------------------------------------

    def accept(self, host: str, port: int) -> None:
        """The sink's outbound connection is up: (OPEN), and the peer learns the bound address."""
        self._phase = Phase.OPEN
        self.send(MsgType.OPEN_OK, encode_params({"host": host, "port": port}))

    def refuse(self, reason: OpenFailure, message: str, *, detail: str | None = None) -> None:
        """The sink cannot open the stream: answer OPEN_FAIL with ``message``, and end here.

        ``detail`` is logged instead of ``message`` when the peer must not learn it (the
        sink's policy rule). A stream that ended meanwhile is left alone.
        """
        if self._phase is Phase.CLOSED:
            return
        self.send(MsgType.OPEN_FAIL, encode_params({"reason": reason.value, "message": message}))
        self.fail(reason, message if detail is None else detail, notify_peer=False)

    # -- ITransport, IConsumer: what the protocol on the stream calls ------------------------

    def attach_protocol(self, protocol: IProtocol) -> None:
        """Connect ``protocol`` to this stream, as a transport does, then hand over what was
        waiting for it. The protocol registers its producer in ``connectionMade`` (before the
        first byte), so back-pressure holds from the start."""
        self.protocol = protocol
        self._half_closeable = IHalfCloseableProtocol.providedBy(protocol)
        protocol.makeConnection(self)
        if self._phase is Phase.CLOSED:
            self._close_local(ENDED if self.failure is None else DROPPED)
            return
        pending, self._pending = self._pending, []
        for env in pending:
            if self._phase is Phase.CLOSED:
                break
            self._deliver(env)

    def write(self, data: bytes) -> None:
        """Send ``data`` to the peer (split into messages of at most MAX_DATA_MESSAGE)."""
        if self._phase is Phase.CLOSED or self._eof_sent:
            return
        self.sent += len(data)
        if len(data) <= MAX_DATA_MESSAGE:
            self.send(MsgType.DATA, data)
        else:  # brokers cap frame sizes (RabbitMQ: 4 MiB by default); stay well below
            view = memoryview(data)
            for start in range(0, len(data), MAX_DATA_MESSAGE):
                self.send(MsgType.DATA, bytes(view[start : start + MAX_DATA_MESSAGE]))
        self.update_reading()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Half-close: the peer gets EOF once; what it sends still arrives."""
        if self._phase is Phase.CLOSED or self._eof_sent:
            return
        self._eof_sent = True
        self.send(MsgType.EOF)
        if self._half_closeable:
            self.protocol.writeConnectionLost()

    def loseConnection(self) -> None:
        """End the stream: the peer gets CLOSE, the protocol ``connectionLost``."""
        if self._phase is Phase.CLOSED:
            return
        self.send(MsgType.CLOSE)
        self._finish()
        self._close_local(ENDED)

    def getPeer(self) -> StreamAddress:
        return StreamAddress(self.peer, self.resource)

    def getHost(self) -> StreamAddress:
        return StreamAddress(self.peer, self.resource)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """The protocol's producer, paused while the window is spent or the channel is full."""
        if not streaming:
            raise ValueError("a stream takes push producers only")
        if self._producer is not None:
            raise RuntimeError(f"{self!r} has a producer already: {self._producer!r}")
        self._producer = producer
        self._reading_paused = False
        self.update_reading()

    def unregisterProducer(self) -> None:
        self._producer = None

    def update_reading(self) -> None:
        """Pause or resume the registered producer: window exhausted or channel congested."""
        producer = self._producer
        if producer is None:
            return
        pause = (
            self._phase is Phase.CLOSED
            or self.host.channel_paused
            or self.sent - self._peer_consumed >= self.window
        )
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                producer.pauseProducing()
            else:
                producer.resumeProducing()

    # -- IPushProducer: whoever consumes what the stream delivers is full or drained --------

    def pauseProducing(self) -> None:
        self._consumer_paused = True

    def resumeProducing(self) -> None:
        self._consumer_paused = False
        if self.delivered > self._acked and self._phase is not Phase.CLOSED:
            self._send_ack()

    def stopProducing(self) -> None:
        # The consumer is gone; its protocol's connectionLost ends the stream.
        self._consumer_paused = True

    # -- messages from the peer ------------------------------------------------------------

    def receive(self, env: Envelope) -> None:
        if self._phase is Phase.CLOSED:
            return
        if not self.peer_incarnation:
            self.peer_incarnation = env.incarnation
        if env.type is MsgType.ACK:
            try:
                params = env.params()
                consumed = int(params.get("n", "0"))
                received = int(params.get("s", "0"))
            except (ValueError, EnvelopeError):
                return
            outbox = self._outbox
            while outbox and outbox[0][0] < received:
                outbox.popleft()
            if params.get("r") == "1":
                self._retransmit()
                # Our last ACK may have been lost with the connection too: without it the
                # peer, its window spent, would wait for ever.
                self._send_ack(repeat=True)
            if consumed > self._peer_consumed:
                self._peer_consumed = min(consumed, self.sent)
                self.update_reading()
            return
        if env.type is MsgType.RESET:
            if self._phase is Phase.OPENING:
                self.fail(OpenFailure.ERROR, "peer has no such stream", notify_peer=False)
            else:
                self.abort()
            return
        if env.seq != self._rx_seq:
            if env.seq > self._rx_seq:
                if len(self._reorder) >= MAX_REORDER:
                    self.log.warn("stream {stream}: reorder buffer overflow", stream=self)
                    self.abort()
                    return
                self._reorder[env.seq] = env
            return  # an early message waits; a duplicate is dropped
        self._rx_seq += 1
        self._handle(env)
        while self._phase is not Phase.CLOSED and self._rx_seq in self._reorder:
            env = self._reorder.pop(self._rx_seq)
            self._rx_seq += 1
            self._handle(env)

    def _handle(self, env: Envelope) -> None:
        kind = env.type
        if kind is MsgType.OPEN_OK:
            if self._phase is Phase.OPENING:
                self._phase = Phase.OPEN
                self._cancel_open_timer()
                if self.on_open is not None:
                    self.on_open(self, env.params())
        elif kind is MsgType.OPEN_FAIL:
            params = env.params()
            reason = OpenFailure.parse(params.get("reason", ""))
            self.fail(reason, params.get("message", ""), notify_peer=False)
        elif self.protocol is None:
            if kind is MsgType.CLOSE:
                self._finish()  # e.g. the client left while the sink was still connecting
                return
            self._pending.append(env)
        else:
            self._deliver(env)

    def _deliver(self, env: Envelope) -> None:
        kind = env.type
        if kind is MsgType.DATA:
            self.protocol.dataReceived(env.body)
            self.delivered += len(env.body)
            if not self._consumer_paused and self.delivered - self._acked >= self.window // 4:
                self._send_ack()
        elif kind is MsgType.EOF:
            if self._half_closeable:
                self.protocol.readConnectionLost()
            else:  # as a TCP transport does for a protocol that cannot half-close
                self.loseConnection()
        elif kind is MsgType.CLOSE:
            self._finish()
            self._close_local(ENDED)

    # -- ending ----------------------------------------------------------------------------

    def fail(self, reason: OpenFailure, message: str = "", *, notify_peer: bool = True) -> None:
        """The stream could not open: tell whoever waits (``on_open_failed``), then the
        protocol on the stream, if one is attached."""
        if self._phase is Phase.CLOSED:
            return
        self.failure = reason
        self.log.info(
            "stream {resource} to {target} failed to open: {reason} {message}",
            resource=self.resource,
            target=self.target,
            reason=reason.value,
            message=message,
        )
        if notify_peer:
            self.send(MsgType.CLOSE)
        self._finish()
        if self.on_open_failed is not None:
            self.on_open_failed(self, reason, message)
        self._close_local(DROPPED)

    def abort(self) -> None:
        """Drop the stream without a word to the peer (the channel is gone or it misbehaved)."""
        if self._phase is Phase.CLOSED:
            return
        self._finish()
        self._close_local(DROPPED)

    def _close_local(self, reason: Failure) -> None:
        """Tell the protocol on the stream that it has ended (it closes its socket)."""
        protocol = self.protocol
        if protocol is not None:
            self._producer = None
            protocol.connectionLost(reason)

    def expire(self) -> None:
        """The peer node has been unreachable too long: end the stream toward our side."""
        if self._phase is Phase.OPENING:
            self.fail(OpenFailure.NO_SINK, "peer node unreachable")
        else:
            self.shutdown()

    def shutdown(self) -> None:
        """Close cleanly on service stop: tell the peer, end the protocol on the stream."""
        self.loseConnection()

    @property
    def heard_from_peer(self) -> bool:
        """Whether any message of the peer's for this stream has arrived (so it has the OPEN)."""
        return bool(self.peer_incarnation)

    def _cancel_open_timer(self) -> None:
        for timer in (self.open_timer, self.retry_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.open_timer = self.retry_timer = None

    def _finish(self) -> None:
        self._phase = Phase.CLOSED
        self._cancel_open_timer()
        self._reorder.clear()
        self._pending.clear()
        self._outbox.clear()
        if self.failure is None:
            self.log.info(
                "stream {resource} to {target} closed: {sent} bytes out, {delivered} bytes in,"
                " {duration:.3f}s",
                resource=self.resource,
                target=self.target,
                sent=self.sent,
                delivered=self.delivered,
                duration=self.host.seconds() - self.started,
            )
        self.host.stream_done(self)
        if self.on_finish is not None:
            self.on_finish(self)
