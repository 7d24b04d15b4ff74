"""Who may hold a connection to the embedded broker, and the count of everyone refused.

A stranger costs the broker a socket and a protocol instance until it logs in or its
handshake timer runs out, so the number of connections is capped in total and per source
address; over a cap a connection is refused at once. Every refusal (over a cap, a CONNECT
too large, a handshake that timed out or failed, a transaction limit) is counted by cause
for ``/metrics`` and logged at most once per cause every ``LOG_INTERVAL`` seconds, with the
number left unlogged, so a flood of strangers cannot flood the log.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from socketeer.config.defaults import (
    DEFAULT_BROKER_MAX_CONNECTIONS,
    DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS,
)

__all__ = ["LOG_INTERVAL", "Admission", "peer_host"]

#: Seconds between two log lines about refusals of the same cause.
LOG_INTERVAL = 10.0

#: The causes of refusals, as ``socketeer_broker_refused_total{reason}`` names them.
CONNECTIONS = "connections"
PER_ADDRESS = "connections-per-address"


def peer_host(addr: Any) -> str | None:
    """The IP address of a peer (``addr`` as ``buildProtocol`` gets it); None for unix sockets."""
    host = getattr(addr, "host", None)
    return host if isinstance(host, str) else None


class Admission:
    """I keep the connection caps and count (and log, sparingly) every refusal."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        max_connections: int = DEFAULT_BROKER_MAX_CONNECTIONS,
        max_per_address: int = DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS,
    ) -> None:
        self._clock = clock
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self._open = 0
        self._per_address: Counter[str] = Counter()
        #: Refusals so far, by cause (for ``/metrics``).
        self.refused: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """Connections admitted and not yet released."""
        return self._open

    def admit(self, host: str | None) -> str | None:
        """Take a slot for a new connection from ``host``; or the cause it is refused."""
        if self._open >= self.max_connections:
            return CONNECTIONS
        if host is not None and self._per_address[host] >= self.max_per_address:
            return PER_ADDRESS
        self._open += 1
        if host is not None:
            self._per_address[host] += 1
        return None

    def release(self, host: str | None) -> None:
        """Give back the slot of a connection that :meth:`admit` let in."""
        self._open -= 1
        if host is not None:
            self._per_address[host] -= 1
            if self._per_address[host] <= 0:
                del self._per_address[host]  # the map holds only addresses now connected

    def addresses(self) -> int:
        """How many source addresses hold connections now (bounded by ``max_connections``)."""
        return len(self._per_address)

    def refuse(self, cause: str, session: str, message: str) -> None:
        """Count a refusal; log it unless this cause was logged less than LOG_INTERVAL ago."""
        self.refused[cause] += 1
        now = self._clock.seconds()
        last = self._last_logged.get(cause)
        if last is not None and now - last < LOG_INTERVAL:
            self._unlogged[cause] += 1
            return
        self._last_logged[cause] = now
        unlogged = self._unlogged.pop(cause, 0)
        self.log.warn(
            "broker refused {session} ({cause}; {count} so far{more}): {message}",
            session=session,
            cause=cause,
            count=self.refused[cause],
            more=f", {unlogged} not logged" if unlogged else "",
            message=message,
        )
