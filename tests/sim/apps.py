"""Simulated clients and targets: write a seeded byte script, record what arrives and how
the connection ended.

An :class:`Endpoint` is an ordinary Twisted protocol, so it runs on a simulated socket (a
client of the fixed forward, a sink's target) or directly on a stream (as ``socketeer
connect`` does). It obeys back-pressure (it is its transport's producer), may be a slow
reader (it pauses its transport for a while), and ends in one of a few ways (``Ending``).
What it records is what the invariants judge: the bytes received, whether an EOF came,
and whether the end was its own, clean (FIN / ``ConnectionDone``) or a reset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer


class Ending(Enum):
    """How an endpoint finishes once its script is written."""

    EOF = "eof"  # half-close, then close once the peer's EOF came (a relay's way)
    CLOSE_AFTER_EOF = "close-after-eof"  # wait for the peer's EOF, then close (a server)
    CLOSE = "close"  # close right after the script (abandon whatever else comes)
    HOLD = "hold"  # keep the connection open after the script until ``hold_until``


class End(Enum):
    SELF = "self"  # we closed it
    CLEAN = "clean"  # the other side ended it cleanly (FIN, ConnectionDone)
    RESET = "reset"  # reset (ConnectionLost, a dropped stream)
    DIED = "died"  # the process the endpoint lives in was killed


@dataclass
class Script:
    """What an endpoint writes and how it ends."""

    payload: bytes
    chunks: list[int]
    gap: float  # seconds between writes
    start: float  # seconds after connecting before the first write
    ending: Ending
    hold_until: float = 0.0
    #: (after seconds, for seconds): the endpoint stops reading for a while.
    pauses: tuple[tuple[float, float], ...] = ()
    greedy: bool = False  # ignores back-pressure (a misbehaving writer)


@implementer(IHalfCloseableProtocol, IPushProducer)
class Endpoint(Protocol):
    """One simulated client or target."""

    def __init__(self, clock: Clock, label: str, script: Script) -> None:
        self.clock = clock
        self.label = label
        self.script = script
        self.received = bytearray()
        self.written = 0  # bytes of the payload written so far
        self.write_done = False  # no more writes will come
        #: We ended our writing on purpose (EOF or close): the peer may see a clean end.
        self.finished = False
        self.eof = False  # the peer's EOF arrived
        self.end: End | None = None
        self.end_time: float | None = None
        self.connected_at: float | None = None
        self._paused = False  # our transport's window/buffer is full
        self._next = 0  # next chunk
        self._closing_self = False
        self._timer = None
        self._reading = True
        self._unread = 0  # bytes that arrived while we were not reading
        #: The most bytes that arrived during one pause (a stream's back-pressure bound).
        self.peak_unread = 0

    def __repr__(self) -> str:
        return f"<Endpoint {self.label}>"

    @property
    def live(self) -> bool:
        return self.end is None

    # -- Twisted protocol ----------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_at = self.clock.seconds()
        self.transport.registerProducer(self, True)
        self._later(self.script.start, self._write_some)
        for after, duration in self.script.pauses:
            self._later(after, self._pause_reading, duration)
        if self.script.ending is Ending.HOLD:
            self._later(self.script.hold_until, self._close)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self._reading:
            self._unread += len(data)
            self.peak_unread = max(self.peak_unread, self._unread)

    def readConnectionLost(self) -> None:
        self.eof = True
        self._maybe_finish()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.end is not None:
            return
        if self._closing_self:
            self.end = End.SELF
        elif reason is not None and reason.check(ConnectionDone):
            self.end = End.CLEAN
        else:
            self.end = End.RESET
        self.end_time = self.clock.seconds()
        self.write_done = True

    def died(self) -> None:
        """The process this endpoint lives in was killed (a stream-attached endpoint)."""
        if self.end is None:
            self.end, self.end_time, self.write_done = End.DIED, self.clock.seconds(), True

    def reset_seen(self) -> None:
        """Our socket to a killed process was reset (the kernel's RST)."""
        if self.end is None:
            self.end, self.end_time, self.write_done = End.RESET, self.clock.seconds(), True

    # -- IPushProducer: our transport is full, or drained --------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            if self.end is None and not self.write_done and self._timer is None:
                self._later(0, self._write_some)

    def stopProducing(self) -> None:
        self._paused = True

    # -- the script ----------------------------------------------------------------------

    def _later(self, delay: float, f: Callable[..., object], *args: object) -> None:
        if f is self._write_some:
            self._timer = self.clock.callLater(delay, f, *args)
        else:
            self.clock.callLater(delay, f, *args)

    def _write_some(self) -> None:
        self._timer = None
        if self.end is not None or self.write_done:
            return
        if self._paused and not self.script.greedy:
            return  # resumeProducing writes on
        chunks = self.script.chunks
        if self._next < len(chunks):
            size = chunks[self._next]
            self._next += 1
            data = self.script.payload[self.written : self.written + size]
            self.written += size
            self.transport.write(data)
            if self.end is None:
                self._later(self.script.gap, self._write_some)
            return
        self._script_done()

    def _script_done(self) -> None:
        ending = self.script.ending
        if ending is Ending.EOF:
            self.write_done = self.finished = True
            self.transport.loseWriteConnection()
            self._maybe_finish()
        elif ending is Ending.CLOSE:
            self._close()
        elif ending is Ending.CLOSE_AFTER_EOF:
            self.write_done = True  # it only closes now
            self._maybe_finish()
        # HOLD: the hold timer closes

    def _maybe_finish(self) -> None:
        if self.end is not None or not self.eof:
            return
        done = self._next >= len(self.script.chunks)
        if done and self.script.ending in (Ending.EOF, Ending.CLOSE_AFTER_EOF) and self.write_done:
            self._close()

    def _close(self) -> None:
        if self.end is not None:
            return
        self.write_done = self.finished = True
        self._closing_self = True
        self.transport.loseConnection()

    def _pause_reading(self, duration: float) -> None:
        if self.end is None:
            self._reading = False
            self.transport.pauseProducing()
            self.clock.callLater(duration, self._resume_reading)

    def _resume_reading(self) -> None:
        self._reading, self._unread = True, 0
        if self.end is None:
            self.transport.resumeProducing()
