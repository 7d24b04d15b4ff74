"""Failover between brokers: an endpoint that dials the next broker of a list on each try.

``ClientService`` supplies the retry loop (exponential backoff with jitter); this endpoint
only decides *which* broker each attempt dials, and tells the channel factory so the
STOMP CONNECT carries that broker's own credentials and virtual host. How one broker is
dialled is the caller's ``dial`` (see :func:`socketeer.channel.endpoints.client_endpoint`),
so this module knows nothing of schemes or transports.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from socketeer.channel.url import ChannelSpec

__all__ = ["FailoverEndpoint"]


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """Round-robin over several brokers' endpoints (optionally shuffled once per round)."""

    log = Logger()

    def __init__(
        self,
        specs: Sequence[ChannelSpec],
        dial: Callable[[ChannelSpec], IStreamClientEndpoint],
        *,
        randomize: bool = False,
    ) -> None:
        self._specs = list(specs)
        self._dial = dial
        self._randomize = randomize
        self._round: list[ChannelSpec] = []
        self.current: ChannelSpec | None = None

    def _next(self) -> ChannelSpec:
        if not self._round:
            self._round = list(self._specs)
            if self._randomize:
                random.shuffle(self._round)
        return self._round.pop(0)

    def connect(self, protocolFactory: Factory) -> Deferred:
        spec = self._next()
        self.current = spec
        use = getattr(protocolFactory, "use_spec", None)
        if use is not None:
            use(spec)
        self.log.debug("dialling broker {host}:{port}", host=spec.host, port=spec.port)
        return self._dial(spec).connect(protocolFactory)

    def __repr__(self) -> str:
        brokers = ", ".join(f"{s.host}:{s.port}" for s in self._specs)
        return f"<FailoverEndpoint {brokers}>"
