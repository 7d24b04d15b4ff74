"""One relayed TCP connection as one node sees it: ordering, half-close and flow control.

A stream joins a local TCP socket (the client's socket on a source, the outbound socket on a
sink) to the peer node's stream over the channel. The story of a stream, from the source:

    (OPENING) local connect      -> send OPEN; local bytes are sent optimistically (window)
    (OPENING) rx OPEN_OK         -> (OPEN)
    (OPENING) rx OPEN_FAIL       -> close the local socket -> (CLOSED)
    (OPENING) open timer expires -> send CLOSE, close the local socket -> (CLOSED)
    (any)     local bytes        -> send DATA            ; local FIN  -> send EOF
    (any)     rx DATA            -> write to local       ; rx EOF     -> local half-close
    (any)     rx CLOSE           -> close local socket, -> (CLOSED)
    (any)     rx RESET           -> close local socket, -> (CLOSED)   (peer has no such stream)
    (any)     local socket gone  -> send CLOSE, -> (CLOSED)
    (any)     peer silent > grace -> send CLOSE, close local socket -> (CLOSED)   (node decides)

On a sink the stream is born on rx OPEN (OPENING while the outbound connect runs), sends
OPEN_OK or OPEN_FAIL, and then behaves the same way.

Ordering and resumption: every message except ACK and RESET carries a per-direction
sequence number; messages that arrive early wait in a bounded reorder buffer, duplicates are
dropped. Each sequenced message stays in an outbox until the peer's ACK says it arrived
(``s``). When the channel comes back after a broker restart or a failover, the stream
resends its outbox and sends an ACK with ``r=1`` asking the peer to resend what it missed;
and the peer answers with its outbox and its last ACK again; so a broker outage is a pause,
not a reset.

Flow control, SSH-window style: the sender never has more than ``window`` bytes that the
peer has not acknowledged; beyond that it pauses reading its local socket. The receiver
acknowledges bytes once they are written to its local socket, and withholds acknowledgements
while that socket's transport has paused it (Twisted's push-producer API). So a slow reader
anywhere stops the fast writer at the other end, and each side holds at most one window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
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


@implementer(IPushProducer)
class Stream:
    """One relayed connection: the local socket on one side, a peer node's stream on the other."""

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
        self.phase = Phase.OPENING
        self.started = host.seconds()
        self.failure: OpenFailure | None = None
        self.on_open: Callable[[Stream, dict[str, str]], None] | None = None
        self.on_open_failed: Callable[[Stream, OpenFailure, str], None] | None = None
        self.on_finish: Callable[[Stream], None] | None = None
        self.open_timer: IDelayedCall | None = None
        self.transport = None  # the local socket's ITCPTransport once attached
        self._tx_seq = 0
        self._rx_seq = rx_seq
        self._reorder: dict[int, Envelope] = {}
        self._pending: list[Envelope] = []  # remote messages that arrived before attach()
        self.sent = 0  # payload bytes sent to the peer
        self._peer_consumed = 0  # payload bytes the peer has acknowledged
        self.delivered = 0  # payload bytes written to the local socket
        self._acked = 0  # the last acknowledgement we sent
        self._reading_paused = False
        self._consumer_paused = False
        self._eof_sent = False
        self._registered = False
        # Sequenced messages the peer has not acknowledged yet: resent after a reconnect.
        # Bounded by the window, since the peer acknowledges as it consumes.
        self._outbox: deque[tuple[int, MsgType, bytes]] = deque()
        self.peer_incarnation = ""  # the peer node's incarnation, from its first message

    @property
    def key(self) -> tuple[str, str]:
        return (self.peer, self.resource)

    def __repr__(self) -> str:
        return f"<Stream {self.peer}/{self.resource} {self.phase.value} {self.target}>"

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
        if self.phase is Phase.CLOSED:
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

    # -- the local socket ------------------------------------------------------------------

    def attach(self, transport) -> None:
        """The local socket exists: wire backpressure, then hand over what was waiting."""
        self.transport = transport
        if self.phase is Phase.CLOSED:
            transport.loseConnection()
            return
        transport.registerProducer(self, True)
        self._registered = True
        self.update_reading()
        pending, self._pending = self._pending, []
        for env in pending:
            self._deliver(env)

    def local_data(self, data: bytes) -> None:
        if self.phase is Phase.CLOSED or self._eof_sent:
            return
        self.sent += len(data)
        if len(data) <= MAX_DATA_MESSAGE:
            self.send(MsgType.DATA, data)
        else:  # brokers cap frame sizes (RabbitMQ: 4 MiB by default); stay well below
            view = memoryview(data)
            for start in range(0, len(data), MAX_DATA_MESSAGE):
                self.send(MsgType.DATA, bytes(view[start : start + MAX_DATA_MESSAGE]))
        self.update_reading()

    def local_eof(self) -> None:
        if self.phase is Phase.CLOSED or self._eof_sent:
            return
        self._eof_sent = True
        self.send(MsgType.EOF)

    def local_lost(self, reason: Failure | None = None) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.send(MsgType.CLOSE)
        self._finish()

    def update_reading(self) -> None:
        """Pause or resume reading the local socket: window exhausted or channel congested."""
        if self.transport is None:
            return
        pause = (
            self.phase is Phase.CLOSED
            or self.host.channel_paused
            or self.sent - self._peer_consumed >= self.window
        )
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # -- IPushProducer: the local socket's transport tells us it is full or drained ----------

    def pauseProducing(self) -> None:
        self._consumer_paused = True

    def resumeProducing(self) -> None:
        self._consumer_paused = False
        if self.delivered > self._acked and self.phase is not Phase.CLOSED:
            self._send_ack()

    def stopProducing(self) -> None:
        self._consumer_paused = True

    # -- messages from the peer ------------------------------------------------------------

    def receive(self, env: Envelope) -> None:
        if self.phase is Phase.CLOSED:
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
            if self.phase is Phase.OPENING:
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
        while self.phase is not Phase.CLOSED and self._rx_seq in self._reorder:
            env = self._reorder.pop(self._rx_seq)
            self._rx_seq += 1
            self._handle(env)

    def _handle(self, env: Envelope) -> None:
        kind = env.type
        if kind is MsgType.OPEN_OK:
            if self.phase is Phase.OPENING:
                self.phase = Phase.OPEN
                self._cancel_open_timer()
                if self.on_open is not None:
                    self.on_open(self, env.params())
        elif kind is MsgType.OPEN_FAIL:
            params = env.params()
            reason = OpenFailure.parse(params.get("reason", ""))
            self.fail(reason, params.get("message", ""), notify_peer=False)
        elif self.transport is None:
            if kind is MsgType.CLOSE:
                self._finish()  # e.g. the client left while the sink was still connecting
                return
            self._pending.append(env)
        else:
            self._deliver(env)

    def _deliver(self, env: Envelope) -> None:
        transport = self.transport
        kind = env.type
        if kind is MsgType.DATA:
            fastwrite.write(transport, env.body)
            self.delivered += len(env.body)
            if not self._consumer_paused and self.delivered - self._acked >= self.window // 4:
                self._send_ack()
        elif kind is MsgType.EOF:
            # No more writes: drop our producer first, or Twisted never half-closes a
            # transport whose producer it had paused.
            self._unregister()
            transport.loseWriteConnection()
        elif kind is MsgType.CLOSE:
            self._finish()
            self._close_local()

    # -- ending ----------------------------------------------------------------------------

    def fail(self, reason: OpenFailure, message: str = "", *, notify_peer: bool = True) -> None:
        """The stream could not open: tell whoever waits, close the local socket."""
        if self.phase is Phase.CLOSED:
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
        else:
            self._close_local()

    def abort(self) -> None:
        """Drop the stream without a word to the peer (the channel is gone or it misbehaved)."""
        if self.phase is Phase.CLOSED:
            return
        self._finish()
        self._close_local()

    def _close_local(self) -> None:
        """Close the local socket after it has written what it holds.

        The producer goes first: Twisted keeps a connection open while a registered
        producer is paused.
        """
        if self.transport is not None:
            self._unregister()
            self.transport.loseConnection()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def expire(self) -> None:
        """The peer node has been unreachable too long: end the stream toward our side."""
        if self.phase is Phase.OPENING:
            self.fail(OpenFailure.NO_SINK, "peer node unreachable")
        else:
            self.shutdown()

    def shutdown(self) -> None:
        """Close cleanly on service stop: tell the peer, close the local socket."""
        if self.phase is Phase.CLOSED:
            return
        self.send(MsgType.CLOSE)
        self.abort()

    def _cancel_open_timer(self) -> None:
        if self.open_timer is not None and self.open_timer.active():
            self.open_timer.cancel()
        self.open_timer = None

    def _finish(self) -> None:
        self.phase = Phase.CLOSED
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


@implementer(IHalfCloseableProtocol)
class StreamProtocol(Protocol):
    """The local socket's protocol: moves bytes and FIN between a TCP transport and a Stream.

    The same class serves the source's accepted client socket and the sink's outbound
    socket; only how the stream is found differs (``stream_for_connection``).
    """

    def __init__(self, stream_for_connection: Callable[[StreamProtocol], Stream | None]) -> None:
        self._stream_for_connection = stream_for_connection
        self.stream: Stream | None = None
        self._read_closed = False
        self._write_closed = False

    def connectionMade(self) -> None:
        fastwrite.large_reads(self.transport)
        fastwrite.no_delay(self.transport)
        self.stream = self._stream_for_connection(self)
        if self.stream is None:
            self.transport.loseConnection()
            return
        self.stream.attach(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.stream is not None:
            self.stream.local_data(data)

    def readConnectionLost(self) -> None:
        self._read_closed = True
        if self.stream is not None:
            self.stream.local_eof()
        self._maybe_done()

    def writeConnectionLost(self) -> None:
        self._write_closed = True  # we half-closed on the peer's EOF; reading may go on
        self._maybe_done()

    def _maybe_done(self) -> None:
        # Twisted does not end a connection whose halves were closed separately.
        if self._read_closed and self._write_closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        if self.stream is not None:
            self.stream.local_lost(reason)
