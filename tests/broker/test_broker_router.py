"""Router: topic fan-out, queue round-robin and backlog, subscription bookkeeping."""

from __future__ import annotations

import pytest

from socketeer.broker.router import Delivery, DuplicateSubscription, Router, is_queue


def receivers(deliveries: list[Delivery]) -> list[tuple[object, str]]:
    return [(d.connection, d.subscription_id) for d in deliveries]


def test_is_queue():
    assert is_queue("/queue/a")
    assert not is_queue("/topic/a")
    assert not is_queue("/queues/a")


def test_topic_fans_out_to_exact_destination_only():
    r = Router()
    r.subscribe("a", "1", "/topic/x")
    r.subscribe("b", "1", "/topic/x")
    r.subscribe("c", "1", "/topic/x/y")
    r.subscribe("d", "1", "/topic/")
    out = r.route("/topic/x", "m")
    assert receivers(out) == [("a", "1"), ("b", "1")]
    assert all(d.message == "m" and d.destination == "/topic/x" for d in out)


def test_topic_without_subscribers_drops():
    r = Router()
    assert r.route("/topic/x", "m") == []
    assert r.dropped == 1
    r.subscribe("a", "1", "/topic/x")
    assert r.route("/topic/x", "m2") == [Delivery("a", "1", "/topic/x", "m2")]


def test_two_subscriptions_of_one_connection_each_get_a_copy():
    r = Router()
    r.subscribe("a", "1", "/topic/x")
    r.subscribe("a", "2", "/topic/x")
    assert receivers(r.route("/topic/x", "m")) == [("a", "1"), ("a", "2")]


def test_queue_round_robin():
    r = Router()
    for conn in "abc":
        r.subscribe(conn, "s", "/queue/q")
    got = [receivers(r.route("/queue/q", i)) for i in range(6)]
    assert got == [[(c, "s")] for c in "abcabc"]


def test_queue_round_robin_survives_unsubscribe():
    r = Router()
    for conn in "abc":
        r.subscribe(conn, "s", "/queue/q")
    r.route("/queue/q", 0)  # a
    r.unsubscribe("b", "s")
    got = [receivers(r.route("/queue/q", i))[0][0] for i in range(4)]
    assert got == ["c", "a", "c", "a"]


def test_queue_keeps_messages_until_a_subscriber_comes():
    r = Router()
    assert r.route("/queue/q", "m1", size=10) == []
    assert r.route("/queue/q", "m2", size=10) == []
    assert r.pending_count("/queue/q") == 2
    backlog = r.subscribe("a", "s", "/queue/q")
    assert backlog == [Delivery("a", "s", "/queue/q", "m1"), Delivery("a", "s", "/queue/q", "m2")]
    assert r.pending_count("/queue/q") == 0
    assert r.route("/queue/q", "m3") == [Delivery("a", "s", "/queue/q", "m3")]
    assert r.dropped == 0


def test_queue_backlog_bounded_by_count_oldest_dropped():
    r = Router(max_pending=3)
    for i in range(5):
        r.route("/queue/q", i)
    assert r.pending_count("/queue/q") == 3
    assert r.dropped == 2
    assert [d.message for d in r.subscribe("a", "s", "/queue/q")] == [2, 3, 4]


def test_queue_backlog_bounded_by_bytes():
    r = Router(max_pending_bytes=100)
    for i in range(4):
        r.route("/queue/q", i, size=40)
    assert r.dropped == 2
    assert [d.message for d in r.subscribe("a", "s", "/queue/q")] == [2, 3]
    r.unsubscribe("a", "s")
    r.route("/queue/q", "huge", size=101)
    assert r.pending_count("/queue/q") == 0
    assert r.dropped == 3


def test_backlog_bounded_over_all_queues():
    r = Router(max_pending_bytes=100, max_pending_total_bytes=150)
    r.route("/queue/a", "a", size=100)
    r.route("/queue/b", "b1", size=50)
    r.route("/queue/b", "b2", size=1)  # refused: total would exceed 150
    assert (r.pending_count("/queue/a"), r.pending_count("/queue/b"), r.dropped) == (1, 1, 1)
    r.subscribe("x", "s", "/queue/a")  # frees 100
    r.route("/queue/b", "b3", size=40)
    assert r.pending_count("/queue/b") == 2


def test_unsubscribe_by_id():
    r = Router()
    r.subscribe("a", "1", "/topic/x")
    r.subscribe("a", "2", "/topic/y")
    assert r.unsubscribe("a", "1") == "/topic/x"
    assert r.unsubscribe("a", "1") is None
    assert r.unsubscribe("b", "2") is None
    assert r.route("/topic/x", "m") == []
    assert receivers(r.route("/topic/y", "m")) == [("a", "2")]
    assert r.subscriptions("a") == {"2": "/topic/y"}


def test_duplicate_subscription_id():
    r = Router()
    r.subscribe("a", "1", "/topic/x")
    with pytest.raises(DuplicateSubscription):
        r.subscribe("a", "1", "/topic/y")
    r.subscribe("b", "1", "/topic/x")  # ids are per connection
    assert r.subscriber_count("/topic/x") == 2


def test_remove_connection_removes_all_its_subscriptions():
    r = Router()
    r.subscribe("a", "1", "/topic/x")
    r.subscribe("a", "2", "/queue/q")
    r.subscribe("b", "1", "/topic/x")
    assert r.remove_connection("a") == 2
    assert r.remove_connection("a") == 0
    assert r.subscriptions("a") == {}
    assert receivers(r.route("/topic/x", "m")) == [("b", "1")]
    assert r.route("/queue/q", "m") == []
    assert r.pending_count("/queue/q") == 1
    assert r.subscriber_count("/queue/q") == 0


def test_id_reusable_after_unsubscribe():
    r = Router()
    r.subscribe("a", "1", "/topic/x")
    r.unsubscribe("a", "1")
    r.subscribe("a", "1", "/topic/y")
    assert r.subscriptions("a") == {"1": "/topic/y"}
