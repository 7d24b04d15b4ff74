"""Subscriptions and destination routing for the embedded broker; pure bookkeeping, no I/O.

Destinations:

* ``/queue/<name>``: each message goes to exactly one subscriber, round-robin.
  With no subscriber, messages wait (at most ``max_pending`` messages and
  ``max_pending_bytes`` bytes per queue, the oldest dropped first, and at most
  ``max_pending_total_bytes`` over all queues, the newest refused) and are
  handed to the next subscriber of that queue.
* anything else (``/topic/<name>`` by convention): every subscriber of exactly
  that destination gets a copy; with no subscriber the message is dropped.

Connections are opaque hashable keys (the broker uses its protocol objects);
messages are opaque too. The router returns :class:`Delivery` records and the
caller does the writing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Delivery", "DuplicateSubscription", "Router", "is_queue"]

QUEUE_PREFIX = "/queue/"


def is_queue(destination: str) -> bool:
    """Queues deliver to one subscriber; everything else fans out like a topic."""
    return destination.startswith(QUEUE_PREFIX)


class Delivery(NamedTuple):
    """Send ``message`` to ``connection`` for its subscription ``subscription_id``."""

    connection: Hashable
    subscription_id: str
    destination: str
    message: Any


class DuplicateSubscription(ValueError):
    """A connection reused a subscription id that is still active."""


@dataclass
class _Pending:
    """Messages waiting in one queue for a subscriber, as (message, size) pairs."""

    items: deque[tuple[Any, int]] = field(default_factory=deque)
    size: int = 0


class Router:
    """I know who subscribed to what and decide who receives each message.

    Subscriptions are keyed by ``(connection, subscription_id)``.
    """

    def __init__(
        self,
        max_pending: int = 1000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        max_pending_total_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_total_bytes = max_pending_total_bytes
        #: Messages dropped so far: topics with no subscriber, queue overflow.
        self.dropped = 0
        self._pending_total = 0
        # (connection, id) -> destination
        self._subscriptions: dict[tuple[Hashable, str], str] = {}
        # connection -> its subscription ids, in subscription order
        self._by_connection: dict[Hashable, dict[str, None]] = {}
        # destination -> subscribers; a deque so queues can rotate for round-robin
        self._by_destination: dict[str, deque[tuple[Hashable, str]]] = {}
        self._pending: dict[str, _Pending] = {}

    # -- subscriptions ---------------------------------------------------

    def subscribe(
        self, connection: Hashable, subscription_id: str, destination: str
    ) -> list[Delivery]:
        """Add a subscription; return queued messages it should receive now.

        Raises :class:`DuplicateSubscription` if the id is already in use on
        that connection.
        """
        key = (connection, subscription_id)
        if key in self._subscriptions:
            raise DuplicateSubscription(f"subscription id {subscription_id!r} already in use")
        self._subscriptions[key] = destination
        self._by_connection.setdefault(connection, {})[subscription_id] = None
        self._by_destination.setdefault(destination, deque()).append(key)
        pending = self._pending.pop(destination, None)
        if pending is None:
            return []
        self._pending_total -= pending.size
        return [Delivery(connection, subscription_id, destination, m) for m, _ in pending.items]

    def unsubscribe(self, connection: Hashable, subscription_id: str) -> str | None:
        """Remove one subscription; return its destination, or None if unknown."""
        key = (connection, subscription_id)
        destination = self._subscriptions.pop(key, None)
        if destination is None:
            return None
        ids = self._by_connection[connection]
        del ids[subscription_id]
        if not ids:
            del self._by_connection[connection]
        subscribers = self._by_destination[destination]
        subscribers.remove(key)
        if not subscribers:
            del self._by_destination[destination]
        return destination

    def remove_connection(self, connection: Hashable) -> int:
        """Forget every subscription of ``connection``; return how many there were."""
        ids = list(self._by_connection.get(connection, ()))
        for subscription_id in ids:
            self.unsubscribe(connection, subscription_id)
        return len(ids)

    def subscriptions(self, connection: Hashable) -> dict[str, str]:
        """The subscriptions of ``connection``: id -> destination."""
        return {
            sid: self._subscriptions[(connection, sid)]
            for sid in self._by_connection.get(connection, ())
        }

    def subscriber_count(self, destination: str) -> int:
        return len(self._by_destination.get(destination, ()))

    def pending_count(self, destination: str) -> int:
        """How many messages wait in queue ``destination``."""
        pending = self._pending.get(destination)
        return len(pending.items) if pending else 0

    # -- routing ---------------------------------------------------------

    def route(self, destination: str, message: Any, size: int = 0) -> list[Delivery]:
        """Decide who receives ``message``; ``size`` (bytes) bounds queue backlogs."""
        subscribers = self._by_destination.get(destination)
        if is_queue(destination):
            if subscribers:
                connection, subscription_id = subscribers[0]
                subscribers.rotate(-1)
                return [Delivery(connection, subscription_id, destination, message)]
            self._enqueue(destination, message, size)
            return []
        if not subscribers:
            self.dropped += 1
            return []
        return [Delivery(conn, sid, destination, message) for conn, sid in subscribers]

    def _enqueue(self, destination: str, message: Any, size: int) -> None:
        if (
            size > self.max_pending_bytes
            or self._pending_total + size > self.max_pending_total_bytes
        ):
            self.dropped += 1
            return
        pending = self._pending.setdefault(destination, _Pending())
        pending.items.append((message, size))
        pending.size += size
        self._pending_total += size
        while len(pending.items) > self.max_pending or pending.size > self.max_pending_bytes:
            _, old_size = pending.items.popleft()
            pending.size -= old_size
            self._pending_total -= old_size
            self.dropped += 1
