"""Broker authentication and authorisation: logins with plain or hashed passcodes, per-login
destination prefixes (several clusters on one broker), secrets that never leak."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from socketeer.app import build_service
from socketeer.broker.users import BrokerAuth, destination_allowed
from socketeer.config.load import parse_config
from socketeer.config.model import ConfigError
from socketeer.passwords import hash_password

from support.logs import LogEvents
from support.security import SecureRelay, stomp_login

HASHED = hash_password("s3cret-pass", iterations=1000)
USERS = {"alice": "plain-pass", "bob": HASHED, "c1": "c1-pass", "c2": "c2-pass"}
DESTINATIONS = {"c1": ["/topic/testtopic.c1"], "c2": ["/topic/testtopic.c2", "/queue/c2."]}


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "destination,allowed",
    [
        ("/topic/t.c", True),
        ("/topic/t.c.si", True),
        ("/topic/t.c/x", True),
        ("/topic/t.c2", False),
        ("/topic/t.c2.si", False),
        ("/topic/t", False),
        ("/queue/c.work", True),
        ("/queue/c", False),
    ],
)
def test_destination_prefixes(destination, allowed):
    assert destination_allowed(destination, ["/topic/t.c", "/queue/c."]) is allowed


def test_check_logins_plain_and_hashed():
    auth = BrokerAuth(USERS, DESTINATIONS)
    assert auth.check("alice", "plain-pass")
    assert auth.check("bob", "s3cret-pass")
    assert auth.check("bob", "s3cret-pass")  # the second time from the cache
    for login, passcode in [
        ("alice", "wrong"),
        ("bob", HASHED),  # the stored hash is not the passcode
        ("bob", "wrong"),
        ("mallory", "plain-pass"),
        (None, None),
        ("alice", None),
    ]:
        assert not auth.check(login, passcode)
    assert BrokerAuth().check(None, None) and BrokerAuth().open
    assert auth.allowed("alice", "/topic/anything")  # no prefixes: unrestricted
    assert auth.allowed("c1", "/topic/testtopic.c1.si")
    assert not auth.allowed("c1", "/topic/testtopic.c2.si")


def test_no_secret_in_reprs():
    from socketeer.broker.protocol import BrokerFactory
    from socketeer.broker.router import Router

    factory = BrokerFactory(Router(), reactor, users=USERS, destinations=DESTINATIONS)
    for text in (repr(BrokerAuth(USERS)), repr(factory._settings), repr(vars(factory))):
        assert "plain-pass" not in text and "c1-pass" not in text and HASHED not in text


# -- over real sockets ---------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def relay():
    r = SecureRelay(capture=False, users=USERS, destinations=DESTINATIONS)
    await r.start_broker()
    yield r
    await r.stop()


@pytest.mark.parametrize(
    "login,passcode",
    [("alice", "wrong"), ("mallory", "plain-pass"), (None, None), ("bob", HASHED)],
)
@pytest_twisted.ensureDeferred
async def test_wrong_login_gets_error_and_close(relay, login, passcode):
    client = await stomp_login(relay.broker_port, login, passcode)
    frames = await client.lost.addTimeout(10, reactor)
    assert [f.command for f in frames] == ["ERROR"]
    assert frames[0].headers["message"] == "Authentication failed"
    assert passcode is None or passcode.encode() not in frames[0].body


@pytest.mark.parametrize("login,passcode", [("alice", "plain-pass"), ("bob", "s3cret-pass")])
@pytest_twisted.ensureDeferred
async def test_right_login_connects(relay, login, passcode):
    client = await stomp_login(relay.broker_port, login, passcode)
    await client.expect("CONNECTED")
    client.transport.loseConnection()
    await client.lost


@pytest.mark.parametrize(
    "command,destination",
    [
        ("SUBSCRIBE", "/topic/testtopic.c2"),
        ("SUBSCRIBE", "/topic/testtopic.c2.si"),
        ("SEND", "/topic/testtopic.c2.si"),
        ("SEND", "/topic/testtopic.c10.si"),
        ("SUBSCRIBE", "/queue/c2.x"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_cross_cluster_destination_denied(relay, command, destination):
    client = await stomp_login(relay.broker_port, "c1", "c1-pass")
    await client.expect("CONNECTED")
    client.send("SUBSCRIBE", {"destination": "/topic/testtopic.c1.si", "id": "0", "receipt": "r"})
    await client.expect("RECEIPT")  # its own cluster is fine
    client.send(command, {"destination": destination, "id": "1", "content-length": "0"})
    frames = await client.lost.addTimeout(10, reactor)
    assert frames[-1].command == "ERROR"
    assert (
        f"{command} to {destination} is not allowed for login 'c1'" in frames[-1].headers["message"]
    )


@pytest_twisted.ensureDeferred
async def test_two_clusters_share_a_broker_but_not_destinations(relay):
    port = relay.broker_port
    c1 = relay.add_node("si", f"stomp://c1:c1-pass@127.0.0.1:{port}/testtopic", cluster="c1")
    c2 = relay.add_node("si2", f"stomp://c2:c2-pass@127.0.0.1:{port}/testtopic", cluster="c2")
    await defer.gatherResults([c1.when_ready(), c2.when_ready()]).addTimeout(10, reactor)
    # A c2 node that claims cluster c1 is refused by the broker and keeps retrying.
    refusals = LogEvents(lambda e: "broker refused node" in e.get("log_format", ""))
    try:
        spy = relay.add_node("spy", f"stomp://c2:c2-pass@127.0.0.1:{port}/testtopic", cluster="c1")
        events = await refusals.wait(2)
    finally:
        refusals.close()
    assert "not allowed for login 'c2'" in events[0]["message"]
    assert not spy.when_ready().called


# -- configuration ---------------------------------------------------------------------------------


def props(**extra: str | None) -> str:
    lines = {
        "socketeer.general.messagingserverenabled": "true",
        "socketeer.general.messagingserveruser.c1": "c1-pass",
        "socketeer.general.messagingserveruser.c2": HASHED,
        "socketeer.general.messagingserveruserdestinations.c1": "/topic/t.c1, /queue/c1.",
    }
    lines.update(extra)
    return "".join(f"{k}={v}\n" for k, v in lines.items() if v is not None)


def test_users_and_destinations_from_properties():
    config = parse_config(props())
    assert config.warnings == ()
    assert config.broker.users["c2"].value == HASHED
    assert dict(config.broker.destinations) == {"c1": ("/topic/t.c1", "/queue/c1.")}
    root = build_service(config, reactor)
    factory = root.getServiceNamed("broker").factory
    assert factory._settings.auth.check("c2", "s3cret-pass")
    assert not factory._settings.auth.allowed("c1", "/topic/t.c2")


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("socketeer.general.messagingserveruserdestinations.nobody", "/topic/x", "no broker user"),
        ("socketeer.general.messagingserveruserdestinations.c1", "topic/x", "invalid destination"),
        ("socketeer.general.messagingserveruserdestinations.c1", " , ", "invalid destination"),
        ("socketeer.general.messagingserveruser.c2", "pbkdf2-sha256$1$x$y", "malformed passcode"),
    ],
)
def test_broker_user_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_config(props(**{key: value}), "b.properties")
    assert e.value.key == key and e.value.line is not None
    assert "c1-pass" not in str(e.value)


@pytest.mark.parametrize("line", [b"passcode:s\xffcret-pass", b"passcodes3cret-pass"])
def test_malformed_passcode_header_is_not_echoed(line):
    from socketeer.wire.stompframing import StompFrameParser, StompProtocolError

    with pytest.raises(StompProtocolError) as e:
        StompFrameParser(server=True).feed(b"CONNECT\n" + line + b"\n\n\x00")
    assert "cret" not in str(e.value)
