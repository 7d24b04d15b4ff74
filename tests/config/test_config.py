"""Configuration loading: the original Socketeer's keys, error locations, warnings, etc/ samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketeer.channel.url import ChannelSpec
from socketeer.config.keys import GENERAL_KEYS, SOURCESINK_KEYS
from socketeer.config.load import load_config, parse_config
from socketeer.config.model import BrokerConfig, Config, ConfigError, SourceSinkConfig
from socketeer.secret import Secret

PATH = "test.properties"
ETC = Path(__file__).resolve().parents[2] / "etc"

# A valid one-process configuration: broker, sink 0 "si", source 1 "so".
BASE: dict[str, str] = {
    "g.messagingserverenabled": "true",
    "g.messagingserverport": "61626",
    "0.clustername": "c",
    "0.nodename": "si",
    "0.channel": "stomp://127.0.0.1:61626/sisotopic",
    "0.isSpawningAndResolvingSink": "true",
    "1.clustername": "c",
    "1.nodename": "so",
    "1.channel": "stomp://127.0.0.1:61626/sisotopic",
    "1.serverport": "1234",
    "1.peernode": "si",
    "1.fixedHost": "127.0.0.1",
    "1.fixedPort": "8000",
}


def full(short: str) -> str:
    """``g.x`` -> ``socketeer.general.x``; ``<id>.x`` -> ``socketeer.sourcesink.<id>.x``."""
    if short.startswith("g."):
        return "socketeer.general." + short[2:]
    if short.startswith("socketeer.") or "." not in short:
        return short
    return "socketeer.sourcesink." + short


def render(changes: dict[str, str | None] | None = None, base: dict[str, str] = BASE) -> str:
    """BASE with *changes* applied (None removes a key), one key per line."""
    props: dict[str, str | None] = dict(base)
    props.update(changes or {})
    return "".join(f"{full(k)}={v}\n" for k, v in props.items() if v is not None)


def line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(key + "="):
            return number
    raise AssertionError(f"{key} not in text")


def test_base_config_is_valid() -> None:
    config = parse_config(render(), PATH)
    assert config.warnings == ()
    assert [ss.nodename for ss in config.sourcesinks] == ["si", "so"]


# (changes, key whose error it is, whether that key has a line, fragments of the message)
ERROR_CASES: list[tuple[dict[str, str | None], str, bool, list[str]]] = [
    (
        {"g.messagingserverenabled": "maybe"},
        "g.messagingserverenabled",
        True,
        ["invalid boolean 'maybe'", "allowed: true, false, yes, no, 1, 0"],
    ),
    (
        {"g.messagingserverport": "0"},
        "g.messagingserverport",
        True,
        ["port 0 is out of range", "a port number 1..65535"],
    ),
    (
        {"g.messagingserverport": "70000"},
        "g.messagingserverport",
        True,
        ["port 70000 is out of range", "tcp:, tcp6:, unix: or ssl:"],
    ),
    (
        {"g.messagingserverport": "http:80"},
        "g.messagingserverport",
        True,
        ["invalid listener 'http:80'", "tcp:1234:interface=127.0.0.1"],
    ),
    (
        {"g.messagingserverport": "tcp:abc"},
        "g.messagingserverport",
        True,
        ["has no valid port", "tcp:PORT[:interface=ADDRESS]"],
    ),
    (
        {"g.messagingserverport": "tcp6:interface=\\\\:\\\\:1"},
        "g.messagingserverport",
        True,
        ["has no valid port", "tcp6:PORT"],
    ),
    (
        {"g.messagingserverport": "tcp:99999"},
        "g.messagingserverport",
        True,
        ["out of range", "0..65535"],
    ),
    (
        {"g.messagingserverport": "unix:"},
        "g.messagingserverport",
        True,
        ["has no path", "unix:/path/to/socket"],
    ),
    (
        {"g.messagingserverport": ""},
        "g.messagingserverport",
        True,
        ["invalid listener ''", "a port number 1..65535"],
    ),
    (
        {"g.messagingserverinterface": "localhost"},
        "g.messagingserverinterface",
        True,
        ["invalid interface 'localhost'", "127.0.0.1, 0.0.0.0 or ::1"],
    ),
    (
        {"g.messagingservermaxframesize": "100"},
        "g.messagingservermaxframesize",
        True,
        ["100 is out of range", "an integer 4096..268435456 (bytes)"],
    ),
    (
        {"g.messagingservermaxframesize": "16M"},
        "g.messagingservermaxframesize",
        True,
        ["invalid integer '16M'", "4096..268435456"],
    ),
    (
        {"g.messagingserversubscriberqueue": "1000"},
        "g.messagingserversubscriberqueue",
        True,
        ["1000 is out of range", "an integer 65536..1073741824 (bytes)"],
    ),
    (
        {"g.messagingserverslowsubscribertimeout": "0"},
        "g.messagingserverslowsubscribertimeout",
        True,
        ["0 is out of range", "a number of seconds > 0"],
    ),
    (
        {"0.clustername": None},
        "0.clustername",
        False,
        ["required key is missing", "letters, digits, '_', '-' and %XX escapes (no '.')"],
    ),
    ({"0.clustername": "a.b"}, "0.clustername", True, ["invalid name 'a.b'", "(no '.')"]),
    ({"0.nodename": None}, "0.nodename", False, ["required key is missing", "(no '.')"]),
    ({"0.nodename": "s%zz"}, "0.nodename", True, ["invalid name 's%zz'", "%XX escapes"]),
    (
        {"1.channel": None},
        "1.channel",
        False,
        ["required key is missing", "stomp://host:61626/topic"],
    ),
    (
        {"1.channel": "http://h/t"},
        "1.channel",
        True,
        [
            "invalid channel: unknown channel scheme 'http'",
            "allowed schemes: stomp",
            "stomp://host:61626/topic",
        ],
    ),
    (
        {"1.channel": "stomp://h/t?pass=x"},
        "1.channel",
        True,
        ["unknown channel parameter 'pass'", "username, password, codekey, vhost, heartbeat"],
    ),
    (
        {"1.serverport": "abc"},
        "1.serverport",
        True,
        ["invalid listener 'abc'", "a port number 1..65535"],
    ),
    (
        {"1.serverinterface": "::1::"},
        "1.serverinterface",
        True,
        ["invalid interface '::1::'", "an IP address"],
    ),
    (
        {"0.serverinterface": "127.0.0.1"},
        "0.serverinterface",
        True,
        ["serverinterface needs serverport", "socketeer.sourcesink.0.serverport"],
    ),
    (
        {"0.isSpawningAndResolvingSink": "nope"},
        "0.isSpawningAndResolvingSink",
        True,
        ["invalid boolean 'nope'", "true, false, yes, no, 1, 0"],
    ),
    ({"1.peernode": None}, "1.peernode", False, ["required for a source", "(no '.')"]),
    ({"1.peernode": "s.i"}, "1.peernode", True, ["invalid name 's.i'", "(no '.')"]),
    (
        {"1.fixedHost": None},
        "1.fixedHost",
        False,
        [
            "required because fixedPort is set",
            "set both socketeer.sourcesink.1.fixedHost and "
            "socketeer.sourcesink.1.fixedPort, or neither",
        ],
    ),
    (
        {"1.fixedPort": None},
        "1.fixedPort",
        False,
        ["required because fixedHost is set", "or neither"],
    ),
    (
        {
            "1.fixedHost": None,
            "1.fixedPort": None,
            "1.socks4enabled": "false",
            "1.socks5enabled": "no",
            "1.httpenabled": "0",
        },
        "1.httpenabled",
        True,
        ["all are disabled", "enable one of socks4enabled"],
    ),
    (
        {"1.fixedHost": None, "1.fixedPort": None, "1.authorisation": "nobody"},
        "1.authorisation",
        True,
        ["no users in authorisation profile 'nobody'", "socketeer.authorisation.nobody.user"],
    ),
    (
        {"1.fixedHost": None, "1.fixedPort": None, "1.handshaketimeout": "0"},
        "1.handshaketimeout",
        True,
        ["out of range", "seconds > 0"],
    ),
    (
        {"1.fixedHost": None, "1.fixedPort": None, "1.idletimeout": "-1"},
        "1.idletimeout",
        True,
        ["out of range", "0 means no limit"],
    ),
    (
        {"1.fixedHost": "bad host!"},
        "1.fixedHost",
        True,
        ["invalid host 'bad host!'", "a host name or an IP address"],
    ),
    ({"1.fixedPort": "0"}, "1.fixedPort", True, ["0 is out of range", "an integer 1..65535"]),
    (
        {"1.fixedPort": "http"},
        "1.fixedPort",
        True,
        ["invalid integer 'http'", "an integer 1..65535"],
    ),
    ({"1.fixedType": "1"}, "1.fixedType", True, ["unsupported fixedType 1", "allowed: 0 (TCP)"]),
    ({"1.fixedType": "tcp"}, "1.fixedType", True, ["invalid integer 'tcp'"]),
    (
        {"1.connecttimeout": "0"},
        "1.connecttimeout",
        True,
        ["0 is out of range", "a number of seconds > 0"],
    ),
    ({"1.connecttimeout": "-1"}, "1.connecttimeout", True, ["out of range", "> 0"]),
    ({"1.connecttimeout": "nan"}, "1.connecttimeout", True, ["out of range", "> 0"]),
    ({"1.connecttimeout": "inf"}, "1.connecttimeout", True, ["out of range", "> 0"]),
    (
        {"1.connecttimeout": "10s"},
        "1.connecttimeout",
        True,
        ["invalid number '10s'", "a number of seconds > 0"],
    ),
    (
        {"0.window": "1000"},
        "0.window",
        True,
        ["1000 is out of range", "an integer 65536..67108864 (bytes)"],
    ),
    ({"0.window": "1e6"}, "0.window", True, ["invalid integer '1e6'", "65536..67108864"]),
    (
        {"1.maxpendingopens": "0"},
        "1.maxpendingopens",
        True,
        ["0 is out of range", "an integer 1..1000000"],
    ),
    (
        {"1.nodename": "si"},
        "1.nodename",
        True,
        ["node 'si' in cluster 'c' is already used by sourcesink '0'", "unique within its cluster"],
    ),
    (
        {"1.serverport": "61626"},
        "1.serverport",
        True,
        ["clashes with socketeer.general.messagingserverport", "a port not used by another"],
    ),
    (
        {"1.serverport": "tcp:61626:interface=0.0.0.0"},
        "1.serverport",
        True,
        ["clashes with socketeer.general.messagingserverport"],
    ),
    (
        {
            "2.clustername": "c",
            "2.nodename": "so2",
            "2.channel": "stomp://h/t",
            "2.serverport": "1234",
            "2.peernode": "si",
            "2.fixedHost": "h",
            "2.fixedPort": "1",
        },
        "2.serverport",
        True,
        ["clashes with socketeer.sourcesink.1.serverport"],
    ),
    (
        {"socketeer.sourcesink.a%zz.clustername": "c"},
        "socketeer.sourcesink.a%zz.clustername",
        True,
        ["invalid sourcesink id 'a%zz'", "%XX escapes"],
    ),
]


@pytest.mark.parametrize(
    ("changes", "short_key", "has_line", "fragments"),
    ERROR_CASES,
    ids=[f"{'-'.join(c[0])}={'-'.join(str(v) for v in c[0].values())}" for c in ERROR_CASES],
)
def test_config_errors_point_at_the_key(
    changes: dict[str, str | None], short_key: str, has_line: bool, fragments: list[str]
) -> None:
    text = render(changes)
    key = full(short_key)
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    error = info.value
    message = str(error)
    assert error.path == PATH
    assert error.key == key
    if has_line:
        line = line_of(text, key)
        assert error.line == line
        assert message.startswith(f"{PATH}:{line}: {key}: ")
    else:
        assert error.line is None
        assert message.startswith(f"{PATH}: {key}: ")
    assert "; allowed: " in message
    for fragment in fragments:
        assert fragment in message


def test_neither_source_nor_sink_points_at_the_profile() -> None:
    text = render({"0.isSpawningAndResolvingSink": "false"})
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    line = line_of(text, full("0.clustername"))
    assert info.value.line == line
    assert str(info.value) == (
        f"{PATH}:{line}: socketeer.sourcesink.0: sourcesink is neither a source nor a sink; "
        "allowed: set socketeer.sourcesink.0.serverport (a source) "
        "and/or socketeer.sourcesink.0.isSpawningAndResolvingSink=true (a sink)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "socketeer.general.messagingserverenabled=false\n",
        "socketeer.general.messagingserverport=1234\nfoo=bar\n",
    ],
)
def test_nothing_to_run(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    assert info.value.key is None
    assert str(info.value).startswith(f"{PATH}: nothing to run: ")
    assert "allowed: set socketeer.general.messagingserverenabled=true" in str(info.value)


def test_bad_unicode_escape_reports_its_line() -> None:
    text = "# comment\nsocketeer.general.messagingserverenabled=true\nx=\\u00zz\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{PATH}:3: ")
    assert "\\uXXXX with four hex digits" in str(info.value)


def test_load_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.properties"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: cannot read configuration: No such file or directory"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration: Is a directory"):
        load_config(str(tmp_path))


def test_load_config_reads_file_and_reports_its_path(tmp_path: Path) -> None:
    path = tmp_path / "s.properties"
    path.write_text(render({"1.fixedPort": "x"}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:13: socketeer.sourcesink.1.fixedPort: ")


def test_load_config_falls_back_to_latin1(tmp_path: Path) -> None:
    path = tmp_path / "l.properties"
    path.write_bytes(render({"0.channel": "stomp://h/t?password=p\xe4ss"}).encode("latin-1"))
    config = load_config(path)
    assert config.path == str(path)
    assert config.sourcesinks[0].channel.password == Secret("p\xe4ss")


ORIGINAL_SAMPLE = """\
socketeer.general.messagingserverenabled=true
socketeer.general.messagingserverport=61626

#socketeer.general.sosisize=
#socketeer.general.relaysize=
#socketeer.general.messageencryptionkey=

socketeer.sourcesink.0.clustername=c
socketeer.sourcesink.0.nodename=si
socketeer.sourcesink.0.channel=stomp:localhost:61626/sisotopic/?username=user&password=pass&codekey=blabla
socketeer.sourcesink.0.isSpawningAndResolvingSink=true

socketeer.sourcesink.1.clustername=c
socketeer.sourcesink.1.nodename=so
socketeer.sourcesink.1.channel=stomp:localhost:61626/sisotopic/?username=user&password=pass&codekey=blabla
socketeer.sourcesink.1.serverport=1234
socketeer.sourcesink.1.isSpawningAndResolvingSink=false
socketeer.sourcesink.1.peernode=si
socketeer.sourcesink.1.fixedHost=localhost
socketeer.sourcesink.1.fixedPort=80
socketeer.sourcesink.1.fixedType=0

#socketeer.sourcesink.1.accesslist=0
#socketeer.accesslist.0.host=129.0.0.1
"""


def test_original_sample_parses() -> None:
    channel = ChannelSpec(
        scheme="stomp",
        host="localhost",
        port=61626,
        topic="sisotopic",
        username="user",
        password=Secret("pass"),
        codekey=Secret("blabla"),
        vhost=None,
        heartbeat_ms=10000,
    )
    common = dict(channel=channel, fixed_type=0, connect_timeout=10.0, window=4 * 1024 * 1024)
    assert parse_config(ORIGINAL_SAMPLE, "original.properties") == Config(
        path="original.properties",
        broker=BrokerConfig(
            enabled=True,
            listen="tcp:61626:interface=127.0.0.1",
            max_frame_size=16777216,
            users={},
        ),
        sourcesinks=(
            SourceSinkConfig(
                id="0",
                clustername="c",
                nodename="si",
                serverport=None,
                spawning_sink=True,
                peernode=None,
                fixed_host=None,
                fixed_port=None,
                **common,  # type: ignore[arg-type]
            ),
            SourceSinkConfig(
                id="1",
                clustername="c",
                nodename="so",
                serverport="tcp:1234:interface=127.0.0.1",
                spawning_sink=False,
                peernode="si",
                fixed_host="localhost",
                fixed_port=80,
                **common,  # type: ignore[arg-type]
            ),
        ),
        warnings=(),
    )
    config = parse_config(ORIGINAL_SAMPLE)
    assert [ss.is_source for ss in config.sourcesinks] == [False, True]


SYNTAX_SAMPLE = """\
# Java properties syntax, all of it
! bang comment
socketeer.general.messagingserverenabled : yes
socketeer.general.messagingserverport   tcp:61626
socketeer.general.messagingserveruser.b\\u00f6b = s\\u00e9cret
socketeer.sourcesink.s\\u0031.clustername=\\u0063
socketeer.sourcesink.s1.nodename=\\
    node\\
    one
socketeer.sourcesink.s1.channel=stomp://127.0.0.1:61626/sisotopic\\
    ?username=user\\
    &password=pass
socketeer.sourcesink.s1.isSpawningAndResolvingSink=TRUE
socketeer.sourcesink.s1.fixedhost=oops
socketeer.sourcesink.s1.window=x
"""


def test_java_syntax_and_line_numbers() -> None:
    # The window error must land on line 15 despite three continued lines above it.
    with pytest.raises(ConfigError) as info:
        parse_config(SYNTAX_SAMPLE, PATH)
    assert str(info.value).startswith(f"{PATH}:15: socketeer.sourcesink.s1.window: ")

    config = parse_config(SYNTAX_SAMPLE.replace("window=x", "window=65536"), PATH)
    assert config.broker.enabled is True
    assert config.broker.listen == "tcp:61626:interface=127.0.0.1"
    assert dict(config.broker.users) == {"b\xf6b": Secret("s\xe9cret")}
    (ss,) = config.sourcesinks
    assert (ss.id, ss.clustername, ss.nodename, ss.window) == ("s1", "c", "nodeone", 65536)
    assert ss.spawning_sink is True
    assert ss.channel.username == "user"
    assert ss.channel.password == Secret("pass")
    assert config.warnings == (
        f"{PATH}:14: unknown key socketeer.sourcesink.s1.fixedhost; "
        "did you mean socketeer.sourcesink.s1.fixedHost?",
    )


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_other_line_endings_count_lines(newline: str) -> None:
    text = render({"1.fixedPort": "x"}).replace("\n", newline)
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    assert info.value.line == 13


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("socketeer.sourcesink.1.fixedhost", "socketeer.sourcesink.1.fixedHost"),
        (
            "socketeer.sourcesink.1.isSpawningSink",
            "socketeer.sourcesink.1.isSpawningAndResolvingSink",
        ),
        ("socketeer.sourcesink.1.chanel", "socketeer.sourcesink.1.channel"),
        ("socketeer.sourcesink.7.nodname", "socketeer.sourcesink.7.nodename"),
        ("socketeer.general.messagingserverenable", "socketeer.general.messagingserverenabled"),
        ("socketeer.general.messagingserverusr.bob", "socketeer.general.messagingserveruser.bob"),
        ("Socketeer.General.MessagingServerPort", "socketeer.general.messagingserverport"),
        ("socketeer.general.sosisize", None),
        ("socketeer.accesslist.0.hots", "socketeer.accesslist.0.host"),
        ("socketeer.sourcesink.1.acceslist", "socketeer.sourcesink.1.accesslist"),
        ("socketeer.general.messagingserveruser.", "socketeer.general.messagingserveruser.<login>"),
        ("socketeer.general.messagingserveruser", "socketeer.general.messagingserveruser.<login>"),
        ("sockteer.sourcesink.1.channel", "socketeer.sourcesink.1.channel"),
        ("socketeer.sourcesinks.1.channel", "socketeer.sourcesink.1.channel"),
        ("socketeer.sourcesink.1.channel.x", "socketeer.sourcesink.1.channel"),
        ("java.net.preferIPv4Stack", None),
    ],
)
def test_unknown_key_is_a_warning_with_suggestion(key: str, suggestion: str | None) -> None:
    text = render() + f"{key}=1\n"
    config = parse_config(text, PATH)
    expected = f"{PATH}:{len(BASE) + 1}: unknown key {key}"
    if suggestion is not None:
        expected += f"; did you mean {suggestion}?"
    assert config.warnings == (expected,)


def test_duplicate_key_warns_and_last_wins() -> None:
    text = render() + "socketeer.sourcesink.1.fixedPort=9000\n"
    config = parse_config(text, PATH)
    assert config.sourcesinks[1].fixed_port == 9000
    assert config.warnings == (
        f"{PATH}:{len(BASE) + 1}: duplicate key socketeer.sourcesink.1.fixedPort "
        "(also on line 13); the last value wins",
    )


def test_interface_with_endpoint_string_warns() -> None:
    text = render({"1.serverport": "tcp:1234", "1.serverinterface": "0.0.0.0"})
    config = parse_config(text, PATH)
    line = line_of(text, "socketeer.sourcesink.1.serverinterface")
    assert config.warnings == (
        f"{PATH}:{line}: socketeer.sourcesink.1.serverinterface is ignored because "
        "socketeer.sourcesink.1.serverport is an endpoint string",
    )


@pytest.mark.parametrize(
    ("port", "interface", "listen"),
    [
        (None, None, "tcp:61626:interface=127.0.0.1"),
        (None, "0.0.0.0", "tcp:61626:interface=0.0.0.0"),
        ("61627", None, "tcp:61627:interface=127.0.0.1"),
        ("61627", "::1", "tcp6:61627:interface=\\:\\:1"),
        ("tcp:61627", None, "tcp:61627:interface=127.0.0.1"),
        ("tcp:port=61627", None, "tcp:port=61627:interface=127.0.0.1"),
        ("tcp6:61627", None, "tcp6:61627:interface=\\:\\:1"),
        ("tcp:0", None, "tcp:0:interface=127.0.0.1"),
        ("tcp:61627:interface=0.0.0.0", None, "tcp:61627:interface=0.0.0.0"),
        # In the file "\\:" is needed so that the endpoint string gets "\:".
        ("tcp6:61627:interface=\\\\:\\\\:1", None, "tcp6:61627:interface=\\:\\:1"),
        ("unix:/tmp/socketeer.sock", None, "unix:/tmp/socketeer.sock"),
        ("unix:address=/tmp/s:mode=600", None, "unix:address=/tmp/s:mode=600"),
        ("ssl:61627:privateKey=key.pem", None, "ssl:61627:privateKey=key.pem"),
    ],
)
def test_broker_listen_endpoint(port: str | None, interface: str | None, listen: str) -> None:
    changes: dict[str, str | None] = {
        "g.messagingserverport": port,
        "g.messagingserverinterface": interface,
    }
    config = parse_config(render(changes), PATH)
    assert config.broker.listen == listen


@pytest.mark.parametrize(
    ("serverport", "interface", "expected"),
    [
        ("1234", None, "tcp:1234:interface=127.0.0.1"),
        ("1234", "0.0.0.0", "tcp:1234:interface=0.0.0.0"),
        ("1234", "::", "tcp6:1234:interface=\\:\\:"),
        ("tcp6:1234", None, "tcp6:1234:interface=\\:\\:1"),
        ("unix:/tmp/so.sock", None, "unix:/tmp/so.sock"),
    ],
)
def test_source_serverport_endpoint(serverport: str, interface: str | None, expected: str) -> None:
    changes = {"1.serverport": serverport, "1.serverinterface": interface}
    config = parse_config(render(changes), PATH)
    assert config.sourcesinks[1].serverport == expected


def test_listeners_on_different_interfaces_do_not_clash() -> None:
    text = render({"1.serverport": "61626", "1.serverinterface": "127.0.0.2"})
    assert parse_config(text, PATH).sourcesinks[1].serverport == ("tcp:61626:interface=127.0.0.2")


def test_disabled_broker_port_does_not_clash() -> None:
    text = render({"g.messagingserverenabled": "false", "1.serverport": "61626"})
    assert parse_config(text, PATH).broker.enabled is False


def test_optional_values_and_defaults() -> None:
    changes: dict[str, str | None] = {
        "g.messagingservermaxframesize": "4096",
        "g.messagingserversubscriberqueue": "65536",
        "g.messagingserverslowsubscribertimeout": "2.5",
        "g.messagingserveruser.alice": "pw1",
        "g.messagingserveruser.bob": " pw2 ",
        "1.connecttimeout": "2.5",
        "1.window": "67108864",
        "1.maxpendingopens": "10",
        "1.fixedType": "0",
        "1.isSpawningAndResolvingSink": "1",
    }
    config = parse_config(render(changes), PATH)
    assert config.broker.max_frame_size == 4096
    assert (config.broker.subscriber_queue, config.broker.slow_subscriber_timeout) == (65536, 2.5)
    assert dict(config.broker.users) == {"alice": Secret("pw1"), "bob": Secret("pw2")}
    sink, source = config.sourcesinks
    assert (sink.connect_timeout, sink.window, sink.fixed_type) == (10.0, 4 * 1024 * 1024, 0)
    assert (source.connect_timeout, source.window) == (2.5, 67108864)
    assert (sink.max_pending_opens, source.max_pending_opens) == (1024, 10)
    assert source.spawning_sink and source.is_source
    assert not sink.is_source


def test_sourcesinks_keep_file_order_and_encoded_names() -> None:
    text = (
        "socketeer.sourcesink.zeta.clustername=c\n"
        "socketeer.sourcesink.my%2Eid.clustername=c%2E1\n"
        "socketeer.sourcesink.my%2Eid.nodename=n%2E1\n"
        "socketeer.sourcesink.my%2Eid.channel=stomp://h/t\n"
        "socketeer.sourcesink.my%2Eid.isSpawningAndResolvingSink=yes\n"
        "socketeer.sourcesink.zeta.nodename=z\n"
        "socketeer.sourcesink.zeta.channel=stomp://h/t\n"
        "socketeer.sourcesink.zeta.isSpawningAndResolvingSink=Yes\n"
    )
    config = parse_config(text, PATH)
    assert [(s.id, s.clustername, s.nodename) for s in config.sourcesinks] == [
        ("zeta", "c", "z"),
        ("my%2Eid", "c%2E1", "n%2E1"),
    ]
    assert config.broker.enabled is False


def test_secrets_never_appear_in_repr() -> None:
    changes = {
        "g.messagingserveruser.admin": "brokerpass",
        "0.channel": "stomp://user:chanpass@h/t?codekey=thekey",
    }
    config = parse_config(render(changes), PATH)
    for text in (repr(config), str(config)):
        assert "brokerpass" not in text
        assert "chanpass" not in text
        assert "thekey" not in text
    assert config.broker.users["admin"].value == "brokerpass"


def test_config_error_format() -> None:
    error = ConfigError("p", "bad", line=3, key="k", allowed="x, y")
    assert str(error) == "p:3: k: bad; allowed: x, y"
    assert (error.path, error.line, error.key) == ("p", 3, "k")
    assert str(ConfigError("p", "required key is missing", key="k")) == (
        "p: k: required key is missing"
    )
    assert str(ConfigError("p", "cannot read configuration: gone")) == (
        "p: cannot read configuration: gone"
    )


@pytest.mark.parametrize(
    "name", ["socketeer.properties", "examples/sink.properties", "examples/source.properties"]
)
def test_etc_samples_parse_without_warnings(name: str) -> None:
    config = load_config(ETC / name)
    assert config.warnings == ()
    nodes = {ss.nodename: ss for ss in config.sourcesinks}
    if name.endswith("source.properties"):
        assert not config.broker.enabled
        assert set(nodes) == {"so"}
    else:
        assert config.broker.enabled
        assert config.broker.listen == "tcp:61626:interface=127.0.0.1"
        assert nodes["si"].spawning_sink
    if "so" in nodes:
        source = nodes["so"]
        assert source.serverport == "tcp:1234:interface=127.0.0.1"
        assert (source.peernode, source.fixed_host, source.fixed_port) == ("si", "127.0.0.1", 8000)
    for ss in config.sourcesinks:
        assert ss.clustername == "c"
        assert ss.channel.redacted() == "stomp://127.0.0.1:61626/sisotopic"


def test_etc_sample_documents_every_key() -> None:
    text = (ETC / "socketeer.properties").read_text(encoding="utf-8")
    for key in GENERAL_KEYS:
        assert key in text
    assert "socketeer.general.messagingserveruser." in text
    for sub in SOURCESINK_KEYS:
        assert f".{sub}=" in text


def test_duplicate_key_keeps_first_appearance_order() -> None:
    text = render() + "socketeer.sourcesink.0.clustername=c2\n"
    config = parse_config(text, PATH)
    assert [(ss.id, ss.clustername) for ss in config.sourcesinks] == [("0", "c2"), ("1", "c")]
    assert "duplicate key socketeer.sourcesink.0.clustername (also on line 3)" in config.warnings[0]


_fragments = st.sampled_from(
    [
        *(full(k) for k in BASE),
        "socketeer.general.messagingserveruser.u",
        "socketeer.sourcesink.",
        *SOURCESINK_KEYS,
        *BASE.values(),
        "=",
        ":",
        " ",
        "\n",
        "\\",
        "\\u00",
        "#",
        ".",
        "%",
        "0",
        "tcp:",
        "unix:",
        "interface=",
        "\\:",
        "yes",
        "nan",
        "-1",
        "70000",
        "\u00e9",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_fragments, max_size=40).map("".join))
def test_parse_config_raises_only_config_error(text: str) -> None:
    try:
        config = parse_config(text, PATH)
    except ConfigError as e:
        assert str(e).startswith(PATH)
    else:
        assert isinstance(config, Config)


def test_loading_config_imports_no_twisted() -> None:
    # socketeer.config must stay pure, every module of it: only building an endpoint may
    # pull Twisted in.
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, socketeer.config as p; "
        "[importlib.import_module(m.name) "
        " for m in pkgutil.iter_modules(p.__path__, p.__name__ + '.')]; "
        "import socketeer.config.load as c; "
        f"c.load_config({str(ETC / 'socketeer.properties')!r}); "
        "print(sorted(m for m in sys.modules if m.startswith('twisted')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_proxy_source_without_fixed_target() -> None:
    from socketeer.passwords import Authenticator, hash_password

    hashed = hash_password("s3cret", iterations=1000)
    text = render(
        {
            "1.fixedHost": None,
            "1.fixedPort": None,
            "1.socks4enabled": "false",
            "1.authorisation": "staff, guests",
            "1.handshaketimeout": "2.5",
            "socketeer.authorisation.staff.user.alice": hashed,
            "socketeer.authorisation.guests.user.bob": "plain:pass",
        }
    )
    config = parse_config(text, PATH)
    assert config.warnings == ()
    proxy = config.sourcesinks[1].proxy
    assert proxy is not None
    assert (proxy.socks4, proxy.socks5, proxy.http) == (False, True, True)
    assert proxy.handshake_timeout == 2.5 and proxy.idle_timeout == 0.0
    auth = Authenticator(proxy.users)
    assert auth.check("alice", "s3cret") and not auth.check("alice", "wrong")
    assert auth.check("bob", "plain:pass") and not auth.check("carol", "plain:pass")
    assert "s3cret" not in repr(config) and "plain:pass" not in repr(config)
    assert config.sourcesinks[0].proxy is None  # the sink


def test_malformed_password_hash_is_an_error() -> None:
    text = render(
        {
            "1.fixedHost": None,
            "1.fixedPort": None,
            "1.authorisation": "staff",
            "socketeer.authorisation.staff.user.alice": "pbkdf2-sha256$12$zz$!!",
        }
    )
    with pytest.raises(ConfigError, match="malformed password hash"):
        parse_config(text, PATH)


# The limits of the broker and of logins: each is a key whose bad value names the key,
# the line and what is allowed, like every other key.
LIMIT_CASES = [
    ("g.messagingserversubscriberqueue", "10", "65536..1073741824"),
    ("g.messagingserverslowsubscribertimeout", "-1", "> 0"),
    ("g.messagingserverhandshaketimeout", "0", "> 0"),
    ("g.messagingservermaxconnectframesize", "100", "1024..65536"),
    ("g.messagingservermaxconnections", "0", "1..1000000"),
    ("g.messagingservermaxconnectionsperaddress", "x", "1..1000000"),
    ("g.messagingservermaxtransactions", "-1", "0..65536"),
    ("g.messagingservermaxtransactionbytes", "12", "1024..1073741824"),
]


@pytest.mark.parametrize(("short_key", "value", "allowed"), LIMIT_CASES)
def test_broker_limit_errors_point_at_the_key(short_key: str, value: str, allowed: str) -> None:
    text = render({short_key: value})
    key = full(short_key)
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    assert info.value.key == key and info.value.line == line_of(text, key)
    assert "; allowed: " in str(info.value) and allowed in str(info.value)


def test_broker_limits_are_read() -> None:
    config = parse_config(
        render(
            {
                "g.messagingserversubscriberqueue": "65536",
                "g.messagingserverslowsubscribertimeout": "2.5",
                "g.messagingservermaxconnections": "7",
                "g.messagingservermaxtransactions": "0",
            }
        ),
        PATH,
    )
    broker = config.broker
    assert (broker.subscriber_queue, broker.slow_subscriber_timeout) == (65536, 2.5)
    assert (broker.limits.max_connections, broker.limits.max_transactions) == (7, 0)
