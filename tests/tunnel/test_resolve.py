"""The RESOLVE RPC: pending requests answered, refused, timed out or cut off; the node's side."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.resolve import PendingResolves, ResolveError, answer_body, request_body
from socketeer.wire.envelope import Envelope, MsgType

from support.relay import Link


def answer(rid: str, body: bytes, source: str = "si") -> Envelope:
    return Envelope(MsgType.RESOLVED, "c", source, "so", rid, 0, 0, "p1", body)


def outcome(d) -> object:
    results: list = []
    d.addBoth(results.append)
    (result,) = results
    return result.value if hasattr(result, "value") else result


def test_an_answer_fires_the_request_and_stops_its_timer():
    clock = Clock()
    pending = PendingResolves(clock)
    d = pending.expect("si", "r1", 30)
    pending.answered(answer("r1", answer_body("192.0.2.7")))
    assert outcome(d) == "192.0.2.7"
    assert not clock.getDelayedCalls() and len(pending) == 0


def test_a_refusal_carries_its_reason():
    pending = PendingResolves(Clock())
    d = pending.expect("si", "r1", 30)
    pending.answered(answer("r1", answer_body(None)))
    error = outcome(d)
    assert isinstance(error, ResolveError) and error.reason is OpenFailure.NAME_NOT_FOUND


def test_no_answer_in_time_is_a_timeout_and_a_late_one_is_ignored():
    clock = Clock()
    pending = PendingResolves(clock)
    d = pending.expect("si", "r1", 30)
    clock.advance(30)
    assert outcome(d).reason is OpenFailure.TIMEOUT
    pending.answered(answer("r1", answer_body("192.0.2.7")))  # too late: nothing happens
    pending.answered(answer("r1", answer_body("192.0.2.7"), source="other"))


def test_losing_the_channel_fails_every_pending_request():
    clock = Clock()
    pending = PendingResolves(clock)
    ds = [pending.expect("si", f"r{i}", 30) for i in range(2)]
    pending.fail_all(OpenFailure.CHANNEL_LOST)
    assert [outcome(d).reason for d in ds] == [OpenFailure.CHANNEL_LOST] * 2
    assert not clock.getDelayedCalls()


def test_bodies():
    assert request_body("example.org", True) == request_body("example.org", reverse=True)
    assert answer_body(None, OpenFailure.TIMEOUT) != answer_body(None)


def test_node_resolves_through_its_peer():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me")
    d = node.resolve("si", "example.org")
    assert outcome(d).reason is OpenFailure.CHANNEL_LOST  # no channel: at once
    link = Link()
    node.channel_ready(link)
    d = node.resolve("si", "example.org", reverse=True)
    (request,) = link.sent
    assert request.type is MsgType.RESOLVE and request.params() == {
        "name": "example.org",
        "ptr": "1",
    }
    node.envelope_received(answer(request.resource, answer_body("host.example")))
    assert outcome(d) == "host.example"
    d = node.resolve("si", "example.org")
    node.channel_lost()
    assert outcome(d).reason is OpenFailure.CHANNEL_LOST


@pytest.mark.parametrize("serving", [False, True])
def test_a_resolve_request_goes_to_the_sink_or_is_refused(serving: bool):
    node = Node("c", "si", "t", Clock(), incarnation="sink")
    link = Link()
    node.channel_ready(link)
    served: list[Envelope] = []

    class Sink:
        def open(self, request: Envelope) -> None:  # pragma: no cover - not asked
            raise AssertionError

        def resolve(self, request: Envelope) -> None:
            served.append(request)

    if serving:
        node.serve(Sink())
    request = Envelope(
        MsgType.RESOLVE, "c", "so", "si", "src-r1", 0, 0, "src", request_body("x", False)
    )
    node.envelope_received(request)
    if serving:
        assert served == [request] and not link.sent
    else:
        (reply,) = link.sent
        assert reply.type is MsgType.RESOLVED and reply.params() == {"reason": "error"}
