"""Channel URL parsing: both spellings, credentials, errors, redaction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketeer.channel.url import ChannelSpec, ChannelURLError, parse_channel_url
from socketeer.secret import Secret


def spec(**overrides: object) -> ChannelSpec:
    values: dict[str, object] = dict(
        scheme="stomp",
        host="localhost",
        port=61626,
        topic="sisotopic",
        username=None,
        password=None,
        codekey=None,
        vhost=None,
        heartbeat_ms=10000,
    )
    values.update(overrides)
    return ChannelSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "stomp:localhost:61626/sisotopic/?username=user&password=pass&codekey=blabla",
            spec(username="user", password=Secret("pass"), codekey=Secret("blabla")),
        ),
        (
            "stomp://localhost:61626/sisotopic?username=user&password=pass&codekey=k",
            spec(username="user", password=Secret("pass"), codekey=Secret("k")),
        ),
        ("stomp://localhost/sisotopic", spec()),
        ("stomp:localhost", spec(topic="socketeer")),
        ("  stomp://localhost//sisotopic//  ", spec()),
        ("STOMP://localhost/sisotopic", spec()),
        ("stomp://u:p%40ss@localhost/sisotopic", spec(username="u", password=Secret("p@ss"))),
        ("stomp://u@localhost/sisotopic", spec(username="u")),
        ("stomp://u:@localhost/sisotopic", spec(username="u", password=Secret(""))),
        ("stomp://[::1]:5/t", spec(host="::1", port=5, topic="t")),
        ("stomp://10.0.0.1:65535/t_-9", spec(host="10.0.0.1", port=65535, topic="t_-9")),
        (
            "stomp://h/t?vhost=%2F&heartbeat=0&codekey=a%26b",
            spec(host="h", topic="t", vhost="/", heartbeat_ms=0, codekey=Secret("a&b")),
        ),
        ("stomp://h/t?heartbeat=2500", spec(host="h", topic="t", heartbeat_ms=2500)),
    ],
)
def test_parse_channel_url_accepts(text: str, expected: ChannelSpec) -> None:
    assert parse_channel_url(text) == expected


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("http://h/t", ["unknown channel scheme 'http'", "allowed schemes:", "stomp"]),
        ("localhost:61626/t", ["unknown channel scheme 'localhost'", "stomp"]),
        ("//h/t", ["no scheme", "stomp"]),
        ("stomp:///t", ["no host"]),
        ("stomp://h:0/t", ["port 0", "1..65535"]),
        ("stomp://h:70000/t", ["port 70000", "1..65535"]),
        ("stomp://h:abc/t", ["malformed", "port"]),
        ("stomp://h/a.b", ["topic 'a.b'", "A-Z a-z 0-9 _ -"]),
        ("stomp://h/a%20b", ["topic 'a b'", "allowed characters"]),
        ("stomp://h/a/b", ["more than one segment", "single topic"]),
        ("stomp://h/t#x", ["fragment"]),
        (
            "stomp://h/t?user=x",
            ["unknown channel parameter 'user'", "username, password, codekey, vhost, heartbeat"],
        ),
        ("stomp://h/t?username=a&username=b", ["'username' given more than once"]),
        ("stomp://u:p@h/t?password=x", ["both as user:pass@ and as query", "one of the two"]),
        ("stomp://h/t?heartbeat=-1", ["heartbeat '-1'", "integer >= 0"]),
        ("stomp://h/t?heartbeat=1.5", ["heartbeat '1.5'", "milliseconds"]),
        ("stomp://h/t?heartbeat", ["heartbeat ''"]),
        ("stomp://h%41/t", ["invalid channel host", "IPv4"]),
        ("stomp://[fe80::1%25eth0]/t", ["malformed"]),
    ],
)
def test_parse_channel_url_rejects(text: str, fragments: list[str]) -> None:
    with pytest.raises(ChannelURLError) as info:
        parse_channel_url(text)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_parse_channel_url_rejects_non_text() -> None:
    with pytest.raises(ChannelURLError, match="must be text"):
        parse_channel_url(b"stomp://h/t")  # type: ignore[arg-type]


def test_channel_url_error_is_a_value_error() -> None:
    assert issubclass(ChannelURLError, ValueError)


def test_parsed_channel_never_shows_its_secrets() -> None:
    parsed = parse_channel_url("stomp://u:hunter2@h/t?codekey=topsecret")
    assert "hunter2" not in repr(parsed)
    assert "topsecret" not in repr(parsed)
    assert f"{parsed}".count("***") == 2


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            "stomp:localhost:61626/sisotopic/?username=user&password=pass&codekey=blabla",
            "stomp://localhost:61626/sisotopic?username=user&password=***&codekey=***",
        ),
        ("stomp://u:p@[::1]/x", "stomp://[::1]:61626/x?username=u&password=***"),
        ("stomp://h", "stomp://h:61626/socketeer"),
        (
            "stomp://h/t?vhost=%2F&heartbeat=0",
            "stomp://h:61626/t?vhost=%2F&heartbeat=0",
        ),
    ],
)
def test_redacted_hides_secrets_and_round_trips(text: str, redacted: str) -> None:
    parsed = parse_channel_url(text)
    assert parsed.redacted() == redacted
    again = parse_channel_url(redacted)
    assert (again.host, again.port, again.topic, again.vhost, again.heartbeat_ms) == (
        parsed.host,
        parsed.port,
        parsed.topic,
        parsed.vhost,
        parsed.heartbeat_ms,
    )


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_parse_channel_url_never_raises_anything_else(text: str) -> None:
    try:
        result = parse_channel_url(text)
    except ChannelURLError:
        return
    assert isinstance(result, ChannelSpec)


_url_alphabet = st.sampled_from(list("stomp:/?&=@[]%#.:-_ 0123456789abcdefABCDEF\u00e9\x00\n"))


@settings(max_examples=500, deadline=None)
@given(st.text(_url_alphabet).map(lambda s: "stomp://" + s))
def test_parse_channel_url_never_raises_anything_else_on_url_like_text(text: str) -> None:
    try:
        result = parse_channel_url(text)
    except ChannelURLError:
        return
    assert isinstance(result, ChannelSpec)
    assert 1 <= result.port <= 65535
