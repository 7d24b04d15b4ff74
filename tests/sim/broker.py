"""A simulated STOMP broker cluster: topics by destination, latency, and a broker's faults.

Nodes publish real STOMP SEND frames (parsed here with the project's own parser) and
receive MESSAGE frames through ``Node.frame_received``. The cluster has one or more brokers
(failover URLs): a frame published on broker A reaches a subscriber on broker B through
the bridge. Ordering is what a real broker gives: FIFO from one broker to one subscriber
connection, so messages are reordered only across reconnects and failover (a node's new
path can overtake its old one). Losses happen where a real broker loses: frames in flight
on a connection that drops. ``harsh`` adds arbitrary loss and reordering anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stompest.protocol import StompFrame
from twisted.internet.task import Clock

from socketeer.wire.stompframing import StompFrameParser

from . import adapter


@dataclass
class Faults:
    """Probabilities and sizes of the broker's misbehaviour, drawn per run from the seed."""

    latency: tuple[float, float] = (0.001, 0.02)
    bridge_latency: float = 0.01
    duplicate: float = 0.0  # a message delivered twice (adjacent, or later when harsh)
    harsh: bool = False
    loss: float = 0.0  # harsh only: a message dropped for no reason
    reorder: float = 0.0  # harsh only: a message delayed past its FIFO position
    record: int = 64  # frames kept for replay


@dataclass(eq=False)
class Link:
    """One channel connection of a node to one broker (``ChannelLink`` for the node)."""

    hub: Hub
    owner: Callable[[StompFrame], None]  # the node's frame_received, via the world
    index: int  # which broker
    subscriptions: tuple[str, ...]
    alive: bool = True
    parser: StompFrameParser = field(default_factory=lambda: StompFrameParser("1.2"))
    last_arrival: float = 0.0
    fifo: dict[int, float] = field(default_factory=dict)

    @property
    def broker(self) -> str:
        return f"broker{self.index}:61613"

    def send_parts(self, parts: Sequence[bytes]) -> None:
        self.send_bytes(b"".join(parts))

    def send_bytes(self, data: bytes) -> None:
        if not self.alive:
            return  # the socket is gone; the node will learn of it from channel_lost
        for frame in self.parser.feed(data):
            if isinstance(frame, StompFrame) and frame.command == "SEND":
                self.hub.publish(self, frame)


class Hub:
    """The broker cluster: routes by destination, with latency, FIFO per path and faults."""

    def __init__(self, clock: Clock, rng: random.Random, brokers: int, faults: Faults) -> None:
        self.clock = clock
        self.rng = rng
        self.brokers = brokers
        self.faults = faults
        self.links: list[Link] = []
        self.recorded: list[tuple[str, StompFrame]] = []
        self.seen_streams: list[tuple[str, str, str]] = []  # (src, dst, stream) on the bus
        self.published = self.delivered = self.lost = self.duplicated = 0

    def attach(
        self, index: int, subscriptions: tuple[str, ...], owner: Callable[[StompFrame], None]
    ) -> Link:
        link = Link(self, owner, index, subscriptions)
        self.links.append(link)
        return link

    def detach(self, link: Link) -> None:
        link.alive = False
        if link in self.links:
            self.links.remove(link)

    def _latency(self) -> float:
        lo, hi = self.faults.latency
        return self.rng.uniform(lo, hi)

    def publish(self, link: Link, frame: StompFrame) -> None:
        self.published += 1
        now = self.clock.seconds()
        arrival = max(now + self._latency(), link.last_arrival)
        link.last_arrival = arrival
        self.clock.callLater(arrival - now, self._arrive, link, frame)

    def _arrive(self, link: Link, frame: StompFrame) -> None:
        if not link.alive:
            self.lost += 1  # in the publisher's socket when the connection dropped
            return
        message = StompFrame("MESSAGE", dict(frame.headers), frame.body)
        destination = frame.headers.get("destination", "")
        route = adapter.frame_route(frame)
        if route[2] and len(self.seen_streams) < 256:
            self.seen_streams.append(route)
        if len(self.recorded) < self.faults.record:
            self.recorded.append((destination, message))
        elif self.rng.random() < 0.05:
            self.recorded[self.rng.randrange(len(self.recorded))] = (destination, message)
        self.route(destination, message, link.index)

    def route(self, destination: str, message: StompFrame, source_broker: int) -> None:
        """Deliver ``message`` to every connection subscribed to ``destination`` now."""
        faults = self.faults
        rng = self.rng
        now = self.clock.seconds()
        for sub in list(self.links):
            if destination not in sub.subscriptions:
                continue
            if faults.harsh and rng.random() < faults.loss:
                self.lost += 1
                continue
            delay = self._latency()
            if sub.index != source_broker:
                delay += faults.bridge_latency
            at = now + delay
            if faults.harsh and rng.random() < faults.reorder:
                at += rng.uniform(0.0, 0.5)  # overtaken by what follows
            else:
                at = max(at, sub.fifo.get(source_broker, 0.0))
                sub.fifo[source_broker] = at
            self.clock.callLater(at - now, self._deliver, sub, message)
            if faults.duplicate and rng.random() < faults.duplicate:
                self.duplicated += 1
                extra = rng.uniform(0.0, 1.0) if faults.harsh else 0.0
                self.clock.callLater(at - now + extra, self._deliver, sub, message)

    def _deliver(self, sub: Link, message: StompFrame) -> None:
        if not sub.alive:
            self.lost += 1  # in the subscriber's socket when the connection dropped
            return
        self.delivered += 1
        sub.owner(message)

    def replay(self) -> None:
        """Deliver a recorded frame again to whoever subscribes to its destination now."""
        if self.recorded:
            destination, message = self.recorded[self.rng.randrange(len(self.recorded))]
            self.route(destination, message, self.rng.randrange(self.brokers))

    def inject(self, data: bytes, broker: int) -> None:
        """A stranger's SEND frame, published on ``broker``."""
        for frame in StompFrameParser("1.2").feed(data):
            if isinstance(frame, StompFrame):
                message = StompFrame("MESSAGE", dict(frame.headers), frame.body)
                self.route(frame.headers.get("destination", ""), message, broker)
