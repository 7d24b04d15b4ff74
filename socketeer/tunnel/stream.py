"""One relayed connection as one node sees it, and the transport its protocol writes to.

A stream orders its messages, carries half-close, keeps flow control, and is a Twisted
transport, as a TCP connection is, for one ordinary protocol attached to it
(``attach_protocol``): the stream calls its ``dataReceived``, ``readConnectionLost`` (an
``IHalfCloseableProtocol``) and ``connectionLost``; the protocol calls ``write``,
``loseWriteConnection``, ``loseConnection`` and registers its producer. On a source or a
sink that protocol is usually ``relay.SocketWriter``, joining the stream to a local socket;
the HTTP proxy attaches a response reader, ``socketeer connect`` standard input and output.

``docs/protocol.rst`` is the specification this module follows; in short, from the source:

    (OPENING) local connect      -> send OPEN; what the protocol writes is sent optimistically
    (OPENING) rx OPEN_OK         -> (OPEN)
    (OPENING) rx OPEN_FAIL       -> connectionLost(DROPPED) -> (CLOSED)
    (OPENING) open timer expires -> send RESET, connectionLost(DROPPED) -> (CLOSED)
    (any)     write()            -> send DATA (within the window)   ; loseWriteConnection() -> EOF
    (any)     rx DATA            -> dataReceived    ; rx EOF -> readConnectionLost
    (any)     rx CLOSE           -> ACK, connectionLost(ENDED) -> (CLOSED)
    (any)     loseConnection()   -> send CLOSE, connectionLost(ENDED) -> (CLOSING)
    (CLOSING) rx ACK of CLOSE    -> (CLOSED)        (until then CLOSE and what came before it
                                                     are kept and resent)
    (any)     rx RESET, window violated, session ended, peer silent > grace
                                 -> connectionLost(DROPPED) -> (CLOSED): the local socket is
                                    reset, never closed with a FIN, since bytes may be missing.

On a sink the stream is born on rx OPEN (OPENING while the outbound connect runs), answers
OPEN_OK (``accept``) or OPEN_FAIL (``refuse``), and then behaves the same way.

Ordering and resumption: every message except ACK and RESET carries a per-direction
sequence number; messages that arrive early wait in a reorder buffer bounded in entries and
bytes (one over the bound is dropped: it will be sent again), duplicates are dropped and
answered with an ACK. Each sequenced message stays in an outbox until the peer's ACK says it
arrived (``s``). ACKs go out at once after a control message and after data, once a quarter
window is delivered or after ``DELAYED_ACK`` seconds. Resynchronisation (the channel came
back, or the node's retransmission timer found a stale outbox) is an ACK with ``r=1``: the
peer drops what we have, resends from our ``s`` and answers with its own ``s`` (``r=2``), from
which we resend. So a broker outage is a pause, not a reset, and what arrived is not sent again
(but for the one round in which both ends resynchronise at once: the copies are dropped).

Flow control, SSH-window style: the window is the smaller of the two nodes' (the session
handshake tells each the other's). The sender never has more than a window of payload the
peer has not acknowledged; what the protocol writes beyond it waits here, and the
protocol's producer (the local socket's reading) is paused. The receiver acknowledges bytes
once they are delivered to its protocol and withholds that credit while the stream is paused
as a producer (the local socket's transport is full). A peer that sends past the window it
was granted has its stream reset. So a slow reader anywhere stops the fast writer at the other
end, and each side holds at most one window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple
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

#: Messages that may wait in a reorder buffer; one more early message is dropped (its
#: sender resends it), so a broken or hostile peer cannot make a stream hold more.
MAX_REORDER = 4096
#: Largest payload in one DATA message. Local sockets are read in chunks this big
#: (``fastwrite.large_reads``): fewer, larger messages cost far less per byte on every hop,
#: and stay well below brokers' frame limits (RabbitMQ: 4 MiB). Bigger writes are split.
MAX_DATA_MESSAGE = fastwrite.LARGE_READ
#: Seconds a receiver waits before acknowledging data that did not fill a quarter window
#: (TCP's delayed ACK is 40-200 ms): long enough that a short exchange is acknowledged by
#: its CLOSE's ACK alone and a chatty one with one message per period, short enough that an
#: idle stream's outbox empties well before the retransmission timer asks.
DELAYED_ACK = 0.2

#: What the protocol's ``connectionLost`` gets: the stream ended cleanly (CLOSE either
#: way), or it was dropped (RESET, a failed open, an expired peer). Built once, as
#: Twisted's own ``connectionDone`` is.
ENDED = Failure(ConnectionDone("the stream was closed"))
DROPPED = Failure(ConnectionLost("the stream was dropped"))


class Phase(Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"  # our CLOSE is sent, not yet acknowledged: kept for resending
    CLOSED = "closed"


class StreamHost(TypingProtocol):
    """What a stream needs from its node: a way to send, a clock, and to be forgotten."""

    channel_paused: bool

    def send_stream_message(
        self, stream: Stream, kind: MsgType, seq: int, body: bytes = b""
    ) -> None: ...

    def stream_done(self, stream: Stream) -> None: ...

    def seconds(self) -> float: ...

    def call_later(self, delay: float, f: Callable[[], object]) -> IDelayedCall: ...


@implementer(IAddress)
@dataclass(frozen=True)
class StreamAddress:
    """Where a stream leads, as ``getPeer``/``getHost`` report it: the peer node, the stream."""

    node: str
    resource: str


class Ack(NamedTuple):
    """An ACK's fields: ``n`` consumed, ``s`` next expected, ``r`` resync, ``w`` the window
    the receiver grants now (0: unchanged), ``b`` the sender is blocked on credit."""

    consumed: int
    received: int
    resync: str
    window: int
    blocked: bool


def parse_ack(body: bytes) -> Ack | None:
    """An ACK's fields (per message, so not through ``parse_qsl``); None if it is malformed.
    Keys it does not know are ignored, as ``decode_params`` would."""
    consumed = received = window = 0
    resync = ""
    blocked = False
    try:
        for pair in body.split(b"&"):
            key, _, value = pair.partition(b"=")
            if key == b"n":
                consumed = int(value)
            elif key == b"s":
                received = int(value)
            elif key == b"r":
                resync = value.decode("ascii")
            elif key == b"w":
                window = int(value)
            elif key == b"b":
                blocked = value == b"1"
    except (ValueError, UnicodeDecodeError):
        return None
    if consumed < 0 or received < 0 or window < 0:
        return None
    return Ack(consumed, received, resync, window, blocked)


class WindowViolation(Exception):
    """The peer sent past the window it was granted."""


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
        peer_incarnation: str = "",
    ) -> None:
        self.host = host
        self.peer = peer
        self.resource = resource
        #: The window we may send into (what the peer granted), and the one we grant; both
        #: start at the negotiated window, and grow (auto-tuning) up to ``max_window``.
        self.window = window
        self.rx_window = window
        self.max_window = window
        self._base_window = window
        self._blocked_asked = -1  # _tx_bytes when we last told the peer we were blocked
        self._grew_at = 0  # _received when our grant last grew
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
        self._reorder_bytes = 0
        self._pending: list[Envelope] = []  # remote messages that arrived before the protocol
        self.sent = 0  # payload bytes the protocol wrote (sent, or waiting for the window)
        self._tx_bytes = 0  # payload bytes sent to the peer
        self._peer_consumed = 0  # payload bytes the peer has acknowledged
        self._received = 0  # payload bytes taken in order from the peer
        self.delivered = 0  # payload bytes delivered to the protocol
        self._acked = 0  # the last acknowledgement we sent
        self._reading_paused = False
        self._consumer_paused = False
        self._eof_sent = False
        self._ack_timer: IDelayedCall | None = None
        #: Sequenced messages the peer has not acknowledged yet: resent on resynchronisation.
        #: Bounded by the window, since the peer acknowledges as it receives.
        self._outbox: deque[tuple[int, MsgType, bytes]] = deque()
        #: Messages the protocol sent that wait for window credit (sequenced when they go).
        self._unsent: deque[tuple[MsgType, bytes]] = deque()
        #: When the peer last acknowledged something new (or the outbox was empty).
        self.progress = self.started
        #: When the node's retransmission timer last resynchronised the stream.
        self.resent = self.started
        #: The peer node's incarnation: the session this stream belongs to.
        self.peer_incarnation = peer_incarnation
        self._heard = False
        #: The sequence number that follows the peer's CLOSE, once it was delivered.
        self.final_rx_seq: int | None = None
        #: When the stream became CLOSING.
        self.closing_since = 0.0
        #: When the peer last sent on this stream, and when we last asked it about the stream.
        self.last_rx = self.started
        self.probed = self.started

    @property
    def key(self) -> tuple[str, str]:
        return (self.peer, self.resource)

    @property
    def phase(self) -> Phase:
        """OPENING, OPEN, CLOSING or CLOSED; only the stream's own transitions change it."""
        return self._phase

    @property
    def live(self) -> bool:
        """Whether the protocol on the stream can still read or write (not CLOSING/CLOSED)."""
        return self._phase is Phase.OPENING or self._phase is Phase.OPEN

    def __repr__(self) -> str:
        return f"<Stream {self.peer}/{self.resource} {self._phase.value} {self.target}>"

    # -- sending ---------------------------------------------------------------------------

    def send(self, kind: MsgType, body: bytes = b"") -> None:
        """Send a sequenced message on this stream, keeping it until the peer has it.

        DATA beyond the window, and anything after such DATA, waits for credit.
        """
        if self._unsent or (
            kind is MsgType.DATA and self._tx_bytes + len(body) - self._peer_consumed > self.window
        ):
            self._unsent.append((kind, body))
            self._pump()
            return
        self._send_now(kind, body)

    def _send_now(self, kind: MsgType, body: bytes) -> None:
        seq = self._tx_seq
        self._tx_seq += 1
        if not self._outbox:
            self.progress = self.host.seconds()
        self._outbox.append((seq, kind, body))
        if kind is MsgType.DATA:
            self._tx_bytes += len(body)
        self.host.send_stream_message(self, kind, seq, body)

    def start_session(self, incarnation: str, window: int) -> None:
        """The handshake with the peer is done: the stream's messages, held until now (none
        has left), go out in the session, within the window it settled."""
        self.peer_incarnation = incarnation
        self.window = self.rx_window = self._base_window = min(self.window, window)
        self._blocked_asked = -1  # a b=1 said before the session was never sent
        held = self._outbox
        if held:
            self._tx_seq = held[0][0]
            self._tx_bytes -= sum(len(b) for _, k, b in held if k is MsgType.DATA)
            self._unsent.extendleft((k, b) for _, k, b in reversed(held))
            held.clear()
        self._pump()
        self.update_reading()

    def _pump(self) -> None:
        """Send what waited for window credit, as far as the credit goes."""
        unsent = self._unsent
        while unsent:
            kind, body = unsent[0]
            if kind is MsgType.DATA:
                room = self.window - (self._tx_bytes - self._peer_consumed)
                if room <= 0:
                    self._ask_for_window()
                    return
                if len(body) > room:
                    unsent[0] = (kind, body[room:])
                    self._send_now(kind, body[:room])
                    self._ask_for_window()
                    return
            unsent.popleft()
            self._send_now(kind, body)

    @property
    def grown(self) -> int:
        """Bytes our granted window grew by (from the node's window budget)."""
        return self.rx_window - self._base_window

    def _agree_max_window(self, env: Envelope) -> None:
        """The peer's cap (``mw`` in its OPEN or OPEN_OK): windows grow up to the smaller
        one. A peer that names none (or a node without auto-tuning) keeps the window fixed."""
        try:
            theirs = int(env.params().get("mw", "0"))
        except (ValueError, EnvelopeError):
            theirs = 0
        self.max_window = max(self._base_window, min(self.max_window, theirs))

    def _ask_for_window(self) -> None:
        """We wait for credit with data to send: tell the peer (once per window's worth),
        which grows the window if its reader keeps up (``docs/protocol.rst``)."""
        if self.window >= self.max_window or self._tx_bytes - self._blocked_asked < self.window:
            return
        self._blocked_asked = self._tx_bytes
        body = f"n={self._acked}&s={self._rx_seq}&b=1".encode("ascii")
        self.host.send_stream_message(self, MsgType.ACK, 0, body)

    def _grow(self) -> None:
        """The peer waits for our credit while our reader keeps up: the window is the
        bottleneck. Double what we grant, as far as the cap and the node's budget allow."""
        if (
            self._consumer_paused
            or self.rx_window >= self.max_window
            or self._phase is not Phase.OPEN
            or self.protocol is None
            # Evidence, not only the word: half a window arrived since we last grew it
            # (a repeated or idle ``b=1`` grows nothing).
            or self._received - self._grew_at < self.rx_window // 2
        ):
            return
        self._grew_at = self._received
        wanted = min(self.rx_window * 2, self.max_window) - self.rx_window
        granted = self.host.grow_window(self, wanted) if hasattr(self.host, "grow_window") else 0
        if granted > 0:
            self.rx_window += granted
            self._send_ack()

    def _send_ack(self, resync: int = 0) -> None:
        # n: payload bytes consumed (flow control credit); s: next sequence number expected
        # (what may leave the peer's outbox); r=1: "resend from s, and tell me your s";
        # r=2: the answer to r=1. Credit is withheld while our consumer is paused.
        self._cancel_ack_timer()
        if not self._consumer_paused:
            self._acked = self.delivered
        # Written directly (the same text encode_params gives): this is per message.
        body = (
            f"n={self._acked}&s={self._rx_seq}&r={resync}"
            if resync
            else (f"n={self._acked}&s={self._rx_seq}")
        )
        if self.rx_window > self._base_window:  # w: the window we grant, once grown
            body += f"&w={self.rx_window}"
        self.host.send_stream_message(self, MsgType.ACK, 0, body.encode("ascii"))

    def acknowledge(self) -> None:
        """Acknowledge what arrived so far, now (a sink, for the OPEN it is connecting for)."""
        if self._phase is not Phase.CLOSED:
            self._send_ack()

    def _schedule_ack(self) -> None:
        if self._ack_timer is None:
            self._ack_timer = self.host.call_later(DELAYED_ACK, self._delayed_ack)

    def _delayed_ack(self) -> None:
        self._ack_timer = None
        if self._phase is not Phase.CLOSED:
            self._send_ack()

    def _cancel_ack_timer(self) -> None:
        timer = self._ack_timer
        if timer is not None:
            self._ack_timer = None
            if timer.active():
                timer.cancel()

    def resync(self) -> None:
        """The channel came back, or our outbox went unacknowledged too long: ask the peer
        for its position (and give ours), so each side resends exactly what the other lacks.

        A stream the peer has not been heard on yet resends its OPEN instead: the peer may
        never have had it (and it drops a copy of one it had).
        """
        if self._phase is Phase.CLOSED:
            return
        if not self._heard:
            self.retransmit()
            return
        self._send_ack(resync=1)

    def retransmit(self, start: int = 0) -> None:
        """Send again what the outbox holds from sequence number ``start`` on."""
        for seq, kind, body in list(self._outbox):
            if seq >= start:
                self.host.send_stream_message(self, kind, seq, body)

    @property
    def unacknowledged(self) -> int:
        """Messages kept for retransmission (for tests and status)."""
        return len(self._outbox)

    @property
    def buffered(self) -> int:
        """Payload bytes this stream holds: unacknowledged, waiting for credit, early, and
        received before a protocol was attached (for memory bounds)."""
        return (
            sum(len(b) for _, _, b in self._outbox)
            + sum(len(b) for _, b in self._unsent)
            + self._reorder_bytes
            + sum(len(e.body) for e in self._pending)
        )

    # -- the sink's answer -----------------------------------------------------------------

    def accept(self, host: str, port: int) -> None:
        """The sink's outbound connection is up: (OPEN), and the peer learns the bound address."""
        if self._phase is not Phase.OPENING:
            return
        self._phase = Phase.OPEN
        params = {"host": host, "port": port, "mw": self.max_window}
        self.send(MsgType.OPEN_OK, encode_params(params))

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
        if not self.live:
            clean = self.failure is None and self.final_rx_seq is not None
            self._close_local(ENDED if clean else DROPPED)
            return
        pending, self._pending = self._pending, []
        for env in pending:
            if not self.live:
                break
            self._deliver(env)

    def write(self, data: bytes) -> None:
        """Send ``data`` to the peer (split into messages of at most MAX_DATA_MESSAGE)."""
        if not self.live or self._eof_sent or not data:
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
        if not self.live or self._eof_sent:
            return
        self._eof_sent = True
        self.send(MsgType.EOF)
        if self._half_closeable:
            self.protocol.writeConnectionLost()

    def loseConnection(self) -> None:
        """End the stream: the peer gets CLOSE, the protocol ``connectionLost``.

        The stream stays (CLOSING) until the peer acknowledges the CLOSE, so that what we
        sent, and the CLOSE itself, can still be resent after an outage.
        """
        if not self.live:
            return
        self.send(MsgType.CLOSE)
        self._cancel_ack_timer()  # the peer ends on our CLOSE, and its outbox with it
        self._phase = Phase.CLOSING
        self.closing_since = self.host.seconds()
        self._cancel_open_timer()
        self._reorder.clear()
        self._reorder_bytes = 0
        self._pending.clear()
        self._close_local(ENDED)
        self._maybe_closed()

    def abortConnection(self) -> None:
        """Reset the stream: the peer's side is reset too (ITCPTransport's abort)."""
        self.reset()

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
        spent = self.sent - self._peer_consumed >= self.window
        pause = not self.live or self.host.channel_paused or spent
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                producer.pauseProducing()
                if spent and self.live:
                    self._ask_for_window()  # the window, not the channel, stops us
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
        self._heard = True  # (the node sets ``last_rx``: it has the time already)
        kind = env.type
        if kind is MsgType.ACK:
            self._receive_ack(env)
            return
        if kind is MsgType.RESET:
            if self._phase is Phase.OPENING:
                self.fail(OpenFailure.ERROR, "peer has no such stream", notify_peer=False)
            elif self._phase is Phase.CLOSING:
                self._finish()  # the peer has ended it too; nothing of ours waits
            else:
                self.abort()
            return
        seq = env.seq
        if seq != self._rx_seq:
            if seq < self._rx_seq:
                self._send_ack()  # a duplicate: our ACK may have been lost, say it again
                return
            if seq not in self._reorder and len(self._reorder) < MAX_REORDER:
                size = len(env.body)
                if self._received + self._reorder_bytes + size - self._acked > self.rx_window:
                    self._violated()
                    return
                self._reorder[seq] = env
                self._reorder_bytes += size
            return  # an early message waits (or, past the bound, is dropped and resent)
        if not self._take(env):
            return
        reorder = self._reorder
        while self._phase is not Phase.CLOSED and self._rx_seq in reorder:
            env = reorder.pop(self._rx_seq)
            self._reorder_bytes -= len(env.body)
            if not self._take(env):
                return

    def _take(self, env: Envelope) -> bool:
        """Handle the next message in order; False if the stream ended on it."""
        self._rx_seq += 1
        if env.type is MsgType.DATA:
            self._received += len(env.body)
            if self._received - self._acked > self.rx_window:
                self._violated()
                return False
        self._handle(env)
        return self._phase is not Phase.CLOSED

    def _violated(self) -> None:
        self.log.warn(
            "stream {resource} from node {peer}: the peer sent past the window of {window}"
            " bytes; resetting the stream",
            resource=self.resource,
            peer=self.peer,
            window=self.rx_window,
        )
        violations = getattr(self.host, "window_violated", None)
        if violations is not None:
            violations(self)
        self.reset()

    def _receive_ack(self, env: Envelope) -> None:
        parsed = parse_ack(env.body)
        if parsed is None:
            return
        consumed, received, resync, granted, blocked = parsed
        if granted > self.window:  # the peer grants a larger window (auto-tuning)
            self.window = min(granted, self.max_window)
            self._pump()
            self.update_reading()
        if blocked:
            self._grow()
        outbox = self._outbox
        popped = False
        while outbox and outbox[0][0] < received:
            outbox.popleft()
            popped = True
        if popped or not outbox:
            self.progress = self.host.seconds()
        if resync == "1":
            self.retransmit(received)
            self._send_ack(resync=2)
        elif resync == "2":
            self.retransmit(received)
        if consumed > self._peer_consumed:
            self._peer_consumed = min(consumed, self._tx_bytes)
            self._pump()
            self.update_reading()
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        if self._phase is Phase.CLOSING and not self._outbox and not self._unsent:
            self._finish()

    def _handle(self, env: Envelope) -> None:
        kind = env.type
        if self._phase is Phase.CLOSING:
            # We closed; what the peer sent meanwhile has nowhere to go. Acknowledge it, so
            # the peer's window and outbox drain, and end on its CLOSE.
            if kind is MsgType.DATA:
                self.delivered += len(env.body)
            self._send_ack()
            if kind is MsgType.CLOSE:
                self.final_rx_seq = self._rx_seq
                self._finish()
            return
        if kind is MsgType.OPEN_OK:
            if self._phase is Phase.OPENING:
                self._phase = Phase.OPEN
                self._cancel_open_timer()
                self._agree_max_window(env)
                # The answer proves the OPEN arrived: it leaves the outbox. Ours is not on
                # the connect's critical path: the client hears first, the ACK follows soon.
                outbox = self._outbox
                if outbox and outbox[0][0] == 0 and outbox[0][1] is MsgType.OPEN:
                    outbox.popleft()
                    self.progress = self.host.seconds()
                if self.on_open is not None:
                    self.on_open(self, env.params())
                if self._phase is not Phase.CLOSED:
                    self._schedule_ack()
        elif kind is MsgType.OPEN_FAIL:
            self._send_ack()
            params = env.params()
            reason = OpenFailure.parse(params.get("reason", ""))
            self.fail(reason, params.get("message", ""), notify_peer=False)
        elif self.protocol is None:
            # e.g. the sink is still connecting: all of it, a CLOSE too, waits for the
            # protocol (the client may have sent its request and left; the target gets it).
            self._pending.append(env)
            if kind is MsgType.DATA:
                self._schedule_ack()  # says what arrived (s); credit comes with delivery
            else:
                self._send_ack()
        else:
            self._deliver(env)

    def _deliver(self, env: Envelope) -> None:
        kind = env.type
        if kind is MsgType.DATA:
            self.protocol.dataReceived(env.body)
            self.delivered += len(env.body)
            if self._consumer_paused:
                self._schedule_ack()  # says what arrived (s), grants no credit
            elif self.delivered - self._acked >= self.rx_window // 4:
                self._send_ack()
            else:
                self._schedule_ack()
        elif kind is MsgType.EOF:
            # Delayed like data: a CLOSE usually follows soon, and its ACK says it all.
            self._schedule_ack()
            if self._half_closeable:
                self.protocol.readConnectionLost()
            else:  # as a TCP transport does for a protocol that cannot half-close
                self.loseConnection()
        elif kind is MsgType.CLOSE:
            self.final_rx_seq = self._rx_seq
            self._send_ack()
            self._finish()
            self._close_local(ENDED)

    # -- ending ----------------------------------------------------------------------------

    def fail(self, reason: OpenFailure, message: str = "", *, notify_peer: bool = True) -> None:
        """The stream could not open: tell whoever waits (``on_open_failed``), then the
        protocol on the stream, if one is attached. ``notify_peer`` resets the peer's side."""
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
        if notify_peer and self._tx_seq:
            self.host.send_stream_message(self, MsgType.RESET, 0)
        self._finish()
        if self.on_open_failed is not None:
            self.on_open_failed(self, reason, message)
        self._close_local(DROPPED)

    def abort(self) -> None:
        """Drop the stream without a word to the peer (its session or channel is gone): the
        local socket is reset."""
        if self._phase is Phase.CLOSED:
            return
        local = self._phase is not Phase.CLOSING
        self._finish()
        if local:
            self._close_local(DROPPED)

    def reset(self) -> None:
        """Drop the stream and tell the peer to reset its side too (RESET)."""
        if self._phase is Phase.CLOSED:
            return
        self.host.send_stream_message(self, MsgType.RESET, 0)
        self.abort()

    def _close_local(self, reason: Failure) -> None:
        """Tell the protocol on the stream that it has ended (it closes or resets its socket)."""
        protocol = self.protocol
        if protocol is not None:
            self._producer = None
            self.protocol = None
            protocol.connectionLost(reason)

    def expire(self) -> None:
        """The peer node has been unreachable too long: end the stream toward our side."""
        if self._phase is Phase.OPENING:
            self.fail(OpenFailure.NO_SINK, "peer node unreachable", notify_peer=False)
        else:
            self.abort()

    def shutdown(self) -> None:
        """Service stop: the streams die with the process, so both ends are reset (a clean
        CLOSE would claim that everything in flight arrived)."""
        self.reset()

    @property
    def heard_from_peer(self) -> bool:
        """Whether any message of the peer's for this stream has arrived (so it has the OPEN)."""
        return self._heard

    def _cancel_open_timer(self) -> None:
        for timer in (self.open_timer, self.retry_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.open_timer = self.retry_timer = None

    def _finish(self) -> None:
        clean = self._phase is Phase.CLOSING or self.final_rx_seq is not None
        self._phase = Phase.CLOSED
        self._cancel_open_timer()
        self._cancel_ack_timer()
        self._reorder.clear()
        self._reorder_bytes = 0
        self._pending.clear()
        self._outbox.clear()
        self._unsent.clear()
        if self.failure is None:
            self.log.info(
                "stream {resource} to {target} {how}: {sent} bytes out, {delivered} bytes in,"
                " {duration:.3f}s",
                resource=self.resource,
                target=self.target,
                how="closed" if clean else "reset",
                sent=self.sent,
                delivered=self.delivered,
                duration=self.host.seconds() - self.started,
            )
        self.host.stream_done(self)
        if self.on_finish is not None:
            self.on_finish(self)
