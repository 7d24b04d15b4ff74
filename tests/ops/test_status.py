"""The status server over real sockets: /status (JSON, HTML), /metrics, basic auth, keys."""

from __future__ import annotations

import base64
import json

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from stompest.protocol import StompFrame, StompSpec
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from socketeer.config.load import parse_config
from socketeer.config.model import ConfigError
from socketeer.passwords import hash_password
from socketeer.tunnel.reasons import OpenFailure

from support.net import connect, echo_server, free_port, until
from support.ops import http_get, start_service
from support.properties import Properties, channel_url, relay_properties


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(values, name: str, **labels: str) -> float:
    return values[(name, tuple(sorted(labels.items())))]


def by_node(snap: dict, name: str) -> dict:
    (node,) = [n for n in snap["nodes"] if n["node"] == name]
    return node


@pytest_twisted.ensureDeferred
async def test_status_and_metrics_follow_a_stream():
    ports: list = []
    echo = await echo_server(ports)
    broker, status, forward = free_port(), free_port(), free_port()
    root = await start_service(relay_properties(broker, forward, echo, status=status))
    base = f"http://127.0.0.1:{status}"
    client = None
    try:
        so, si = root.nodes["so"], root.nodes["si"]
        # Each node pings its cluster once it is up: peers and round trips become known.
        await until(lambda: so.peers.rtt("si") is not None and si.peers.rtt("so") is not None)
        client = await connect(forward)
        client.transport.write(b"x" * 1000)
        await until(lambda: len(client.data) == 1000)

        code, headers, body = await http_get(f"{base}/status")
        assert code == 200
        assert headers["content-type"] == ["application/json"]
        snap = json.loads(body)
        src = by_node(snap, "so")
        assert src["role"] == "forward" and src["peernode"] == "si"
        assert src["channel"]["connected"] is True
        assert src["channel"]["broker"] == f"127.0.0.1:{broker}"
        assert src["channel"]["reconnects"] == 0
        (peer,) = [p for p in src["peers"] if p["node"] == "si"]
        assert 0 <= peer["rtt"] < 5 and peer["last_pong"] is not None
        (stream,) = src["streams"]
        local = client.transport.getHost()
        assert stream["client"] == f"127.0.0.1:{local.port}"
        assert stream["target"] == f"127.0.0.1:{echo}"
        assert stream["phase"] == "open"
        assert (stream["sent"], stream["received"]) == (1000, 1000)
        assert stream["age"] >= 0 and stream["window"] == 4 << 20
        (sink_stream,) = by_node(snap, "si")["streams"]
        assert (sink_stream["sent"], sink_stream["received"]) == (1000, 1000)
        assert snap["broker"]["connections"] == 2

        code, headers, page = await http_get(f"{base}/status", {"Accept": "text/html"})
        assert code == 200 and headers["content-type"][0].startswith("text/html")
        assert b"c/so" in page and f"127.0.0.1:{echo}".encode() in page
        code, _, page = await http_get(f"{base}/status?format=html")
        assert b"<table>" in page
        code, headers, _ = await http_get(f"{base}/")
        assert code == 302 and headers["location"] == ["status"]

        client.transport.loseConnection()
        await client.lost
        await until(lambda: not so.streams and not si.streams)
        stranger = await connect(broker)  # a first frame that is no CONNECT: refused, counted
        stranger.transport.write(b"SEND\ndestination:/topic/x\n\n\x00")
        assert b"expected CONNECT or STOMP" in await stranger.eof
        stranger.transport.loseConnection()

        code, headers, body = await http_get(f"{base}/metrics")
        assert code == 200 and headers["content-type"][0].startswith("text/plain")
        values = samples(body.decode())
        for node in ("so", "si"):
            who = {"cluster": "c", "node": node}
            assert metric(values, "socketeer_streams_opened_total", **who) == 1
            assert metric(values, "socketeer_streams_closed_total", **who) == 1
            assert metric(values, "socketeer_streams", phase="open", **who) == 0
            for direction in ("out", "in"):
                relayed = metric(
                    values, "socketeer_relayed_bytes_total", direction=direction, **who
                )
                assert relayed == 1000
            assert metric(values, "socketeer_messages_total", direction="out", **who) > 3
            assert metric(values, "socketeer_channel_connected", **who) == 1
            assert metric(values, "socketeer_channel_reconnects_total", **who) == 0
        assert metric(values, "socketeer_peer_rtt_seconds", cluster="c", node="so", peer="si") >= 0
        assert metric(values, "socketeer_broker_connections") == 2
        assert metric(values, "socketeer_broker_refused_total", reason="handshake") == 1
        assert ("socketeer_info", (("version", snap["version"]),)) in values
        assert any(name == "process_open_fds" for name, _ in values)  # process metrics too

        # OpenMetrics for whoever asks for it; one family by name.
        code, headers, body = await http_get(
            f"{base}/metrics?name[]=socketeer_streams_opened_total",
            {"Accept": "application/openmetrics-text; version=1.0.0"},
        )
        assert headers["content-type"][0].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")
        assert b"socketeer_streams_opened_total" in body and b"socketeer_messages" not in body
    finally:
        if client is not None:
            client.transport.loseConnection()
        await root.stopService()
        for p in ports:
            await p.stopListening()


@pytest_twisted.ensureDeferred
async def test_failures_denials_and_dropped_messages_are_reported():
    closed_port = free_port()  # nothing listens there: the sink's connect is refused
    broker, status, forward = free_port(), free_port(), free_port()
    root = await start_service(relay_properties(broker, forward, closed_port, status=status))
    try:
        client = await connect(forward)
        assert await client.eof.addTimeout(20, reactor) == b""
        client.transport.loseConnection()
        so = root.nodes["so"]
        await until(lambda: so.stats.open_failed[OpenFailure.REFUSED] == 1 and so.stats.pongs)
        # What a policy and a forger would leave behind (their own tests drive them).
        so.stats.denied["blacklist b"] += 2
        so.frame_received(StompFrame(StompSpec.MESSAGE, {"destination": "/topic/t"}, b"junk"))
        _, _, body = await http_get(f"http://127.0.0.1:{status}/status")
        src = by_node(json.loads(body), "so")
        assert src["totals"]["streams_failed"] == {"refused": 1}
        assert src["denials"] == {"blacklist b": 2}
        assert src["dropped"] == {"malformed": 1}
        _, _, body = await http_get(f"http://127.0.0.1:{status}/metrics")
        values = samples(body.decode())
        who = {"cluster": "c", "node": "so"}
        assert metric(values, "socketeer_streams_failed_total", reason="refused", **who) == 1
        assert metric(values, "socketeer_streams_opened_total", **who) == 1
        assert metric(values, "socketeer_denied_total", rule="blacklist b", **who) == 2
        assert metric(values, "socketeer_messages_dropped_total", reason="malformed", **who) == 1
        assert metric(values, "socketeer_events_total", event="pongs", **who) >= 1
    finally:
        await root.stopService()


@pytest_twisted.ensureDeferred
async def test_reconnects_and_the_current_broker_of_a_failover_list():
    ports: list = []
    echo = await echo_server(ports)
    broker, status, forward, dead = free_port(), free_port(), free_port(), free_port()
    channel = f"failover:({channel_url(dead)},{channel_url(broker)})?randomize=false"
    text = relay_properties(broker, forward, echo, status=status, channel=channel)
    root = await start_service(text)
    try:
        so = root.nodes["so"]
        listener = root.getServiceNamed("broker")
        await listener.stopService()
        for proto in list(listener.factory.connections):
            proto.transport.abortConnection()
        await until(lambda: not so.connected)
        ports.append(  # the broker is back (a stopped strports service does not relisten)
            await serverFromString(reactor, f"tcp:{broker}:interface=127.0.0.1").listen(
                listener.factory
            )
        )
        await until(lambda: so.connected and so.stats.channel_connects == 2)
        _, _, body = await http_get(f"http://127.0.0.1:{status}/status")
        channel = by_node(json.loads(body), "so")["channel"]
        assert channel["brokers"] == [f"127.0.0.1:{dead}", f"127.0.0.1:{broker}"]
        assert channel["broker"] == f"127.0.0.1:{broker}"
        assert channel["connected"] and channel["reconnects"] == 1
        assert channel["url"].startswith("failover:(")
        _, _, body = await http_get(f"http://127.0.0.1:{status}/metrics")
        values = samples(body.decode())
        assert metric(values, "socketeer_channel_reconnects_total", cluster="c", node="so") == 1
    finally:
        await root.stopService()
        for p in ports:
            await p.stopListening()


@pytest_twisted.ensureDeferred
async def test_basic_authentication_with_plain_and_hashed_passwords():
    status = free_port()
    prom = hash_password("s3cret", iterations=1000)
    root = await start_service(
        str(
            Properties()
            .broker(free_port())
            .status(f"tcp:{status}")
            .add("socketeer.general.statusserveruser.ops=plain-secret")
            .add(f"socketeer.general.statusserveruser.prom={prom}")
        )
    )
    url = f"http://127.0.0.1:{status}"
    try:
        code, headers, _ = await http_get(f"{url}/metrics")
        assert code == 401
        assert headers["www-authenticate"] == ['Basic realm="socketeer status"']
        for user, password, expected in [
            ("ops", "plain-secret", 200),
            ("prom", "s3cret", 200),
            ("prom", "s3cret", 200),  # remembered: no second pbkdf2 round
            ("prom", "wrong", 401),
            ("ops", "s3cret", 401),
            ("nobody", "plain-secret", 401),
        ]:
            for path in ("/metrics", "/status"):
                code, _, _ = await http_get(url + path, {"Authorization": _basic(user, password)})
                assert code == expected, (user, password, path)
    finally:
        await root.stopService()


@pytest_twisted.ensureDeferred
async def test_status_logins_are_limited_per_address_and_counted():
    from prometheus_client import generate_latest

    status = free_port()
    prom = hash_password("s3cret", iterations=1000)
    root = await start_service(
        str(
            Properties()
            .broker(free_port())
            .status(f"tcp:{status}")
            .add(f"socketeer.general.statusserveruser.prom={prom}")
            .add("socketeer.general.loginmaxfailures=2")
        )
    )
    url = f"http://127.0.0.1:{status}/metrics"
    try:
        code, _, _ = await http_get(url)  # no credentials: asked for them, not a failure
        assert code == 401
        for password, expected in [("s3cret", 200), ("s3cret", 200), ("no", 401), ("no", 401)]:
            code, _, _ = await http_get(url, {"Authorization": _basic("prom", password)})
            assert code == expected
        # Two failures from 127.0.0.1: even the right password is refused for a while.
        code, _, _ = await http_get(url, {"Authorization": _basic("prom", "s3cret")})
        assert code == 401
        registry = root.getServiceNamed("status").registry
        values = samples(generate_latest(registry).decode())
        assert metric(values, "socketeer_logins_total", door="status", outcome="ok") == 1
        assert metric(values, "socketeer_logins_total", door="status", outcome="cached") == 1
        assert metric(values, "socketeer_logins_total", door="status", outcome="failed") == 2
        assert metric(values, "socketeer_logins_total", door="status", outcome="locked-out") == 1
        assert metric(values, "socketeer_logins_pending") == 0
    finally:
        await root.stopService()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest_twisted.ensureDeferred
async def test_two_services_in_one_process_have_their_own_registries():
    a_status, b_status = free_port(), free_port()
    roots = []
    try:
        for status in (a_status, b_status):
            roots.append(await start_service(str(Properties().broker(free_port()).status(status))))
        for status in (a_status, b_status):
            code, _, body = await http_get(f"http://127.0.0.1:{status}/metrics")
            assert code == 200
            assert metric(samples(body.decode()), "socketeer_broker_connections") == 0
    finally:
        for root in roots:
            await root.stopService()


# -- the keys ------------------------------------------------------------------------------

BROKER = "socketeer.general.messagingserverenabled=true\n"


def test_status_server_is_off_by_default():
    assert parse_config(BROKER).status is None


def test_status_server_defaults_to_loopback_port_9626():
    config = parse_config(BROKER + "socketeer.general.statusserverenabled=true\n")
    assert config.status.listen == "tcp:9626:interface=127.0.0.1"
    assert dict(config.status.users) == {}
    assert config.warnings == ()


def test_status_server_port_and_endpoint_strings():
    config = parse_config(
        BROKER
        + "socketeer.general.statusserverenabled=true\n"
        + "socketeer.general.statusserverport=9100\n"
        + "socketeer.general.statusserverinterface=::1\n"
    )
    assert config.status.listen == "tcp6:9100:interface=\\:\\:1"
    config = parse_config(
        BROKER
        + "socketeer.general.statusserverenabled=true\n"
        + "socketeer.general.statusserverport=tcp:9100\n"
    )
    assert config.status.listen == "tcp:9100:interface=127.0.0.1"


def test_status_users_are_secrets():
    config = parse_config(
        BROKER
        + "socketeer.general.statusserverenabled=true\n"
        + "socketeer.general.statusserveruser.ops=hunter2\n"
    )
    assert config.status.users["ops"].value == "hunter2"
    assert "hunter2" not in repr(config)


def test_public_status_server_without_password_is_a_warning():
    config = parse_config(
        BROKER
        + "socketeer.general.statusserverenabled=true\n"
        + "socketeer.general.statusserverport=tcp:9100:interface=0.0.0.0\n"
    )
    (warning,) = config.warnings
    assert warning.startswith("<string>:3: ") and "without a password" in warning


def test_status_keys_without_enabled_are_a_warning():
    config = parse_config(BROKER + "socketeer.general.statusserverport=9100\n")
    assert config.status is None
    assert config.warnings == (
        "<string>:2: socketeer.general.statusserverport is ignored because "
        "socketeer.general.statusserverenabled is not true",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("socketeer.general.statusserverport=70000", "out of range"),
        ("socketeer.general.statusserverport=61626", "clashes with the broker"),
        ("socketeer.general.statusserverenabled=maybe", "invalid boolean"),
        ("socketeer.general.statusserveruser.ops=pbkdf2-sha256$1$x$y", "invalid password hash"),
        ("socketeer.general.statusserverinterface=localhost", "invalid interface"),
    ],
)
def test_status_key_errors_name_file_and_line(line: str, message: str):
    text = BROKER + "socketeer.general.statusserverenabled=true\n" + line + "\n"
    if "enabled=maybe" in line:
        text = BROKER + line + "\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text, "ops.properties")
    assert message in str(e.value)
    assert str(e.value).startswith(("ops.properties:2: ", "ops.properties:3: "))


def test_misspelt_status_key_gets_a_suggestion():
    config = parse_config(BROKER + "socketeer.general.statusserverenabeld=true\n")
    (warning,) = config.warnings
    assert "did you mean socketeer.general.statusserverenabled?" in warning
