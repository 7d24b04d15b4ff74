"""Test helpers for log output: events matching a predicate, and every event as text."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher


@contextlib.contextmanager
def captured_log(with_fields: bool = False) -> Iterator[list[str]]:
    """Every log event while inside, formatted; *with_fields* adds each event's repr, so a
    value in any field shows (not only what the format names)."""
    texts: list[str] = []

    def observe(event) -> None:
        text = formatEvent(event) or ""
        texts.append(f"{text}\n{event!r}" if with_fields else text)

    globalLogPublisher.addObserver(observe)
    try:
        yield texts
    finally:
        globalLogPublisher.removeObserver(observe)


class LogEvents:
    """Collects log events matching a predicate; ``wait(n)`` fires once n were seen."""

    def __init__(self, predicate) -> None:
        self.predicate = predicate
        self.events: list[dict] = []
        self._waiters: list[tuple[int, defer.Deferred]] = []
        globalLogPublisher.addObserver(self)

    def __call__(self, event: dict) -> None:
        if not self.predicate(event):
            return
        self.events.append(event)
        for n, d in list(self._waiters):
            if len(self.events) >= n and not d.called:
                self._waiters.remove((n, d))
                d.callback(self.events[:n])

    def wait(self, n: int = 1, timeout: float = 20) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if len(self.events) >= n:
            d.callback(self.events[:n])
            return d
        self._waiters.append((n, d))
        return d.addTimeout(timeout, reactor)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self)
