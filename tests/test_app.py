"""The service tree built from a Config, and a clean shutdown of a live relay."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import MemoryReactorClock

from socketeer.app import build_service
from socketeer.config.load import parse_config

from support import ROOT
from support.net import Collector, connect, free_port, listen
from support.properties import relay_properties


def test_service_tree_of_the_default_config():
    config = parse_config(
        (ROOT / "etc" / "socketeer.properties").read_text(), "socketeer.properties"
    )
    root = build_service(config, MemoryReactorClock())
    names = [s.name for s in root]
    assert names[0] == "broker"
    assert len(names) == 1 + len(config.sourcesinks)
    for ss in config.sourcesinks:
        svc = root.getServiceNamed(f"sourcesink-{ss.id}")
        assert svc.getServiceNamed("channel")
        if ss.is_source:
            assert svc.getServiceNamed("listener")
        assert root.nodes[ss.id].name == ss.nodename
        assert (ss.id in root.sinks) == ss.spawning_sink


@pytest_twisted.ensureDeferred
async def test_stop_closes_streams_and_broker_connections():
    targets: list = []
    accepted: defer.Deferred = defer.Deferred()

    def make() -> Collector:
        c = Collector()
        if not accepted.called:
            accepted.callback(c)
        return c

    target = await listen(protocol.Factory.forProtocol(make), targets)
    broker, front = free_port(), free_port()
    root = build_service(parse_config(relay_properties(broker, front, target)), reactor)
    root.startService()
    try:
        await defer.gatherResults([n.when_ready() for n in root.nodes.values()])
        client = await connect(front)
        client.transport.write(b"hello")
        server_side = await accepted.addTimeout(10, reactor)
    finally:
        await root.stopService()
    # Both ends of the relayed connection were closed by the stop, the broker is gone.
    await client.eof.addTimeout(10, reactor)
    await server_side.eof.addTimeout(10, reactor)
    assert not any(n.streams for n in root.nodes.values())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", broker), timeout=5).close()
    client.transport.loseConnection()
    server_side.transport.loseConnection()
    for p in targets:
        await p.stopListening()


def test_an_embedding_application_gets_a_listen_error_naming_the_key():
    from socketeer.listening import ListenError

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        endpoint = f"tcp:{held.getsockname()[1]}:interface=127.0.0.1"
        root = build_service(
            parse_config(
                "socketeer.general.messagingserverenabled=true\n"
                f"socketeer.general.messagingserverport={endpoint}\n"
            ),
            reactor,
        )
        with pytest.raises(ListenError) as caught:
            root.privilegedStartService()
    assert str(caught.value) == (
        f"socketeer.general.messagingserverport: cannot listen on {endpoint}: "
        "Address already in use"
    )
