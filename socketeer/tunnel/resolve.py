"""The RESOLVE RPC: remote name resolution through a sink node, its bodies and pending calls.

A source asks a sink to resolve a name (SOCKS5 RESOLVE / RESOLVE_PTR) with a RESOLVE message
whose resource id is the request id; the sink answers RESOLVED with an ``address`` or a
``reason``. :class:`PendingResolves` is the asking side: one Deferred per request, failed by
a timer, by the answer's reason, or by the channel going away.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from socketeer.tunnel.reasons import OpenFailure
from socketeer.wire.envelope import Envelope, EnvelopeError, encode_params

__all__ = ["PendingResolves", "ResolveError", "answer_body", "request_body"]


class ResolveError(Exception):
    """A remote name resolution failed; ``reason`` says why, in the front-ends' vocabulary."""

    def __init__(self, reason: OpenFailure) -> None:
        super().__init__(reason.value)
        self.reason = reason


def request_body(name: str, reverse: bool) -> bytes:
    """The body of a RESOLVE: the name (or, ``reverse``, the address) to look up."""
    return encode_params({"name": name, "ptr": int(reverse)})


def answer_body(address: str | None, failure: OpenFailure | None = None) -> bytes:
    """The body of a RESOLVED: the answer, or why there is none."""
    if address is not None:
        return encode_params({"address": address})
    return encode_params({"reason": (failure or OpenFailure.NAME_NOT_FOUND).value})


class PendingResolves:
    """The asking side: requests sent and not yet answered, by (peer, request id)."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._pending: dict[tuple[str, str], tuple[Deferred, IDelayedCall]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def expect(self, peer: str, rid: str, timeout: float) -> Deferred:
        """A request ``rid`` to ``peer``: the Deferred of its answer, failed after ``timeout``."""
        d: Deferred = Deferred()
        timer = self.clock.callLater(timeout, self._settle, peer, rid, None)
        self._pending[(peer, rid)] = (d, timer)
        return d

    def answered(self, env: Envelope) -> None:
        """A RESOLVED arrived; one for no pending request (late, or not ours) is ignored."""
        self._settle(env.source, env.resource, env)

    def fail(self, peer: str, rid: str, reason: OpenFailure) -> None:
        self._settle(peer, rid, None, reason)

    def fail_all(self, reason: OpenFailure) -> None:
        """Every pending request fails (the channel is gone: no answer can arrive)."""
        for peer, rid in list(self._pending):
            self._settle(peer, rid, None, reason)

    def _settle(
        self, peer: str, rid: str, env: Envelope | None, failure: OpenFailure | None = None
    ) -> None:
        entry = self._pending.pop((peer, rid), None)
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
