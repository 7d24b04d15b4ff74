"""StompFrameParser and encode_frame: framing, escaping, limits, linear scanning, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from socketeer.wire.stompframing import (
    StompFrame,
    StompFrameParser,
    StompHeartBeat,
    StompLimits,
    StompProtocolError,
    can_encode_header,
    encode_frame,
)


def feed_all(parser: StompFrameParser, chunks) -> list:
    """Feed chunks, completing any handshake hold by re-assigning the version."""
    out: list = []
    for chunk in chunks:
        out += parser.feed(chunk)
        while parser.held:
            parser.version = parser.version
            out += parser.feed(b"")
    return out


def parse(data: bytes, version: str = "1.2", **kw) -> list:
    return feed_all(StompFrameParser(version, **kw), [data])


def only_frames(items: list) -> list[StompFrame]:
    return [f for f in items if isinstance(f, StompFrame)]


# -- framing -----------------------------------------------------------------


def test_one_frame():
    [frame] = parse(b"SEND\ndestination:/queue/a\nfoo:bar\n\nhello\x00")
    assert frame.command == "SEND"
    assert frame.rawHeaders == [("destination", "/queue/a"), ("foo", "bar")]
    assert frame.body == b"hello"
    assert frame.version == "1.2"


def test_several_frames_in_one_read_and_split_frames():
    data = b"SEND\ndestination:a\n\none\x00SEND\ndestination:b\n\ntwo\x00"
    whole = parse(data)
    assert [f.body for f in whole] == [b"one", b"two"]
    parser = StompFrameParser("1.2")
    assert parser.feed(data[:20]) == []
    rest = parser.feed(data[20:])
    assert [(f.command, f.body) for f in rest] == [("SEND", b"one"), ("SEND", b"two")]


def test_byte_by_byte():
    data = b"MESSAGE\r\ndestination:a\r\ncontent-length:3\r\n\r\na\x00b\x00\n"
    parser = StompFrameParser("1.2")
    out = feed_all(parser, [data[i : i + 1] for i in range(len(data))])
    assert out[0].body == b"a\x00b"
    assert out[1] == StompHeartBeat()
    assert parser.buffered == 0


def test_content_length_body_may_hold_nuls():
    [frame] = parse(b"SEND\ncontent-length:5\n\n\x00\x00a\x00\x00\x00")
    assert frame.body == b"\x00\x00a\x00\x00"


def test_content_length_without_nul_is_an_error():
    with pytest.raises(StompProtocolError, match="NUL"):
        parse(b"SEND\ncontent-length:2\n\nabc\x00")


def test_without_content_length_body_ends_at_first_nul():
    first, second = parse(b"SEND\n\nab\x00SEND\n\ncd\x00")
    assert (first.body, second.body) == (b"ab", b"cd")


@pytest.mark.parametrize("value", ["abc", "-1", "+1", " 1", "1.5", "", "\u0663"])
def test_bad_content_length(value):
    with pytest.raises(StompProtocolError, match="content-length"):
        parse(f"SEND\ncontent-length:{value}\n\n\x00".encode())


def test_repeated_header_first_value_wins():
    [frame] = parse(b"SEND\nfoo:1\nfoo:2\ncontent-length:1\ncontent-length:5\n\nx\x00")
    assert frame.headers["foo"] == "1"
    assert frame.body == b"x"
    assert frame.rawHeaders[:2] == [("foo", "1"), ("foo", "2")]


def test_crlf_line_ends():
    [frame] = parse(b"SEND\r\ndestination:a\r\n\r\nx\x00")
    assert frame.headers == {"destination": "a"}


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_heartbeats_between_frames(version):
    out = parse(b"\n\r\nSEND\n\n\x00\n", version)
    assert out[:2] == [StompHeartBeat(), StompHeartBeat()]
    assert out[2].command == "SEND"
    assert out[3] == StompHeartBeat()


def test_heartbeats_skipped_in_1_0():
    out = parse(b"\n\r\nSEND\n\n\x00\n", "1.0")
    assert [f.command for f in out] == ["SEND"]


def test_lone_carriage_return_between_frames():
    parser = StompFrameParser("1.2")
    assert parser.feed(b"\r") == []
    with pytest.raises(StompProtocolError, match="carriage return"):
        parser.feed(b"X")


# -- commands ----------------------------------------------------------------


@pytest.mark.parametrize("command", [b"FOO", b"send", b"Send", b"SEND ", b"\xffSEND"])
def test_unknown_or_miscased_command(command):
    with pytest.raises(StompProtocolError, match="unknown command"):
        parse(command + b"\n\n\x00")


def test_client_and_server_commands_accepted():
    for command in ["SEND", "SUBSCRIBE", "MESSAGE", "RECEIPT", "ERROR", "NACK", "CONNECTED"]:
        assert parse(f"{command}\n\n\x00".encode(), "1.2")[0].command == command


def test_nack_unknown_in_1_0_but_stomp_accepted():
    with pytest.raises(StompProtocolError):
        parse(b"NACK\n\n\x00", "1.0")
    assert parse(b"STOMP\naccept-version:1.2\n\n\x00", "1.0")[0].command == "STOMP"


def test_body_not_allowed_for_subscribe_in_1_2():
    with pytest.raises(StompProtocolError, match="must not have a body"):
        parse(b"SUBSCRIBE\nid:1\n\nxyz\x00")
    with pytest.raises(StompProtocolError, match="must not have a body"):
        parse(b"SUBSCRIBE\ncontent-length:1\n\nx\x00")
    assert parse(b"SUBSCRIBE\nid:1\n\nxyz\x00", "1.0")[0].body == b"xyz"


# -- escaping ----------------------------------------------------------------


def test_unescape_1_2():
    [frame] = parse(b"SEND\na\\cb:x\\ny\\rz\\\\w\\c\n\n\x00")
    assert frame.rawHeaders == [("a:b", "x\ny\rz\\w:")]


def test_unescape_1_1_has_no_carriage_return_escape():
    [frame] = parse(b"SEND\nk:x\\ny\\cz\n\n\x00", "1.1")
    assert frame.headers == {"k": "x\ny:z"}
    with pytest.raises(StompProtocolError, match="escape"):
        parse(b"SEND\nk:x\\ry\n\n\x00", "1.1")


def test_1_0_has_no_escaping():
    [frame] = parse(b"SEND\nk:x\\ny\\t\n\n\x00", "1.0")
    assert frame.headers == {"k": "x\\ny\\t"}


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("value", [b"a\\tb", b"a\\", b"\\x"])
def test_undefined_escape_is_an_error(version, value):
    with pytest.raises(StompProtocolError, match="escape"):
        parse(b"SEND\nk:" + value + b"\n\n\x00", version)


@pytest.mark.parametrize("command", [b"CONNECT", b"CONNECTED"])
def test_connect_headers_never_unescaped(command):
    [frame] = parse(command + b"\nlogin:a\\cb\\t\n\n\x00", "1.2")
    assert frame.headers == {"login": "a\\cb\\t"}


def test_bare_colon_in_value_is_kept():
    [frame] = parse(b"SEND\ndestination:/queue/a:b\\cc\n\n\x00")
    assert frame.headers == {"destination": "/queue/a:b:c"}


def test_headers_are_utf8():
    [frame] = parse("SEND\nk:fenêtre\n\n\x00".encode(), "1.0")
    assert frame.headers == {"k": "fenêtre"}
    with pytest.raises(StompProtocolError, match="UTF-8"):
        parse(b"SEND\nk:\xff\xfe\n\n\x00")


@pytest.mark.parametrize("line", [b"nocolon", b":value"])
def test_malformed_header_line(line):
    with pytest.raises(StompProtocolError, match="header"):
        parse(b"SEND\n" + line + b"\n\n\x00")


# -- handshake hold ----------------------------------------------------------


def test_parsing_waits_for_the_version_after_connect():
    parser = StompFrameParser()
    data = b"CONNECT\naccept-version:1.2\n\n\x00SEND\nk:a\\cb\n\n\x00\n"
    [connect] = parser.feed(data)
    assert connect.command == "CONNECT"
    assert parser.held and parser.feed(b"") == []
    parser.version = "1.2"
    send, beat = parser.feed(b"")
    assert send.headers == {"k": "a:b"} and send.version == "1.2"
    assert beat == StompHeartBeat()


def test_client_side_parser_holds_after_connected():
    parser = StompFrameParser(server=False)
    [connected] = parser.feed(b"CONNECTED\nversion:1.1\n\n\x00MESSAGE\nk:\\c\n\n\x00")
    assert connected.command == "CONNECTED"
    parser.version = "1.1"
    assert parser.feed(b"")[0].headers == {"k": ":"}


def test_held_bytes_are_bounded():
    limits = StompLimits(max_head=100, max_body=100)
    parser = StompFrameParser(limits=limits)
    parser.feed(b"CONNECT\n\n\x00")
    with pytest.raises(StompProtocolError, match="handshake"):
        parser.feed(b"x" * 300)


# -- limits and errors -------------------------------------------------------

SMALL = StompLimits(max_header_line=32, max_headers=3, max_head=80, max_body=100)


def test_header_line_too_long_before_its_end_arrives():
    parser = StompFrameParser("1.2", SMALL)
    parser.feed(b"SEND\n")
    with pytest.raises(StompProtocolError, match="header line longer than 32"):
        parser.feed(b"k:" + b"v" * 40)


def test_header_line_too_long_complete():
    with pytest.raises(StompProtocolError, match="header line longer"):
        parse(b"SEND\nk:" + b"v" * 40 + b"\n\n\x00", limits=SMALL)


def test_too_many_headers():
    with pytest.raises(StompProtocolError, match="more than 3 headers"):
        parse(b"SEND\na:1\nb:2\nc:3\nd:4\n\n\x00", limits=SMALL)


def test_head_too_large():
    head = b"SEND\n" + b"".join(b"k%d:%s\n" % (i, b"v" * 25) for i in range(3))
    with pytest.raises(StompProtocolError, match="head larger than 80"):
        parse(head + b"\n\x00", limits=SMALL)


def test_content_length_over_limit_rejected_at_the_header():
    parser = StompFrameParser("1.2", SMALL)
    with pytest.raises(StompProtocolError, match="body larger than 100"):
        parser.feed(b"SEND\ncontent-length:101\n")


def test_body_without_content_length_rejected_once_past_the_limit():
    parser = StompFrameParser("1.2", SMALL)
    parser.feed(b"SEND\n\n" + b"x" * 100)
    with pytest.raises(StompProtocolError, match="body larger than 100"):
        parser.feed(b"x")


def test_body_at_the_limit_is_fine():
    [frame] = parse(b"SEND\n\n" + b"x" * 100 + b"\x00", limits=SMALL)
    assert len(frame.body) == 100


def test_parser_is_dead_after_an_error():
    parser = StompFrameParser("1.2")
    with pytest.raises(StompProtocolError):
        parser.feed(b"BOGUS\n\n\x00")
    with pytest.raises(StompProtocolError, match="earlier"):
        parser.feed(b"SEND\n\n\x00")
    assert parser.buffered == 0


def test_error_carries_the_frames_before_it():
    with pytest.raises(StompProtocolError) as info:
        StompFrameParser("1.2").feed(b"SEND\n\nok\x00\nBOGUS\n\n\x00")
    assert [getattr(f, "body", None) for f in info.value.frames] == [b"ok", None]


def test_version_must_be_known():
    with pytest.raises(ValueError):
        StompFrameParser("2.0")


# -- linear scanning (structural, not timing) ---------------------------------


def test_big_frame_in_chunks_scans_each_byte_once():
    body = bytes(range(1, 256)) * (8 * 1024 * 1024 // 255)
    data = b"SEND\ndestination:/queue/big\n\n" + body + b"\x00"
    parser = StompFrameParser("1.2")
    out = feed_all(parser, [data[i : i + 65536] for i in range(0, len(data), 65536)])
    assert out[0].body == body
    assert parser.scanned <= len(data)


def test_content_length_body_is_not_scanned():
    body = b"\x00" * (8 * 1024 * 1024)
    data = b"SEND\ncontent-length:%d\n\n" % len(body) + body + b"\x00"
    parser = StompFrameParser("1.2")
    out = feed_all(parser, [data[i : i + 65536] for i in range(0, len(data), 65536)])
    assert out[0].body == body
    assert parser.scanned < 100


def test_byte_by_byte_many_frames_is_linear():
    data = b"\n".join(b"SEND\ndestination:/q/%d\nx:y\n\nbody%d\x00" % (i, i) for i in range(200))
    parser = StompFrameParser("1.2")
    out = feed_all(parser, [data[i : i + 1] for i in range(len(data))])
    assert len(only_frames(out)) == 200
    # A head the one-go path could not take (here: not all there yet) is read once more
    # by the line-by-line path: at most twice in all.
    assert parser.scanned <= 2 * len(data)


def test_crlf_heads_are_not_searched_past():
    """A CRLF head is not plain: the one-go path must give up at its first CR, not search
    on through the frames behind it for a blank LF line (up to max_head bytes per frame)."""
    data = b"SEND\r\ndestination:/q\r\n\r\n\x00" * 5000
    parser = StompFrameParser("1.2")
    assert len(only_frames(parser.feed(data))) == 5000
    assert parser.scanned <= 2 * len(data)


# -- encoding ----------------------------------------------------------------


def test_encode_adds_content_length_for_binary_bodies():
    frame = StompFrame("MESSAGE", {"destination": "/t"}, b"a\x00b", version="1.2")
    data = encode_frame(frame)
    assert data.startswith(b"MESSAGE\ncontent-length:3\n")
    assert parse(data)[0].body == b"a\x00b"
    assert "content-length" not in frame.headers  # the frame is not modified


def test_encode_corrects_a_wrong_content_length():
    frame = StompFrame("SEND", rawHeaders=[("content-length", "99")], body=b"xy", version="1.2")
    assert encode_frame(frame) == b"SEND\ncontent-length:2\n\nxy\x00"


def test_encode_escapes_per_version():
    headers = {"k:x": "a\nb:c\\"}
    assert encode_frame(StompFrame("SEND", headers, version="1.2")) == (
        b"SEND\nk\\cx:a\\nb\\cc\\\\\n\n\x00"
    )
    with pytest.raises(ValueError):
        encode_frame(StompFrame("SEND", headers, version="1.0"))
    assert encode_frame(StompFrame("SEND", {"k": "a:b\\n"}, version="1.0")) == (
        b"SEND\nk:a:b\\n\n\n\x00"
    )
    assert encode_frame(StompFrame("CONNECT", {"login": "a\\c"}, version="1.2")) == (
        b"CONNECT\nlogin:a\\c\n\n\x00"
    )


def test_can_encode_header():
    assert can_encode_header("1.2", "SEND", "k", "a\r\n:")
    assert not can_encode_header("1.1", "SEND", "k", "a\r")
    assert not can_encode_header("1.0", "SEND", "k", "a\n")
    assert not can_encode_header("1.0", "SEND", "k:", "a")
    assert not can_encode_header("1.2", "CONNECT", "k", "a\n")
    assert not can_encode_header("1.2", "SEND", "", "a")
    assert not can_encode_header("1.2", "SEND", "k", "\ud800")


# -- property tests ----------------------------------------------------------

VERSIONS = ["1.0", "1.1", "1.2"]
_FORBIDDEN = {"1.0": "\n\r", "1.1": "\r", "1.2": ""}


@st.composite
def frames_and_beats(draw, version: str):
    """A list of StompFrame/heart-beat items that encode_frame can represent."""
    commands = ["SEND", "MESSAGE", "ERROR", "SUBSCRIBE", "ACK", "RECEIPT", "DISCONNECT"]
    if version != "1.0":
        commands.append("NACK")
    commands += ["CONNECT", "STOMP", "CONNECTED"]
    text = st.text(
        st.characters(blacklist_characters=_FORBIDDEN[version], blacklist_categories=("Cs",)),
        max_size=12,
    )
    items = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 4)) == 0:
            items.append(StompHeartBeat())
            continue
        command = draw(st.sampled_from(commands))
        headers = []
        for _ in range(draw(st.integers(0, 4))):
            name = draw(text.filter(bool))
            value = draw(text)
            if name == "content-length" or not can_encode_header(version, command, name, value):
                continue
            headers.append((name, value))
        body = b""
        if command in ("SEND", "MESSAGE", "ERROR"):
            body = draw(st.binary(max_size=40))
        items.append(StompFrame(command, rawHeaders=headers, body=body, version=version))
    return items


@st.composite
def version_and_frames(draw):
    version = draw(st.sampled_from(VERSIONS))
    return version, draw(frames_and_beats(version))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version_and_frames(), st.lists(st.integers(0, 10_000), max_size=20))
def test_roundtrip_with_random_split_points(version_items, cuts):
    version, items = version_items
    data = b"".join(encode_frame(i) if isinstance(i, StompFrame) else b"\n" for i in items)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = feed_all(StompFrameParser(version), [data])
    pieces = feed_all(StompFrameParser(version), chunks)
    single = feed_all(StompFrameParser(version), [data[i : i + 1] for i in range(len(data))])
    assert [encode_frame(f) if f else b"\n" for f in whole] == [
        encode_frame(f) if f else b"\n" for f in pieces
    ]
    assert [encode_frame(f) if f else b"\n" for f in whole] == [
        encode_frame(f) if f else b"\n" for f in single
    ]
    expected = [i for i in items if isinstance(i, StompFrame) or version != "1.0"]
    assert len(whole) == len(expected)
    for got, sent in zip(whole, expected, strict=True):
        if isinstance(sent, StompHeartBeat):
            assert got == StompHeartBeat()
            continue
        assert got.command == sent.command
        assert got.body == sent.body
        got_headers = [h for h in got.rawHeaders if h[0] != "content-length"]
        assert got_headers == [(str(k), str(v)) for k, v in sent.rawHeaders]


FUZZ_LIMITS = StompLimits(max_header_line=40, max_headers=4, max_head=120, max_body=200)
TOKENS = [
    b"SEND",
    b"MESSAGE",
    b"CONNECT",
    b"STOMP",
    b"NACK",
    b"\n",
    b"\r",
    b"\r\n",
    b":",
    b"\x00",
    b"content-length:",
    b"0",
    b"5",
    b"250",
    b"-1",
    b"\\",
    b"\\c",
    b"\\t",
    b"a",
    b"\xff",
    b"\xc3\xa9",
    b"x" * 50,
]


def _fuzz(version: str, data: bytes, cuts: list[int], reassign: bool) -> None:
    parser = StompFrameParser(version, FUZZ_LIMITS)
    bound = FUZZ_LIMITS.max_head + FUZZ_LIMITS.max_body + 2
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    try:
        for chunk in chunks:
            for item in parser.feed(chunk):
                assert isinstance(item, StompFrame | StompHeartBeat)
            assert parser.buffered <= bound
            if reassign and parser.held:
                parser.version = "1.2"
                parser.feed(b"")
                assert parser.buffered <= bound
    except StompProtocolError:
        with pytest.raises(StompProtocolError):
            parser.feed(b"")


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(VERSIONS),
    st.binary(max_size=600),
    st.lists(st.integers(0, 600)),
    st.booleans(),
)
def test_fuzz_arbitrary_bytes(version, data, cuts, reassign):
    _fuzz(version, data, cuts, reassign)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(VERSIONS),
    st.lists(st.sampled_from(TOKENS), max_size=80),
    st.lists(st.integers(0, 2000)),
    st.booleans(),
)
def test_fuzz_frame_like_bytes(version, tokens, cuts, reassign):
    assume(tokens)
    _fuzz(version, b"".join(tokens), cuts, reassign)
