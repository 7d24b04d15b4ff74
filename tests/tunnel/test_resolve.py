"""The RESOLVE RPC: pending requests answered, refused, timed out or cut off; the node's side."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.resolve import PendingResolves, ResolveError, answer_body, request_body
from socketeer.wire.envelope import Envelope, MsgType

from support.relay import Link
from support.sessions import from_peer, handshake, hello_ok, session_messages, source_node


def answer(
    rid: str, body: bytes, source: str = "si", pinc: str = "me", inc: str = "p1"
) -> Envelope:
    return Envelope(MsgType.RESOLVED, "c", source, "so", rid, 0, 0, inc, body, pinc)


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


def resolves(link: Link) -> list[Envelope]:
    return [e for e in link.sent if e.type is MsgType.RESOLVE]


def test_node_resolves_through_its_peer():
    node, clock, link = source_node()
    d = node.resolve("si", "example.org", reverse=True)
    (request,) = session_messages(link)
    assert request.type is MsgType.RESOLVE and request.params() == {
        "name": "example.org",
        "ptr": "1",
    }
    assert request.peer_incarnation == "p1"  # sent in the session
    node.envelope_received(answer(request.resource, answer_body("host.example")))
    assert outcome(d) == "host.example"
    assert not clock.getDelayedCalls()  # the answer stops the resend timer at once
    clock.advance(60)
    assert len(session_messages(link)) == 1  # answered: never sent again
    assert not clock.getDelayedCalls()


def test_an_answer_for_another_incarnation_of_ours_is_not_taken():
    node, clock, link = source_node()
    d = node.resolve("si", "example.org")
    (request,) = resolves(link)
    node.envelope_received(answer(request.resource, answer_body("192.0.2.66"), pinc="earlier"))
    assert not d.called and node.stats.stale_session == 1
    node.envelope_received(answer(request.resource, answer_body("192.0.2.1")))
    assert outcome(d) == "192.0.2.1"


def test_a_resolve_waits_for_a_session_before_it_is_sent():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", channel_wait=10)
    link = Link()
    node.channel_ready(link)
    d = node.resolve("si", "example.org")
    assert resolves(link) == [] and node.snapshot().channel.waiting == 1
    assert [e.type for e in link.sent] == [MsgType.HELLO, MsgType.HELLO]  # broadcast, then si
    hello_ok(node)
    (request,) = resolves(link)
    assert request.peer_incarnation == "p1" and node.snapshot().channel.waiting == 0
    node.envelope_received(answer(request.resource, answer_body("192.0.2.9")))
    assert outcome(d) == "192.0.2.9"


def test_a_resolve_fails_when_the_peer_never_answers_the_handshake():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", channel_wait=10)
    node.channel_ready(Link())
    d = node.resolve("si", "example.org")
    clock.advance(10)
    error = outcome(d)
    assert error.reason is OpenFailure.CHANNEL_LOST
    assert node.stats.channel_wait_expired == 1


def test_a_resolve_waits_for_the_channel_and_goes_out_when_it_is_back():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", channel_wait=10)
    d = node.resolve("si", "example.org")
    assert not d.called and node.snapshot().channel.waiting == 1
    clock.advance(9)
    link = Link()
    node.channel_ready(link)
    assert resolves(link) == []  # not before the peer has answered our HELLO
    hello_ok(node)
    (request,) = resolves(link)
    assert node.snapshot().channel.waiting == 0
    node.envelope_received(answer(request.resource, answer_body("192.0.2.9")))
    assert outcome(d) == "192.0.2.9"
    assert node.stats.channel_waits == 1 and node.stats.channel_wait_expired == 0


def test_a_resolve_fails_when_the_channel_stays_down():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", channel_wait=10)
    d = node.resolve("si", "example.org")
    clock.advance(10)
    assert outcome(d).reason is OpenFailure.CHANNEL_LOST
    assert node.stats.channel_wait_expired == 1 and node.snapshot().channel.waiting == 0
    link = Link()
    node.channel_ready(link)
    hello_ok(node)
    assert resolves(link) == []  # given up: not sent later


def test_a_resolve_in_flight_rides_out_a_channel_loss_and_is_sent_again():
    node, clock, first = source_node()
    d = node.resolve("si", "example.org")
    node.channel_lost()
    assert not d.called
    second = Link()
    node.channel_ready(second)
    assert resolves(second) == []  # the session is confirmed again first
    hello_ok(node)
    (again,) = resolves(second)
    assert again.resource == resolves(first)[0].resource  # the same request id: one answer
    node.envelope_received(answer(again.resource, answer_body("192.0.2.1")))
    node.envelope_received(answer(again.resource, answer_body("192.0.2.2")))  # a duplicate
    assert outcome(d) == "192.0.2.1"


def test_a_resolve_in_flight_is_not_sent_to_a_restarted_peer_as_such():
    node, clock, link = source_node()
    d = node.resolve("si", "example.org")
    node.channel_lost()
    second = Link()
    node.channel_ready(second)
    hello_ok(node, inc="p2")  # the peer restarted meanwhile: the request goes to the new one
    (again,) = resolves(second)
    assert again.peer_incarnation == "p2"
    node.envelope_received(answer(again.resource, answer_body("192.0.2.3"), inc="p2"))
    assert outcome(d) == "192.0.2.3"


def test_an_unanswered_resolve_is_sent_again_with_backoff():
    node, clock, link = source_node()
    d = node.resolve("si", "example.org", timeout=30)
    for _ in range(30):
        clock.advance(1)
    assert outcome(d).reason is OpenFailure.TIMEOUT
    sends = resolves(link)
    # 0, 0.5, 1.5, 3.5, 7.5, 11.5, ... (the delay doubles up to 4 s)
    assert 5 <= len(sends) <= 10 and len({e.resource for e in sends}) == 1
    assert node.stats.retransmits == len(sends) - 1
    clock.advance(60)
    assert len(resolves(link)) == len(sends)


def sink_node(serving: bool) -> tuple[Node, Link, list[Envelope]]:
    """Sink node ``si`` (``sink``) with a session with source ``so`` (``src``)."""
    node = Node("c", "si", "t", Clock(), incarnation="sink")
    link = Link()
    node.channel_ready(link)
    handshake(node, peer="so", inc="src")
    served: list[Envelope] = []

    class Sink:
        def open(self, request: Envelope) -> None:  # pragma: no cover - not asked
            raise AssertionError

        def resolve(self, request: Envelope) -> None:
            served.append(request)

    if serving:
        node.serve(Sink())
    return node, link, served


def resolve_request(node: Node, pinc: str | None = None) -> Envelope:
    body = request_body("x", False)
    return from_peer(node, MsgType.RESOLVE, "src-r1", body=body, peer="so", inc="src", pinc=pinc)


@pytest.mark.parametrize("serving", [False, True])
def test_a_resolve_request_goes_to_the_sink_or_is_refused(serving: bool):
    node, link, served = sink_node(serving)
    request = resolve_request(node)
    node.envelope_received(request)
    if serving:
        assert served == [request] and not session_messages(link)
    else:
        (reply,) = session_messages(link)
        assert reply.type is MsgType.RESOLVED and reply.params() == {"reason": "error"}
        assert reply.peer_incarnation == "src"


def test_a_resolve_request_of_another_session_is_not_served():
    node, link, served = sink_node(True)
    node.envelope_received(resolve_request(node, pinc="earlier"))  # for an earlier life of ours
    assert served == []
    assert session_messages(link) == []
    assert link.sent[-1].type is MsgType.SESSION_RESET and link.sent[-1].peer_incarnation == "src"
    assert node.stats.stale_session == 1


def test_a_sink_looks_a_repeated_request_up_once_and_repeats_its_answer():
    node, link, served = sink_node(True)
    request = resolve_request(node)
    node.envelope_received(request)
    node.envelope_received(request)  # sent again while the lookup runs: dropped
    assert len(served) == 1 and not session_messages(link)
    node.answer_resolve(request, "192.0.2.5")
    node.envelope_received(request)  # sent again after the answer: the same answer, no lookup
    assert len(served) == 1
    answers = [e for e in link.sent if e.type is MsgType.RESOLVED]
    assert len(answers) == 2 and answers[0].body == answers[1].body
