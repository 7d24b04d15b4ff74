"""Failover channel URLs and the endpoint that walks the broker list."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from socketeer.channel.client import ChannelFactory
from socketeer.channel.endpoints import client_endpoint
from socketeer.channel.failover import FailoverEndpoint
from socketeer.channel.url import ChannelURLError, parse_channel_url

URL = "failover:(stomp://u:pw@127.0.0.1:61613/t?vhost=/,stomp://127.0.0.1:61626/t)"


def test_failover_url_lists_every_broker_in_order():
    spec = parse_channel_url(URL + "?randomize=false")
    assert [(b.host, b.port) for b in spec.brokers] == [("127.0.0.1", 61613), ("127.0.0.1", 61626)]
    assert spec.brokers[0].vhost == "/" and spec.brokers[1].vhost is None
    assert not spec.randomize
    assert "pw" not in spec.redacted() and spec.redacted().startswith("failover:(")


def test_randomize_is_the_stompest_default():
    assert parse_channel_url(URL).randomize


@pytest.mark.parametrize(
    "text, problem",
    [
        ("failover:(stomp://a/t1,stomp://b/t2)", "same topic"),
        ("failover:(stomp://a/t)?bogus=1", "invalid options"),
        ("failover:()", "no broker"),
        ("failover:(stomp://a/t", "missing"),
        ("failover:(nope://a/t)", "unknown channel scheme"),
    ],
)
def test_bad_failover_urls(text, problem):
    with pytest.raises(ChannelURLError, match=problem):
        parse_channel_url(text)


def test_endpoint_dials_the_brokers_in_turn_with_their_own_credentials():
    reactor = MemoryReactorClock()
    spec = parse_channel_url(URL + "?randomize=false")
    endpoint = client_endpoint(reactor, spec)
    assert isinstance(endpoint, FailoverEndpoint)
    factory = ChannelFactory(None, spec, reactor, None)
    seen = []
    for _ in range(3):
        endpoint.connect(factory)
        seen.append((endpoint.current.port, factory.spec.username))
    assert seen == [(61613, "u"), (61626, None), (61613, "u")]
