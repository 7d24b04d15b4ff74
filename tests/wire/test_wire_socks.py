"""SocksServer: SOCKS4/4a/5 handshakes, refusals, reply encodings, split-invariance, fuzzing."""

from __future__ import annotations

import ast
import ipaddress
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketeer.wire import socks
from socketeer.wire.socks import (
    SOCKS4_GRANTED,
    SOCKS4_REJECTED,
    Command,
    NeedsAuth,
    Request,
    Socks5Reply,
    SocksError,
    SocksServer,
)

# -- client-side encoders (what a SOCKS client sends) ---------------------------------


def s4(cmd: int, port: int, ip: str, userid: bytes = b"") -> bytes:
    return struct.pack("!BBH4s", 4, cmd, port, ipaddress.IPv4Address(ip).packed) + userid + b"\0"


def s4a(cmd: int, port: int, host: bytes, userid: bytes = b"", x: int = 1) -> bytes:
    return struct.pack("!BBHBBBB", 4, cmd, port, 0, 0, 0, x) + userid + b"\0" + host + b"\0"


def greeting(*methods: int) -> bytes:
    return bytes([5, len(methods), *methods])


def auth(user: bytes, password: bytes) -> bytes:
    return bytes([1, len(user)]) + user + bytes([len(password)]) + password


def s5(cmd: int, host: str | bytes, port: int, atyp: int | None = None) -> bytes:
    if isinstance(host, bytes):
        addr, atyp = bytes([len(host)]) + host, 3 if atyp is None else atyp
    else:
        ip = ipaddress.ip_address(host)
        addr, atyp = ip.packed, 1 if ip.version == 4 else 4
    return bytes([5, cmd, 0, atyp]) + addr + struct.pack("!H", port)


def run(server: SocksServer, chunks, auth_ok: bool = True):
    """Feed chunks as an adapter would: returns (events, bytes written, error or None)."""
    events: list = []
    sent = bytearray()
    try:
        for chunk in chunks:
            server.receive_data(chunk)
            while (event := server.next_event()) is not None:
                events.append(event)
                if isinstance(event, NeedsAuth):
                    server.auth_result(auth_ok)
            sent += server.data_to_send()
    except SocksError as err:
        return events, bytes(sent + err.reply), err
    return events, bytes(sent), None


def one_shot(data: bytes, **kw):
    return run(SocksServer(**kw), [data])


def byte_by_byte(data: bytes, **kw):
    return run(SocksServer(**kw), [data[i : i + 1] for i in range(len(data))])


ZERO4 = bytes(4) + b"\0\0"
S4_REJECT = b"\x00\x5b" + bytes(6)


def s5_refusal(code: int) -> bytes:
    return bytes([5, code, 0, 1]) + ZERO4


# -- successful handshakes --------------------------------------------------------------

OK_CASES = [
    (
        "socks4 connect",
        {},
        s4(1, 80, "10.1.2.3", b"alice"),
        Request(4, Command.CONNECT, "10.1.2.3", 80, "ipv4", "alice"),
        b"",
    ),
    (
        "socks4 empty userid",
        {},
        s4(1, 443, "192.0.2.1"),
        Request(4, Command.CONNECT, "192.0.2.1", 443, "ipv4", ""),
        b"",
    ),
    (
        "socks4 bind delivered",
        {},
        s4(2, 0, "0.0.0.0"),
        Request(4, Command.BIND, "0.0.0.0", 0, "ipv4", ""),
        b"",
    ),
    (
        "socks4a connect",
        {},
        s4a(1, 8080, b"example.com", b"bob", x=7),
        Request(4, Command.CONNECT, "example.com", 8080, "domain", "bob"),
        b"",
    ),
    (
        "socks4a resolve (tor)",
        {},
        s4a(0xF0, 0, b"torproject.org"),
        Request(4, Command.RESOLVE, "torproject.org", 0, "domain", ""),
        b"",
    ),
    (
        "socks4a ip literal normalised",
        {},
        s4a(1, 22, b"127.0.0.1"),
        Request(4, Command.CONNECT, "127.0.0.1", 22, "ipv4", ""),
        b"",
    ),
    (
        "socks5 ipv4",
        {},
        greeting(0) + s5(1, "198.51.100.7", 25),
        Request(5, Command.CONNECT, "198.51.100.7", 25, "ipv4", None),
        b"\x05\x00",
    ),
    (
        "socks5 ipv6 compressed",
        {},
        greeting(0) + s5(1, "2001:db8:0:0:0:0:0:1", 443),
        Request(5, Command.CONNECT, "2001:db8::1", 443, "ipv6", None),
        b"\x05\x00",
    ),
    (
        "socks5 domain",
        {},
        greeting(0x02, 0x00) + s5(1, b"www.example.org", 80),
        Request(5, Command.CONNECT, "www.example.org", 80, "domain", None),
        b"\x05\x00",
    ),
    (
        "socks5 domain that is an ipv6 literal",
        {},
        greeting(0) + s5(1, b"0:0::1", 80),
        Request(5, Command.CONNECT, "::1", 80, "ipv6", None),
        b"\x05\x00",
    ),
    (
        "socks5 scoped ipv6 stays a name",
        {},
        greeting(0) + s5(1, b"fe80::1%eth0", 80),
        Request(5, Command.CONNECT, "fe80::1%eth0", 80, "domain", None),
        b"\x05\x00",
    ),
    (
        "socks5 port 0 delivered",
        {},
        greeting(0) + s5(1, "10.0.0.1", 0),
        Request(5, Command.CONNECT, "10.0.0.1", 0, "ipv4", None),
        b"\x05\x00",
    ),
    (
        "socks5 rsv ignored",
        {},
        greeting(0) + b"\x05\x01\x7f\x01\x0a\x00\x00\x01\x00\x50",
        Request(5, Command.CONNECT, "10.0.0.1", 80, "ipv4", None),
        b"\x05\x00",
    ),
    (
        "socks5 bind delivered",
        {},
        greeting(0) + s5(2, "0.0.0.0", 0),
        Request(5, Command.BIND, "0.0.0.0", 0, "ipv4", None),
        b"\x05\x00",
    ),
    (
        "socks5 udp associate delivered",
        {},
        greeting(0) + s5(3, "0.0.0.0", 0),
        Request(5, Command.UDP_ASSOCIATE, "0.0.0.0", 0, "ipv4", None),
        b"\x05\x00",
    ),
    (
        "socks5 resolve",
        {},
        greeting(0) + s5(0xF0, b"example.net", 0),
        Request(5, Command.RESOLVE, "example.net", 0, "domain", None),
        b"\x05\x00",
    ),
    (
        "socks5 resolve_ptr",
        {},
        greeting(0) + s5(0xF1, "192.0.2.9", 0),
        Request(5, Command.RESOLVE_PTR, "192.0.2.9", 0, "ipv4", None),
        b"\x05\x00",
    ),
    (
        "socks5 user/pass",
        {"require_auth": True},
        greeting(0, 2) + auth(b"carol", b"s3cret") + s5(1, b"example.com", 443),
        Request(5, Command.CONNECT, "example.com", 443, "domain", "carol"),
        b"\x05\x02\x01\x00",
    ),
    (
        "socks5 user/pass empty password",
        {"require_auth": True},
        greeting(2) + auth(b"dave", b"") + s5(1, "10.0.0.1", 1),
        Request(5, Command.CONNECT, "10.0.0.1", 1, "ipv4", "dave"),
        b"\x05\x02\x01\x00",
    ),
    (
        "socks4 only",
        {"socks5": False},
        s4(1, 80, "10.0.0.1"),
        Request(4, Command.CONNECT, "10.0.0.1", 80, "ipv4", ""),
        b"",
    ),
    (
        "socks5 only",
        {"socks4": False},
        greeting(0) + s5(1, "10.0.0.1", 80),
        Request(5, Command.CONNECT, "10.0.0.1", 80, "ipv4", None),
        b"\x05\x00",
    ),
]


@pytest.mark.parametrize(
    ("kw", "data", "request_", "sent"), [c[1:] for c in OK_CASES], ids=[c[0] for c in OK_CASES]
)
@pytest.mark.parametrize("feed", [one_shot, byte_by_byte])
def test_success(feed, kw, data, request_, sent):
    events, written, err = feed(data, **kw)
    assert err is None
    assert events[-1] == request_
    assert written == sent
    assert [type(e) for e in events[:-1]] == ([NeedsAuth] if kw.get("require_auth") else [])


def test_version_attribute():
    server = SocksServer()
    assert server.version is None
    server.receive_data(b"\x05")
    assert server.version == 5
    server = SocksServer()
    server.receive_data(b"\x04")
    assert server.version == 4


# -- refusals ----------------------------------------------------------------------------

BAD_CASES = [
    ("not socks", {}, b"GET / HTTP/1.1\r\n", b"", "not a SOCKS request"),
    ("tls hello", {}, b"\x16\x03\x01", b"", "not a SOCKS request"),
    ("socks4 disabled", {"socks4": False}, s4(1, 80, "10.0.0.1"), S4_REJECT, "SOCKS4 is disabled"),
    ("socks5 disabled", {"socks5": False}, greeting(0), b"\x05\xff", "SOCKS5 is disabled"),
    (
        "socks4 with require_auth",
        {"require_auth": True},
        s4(1, 80, "10.0.0.1", b"u"),
        S4_REJECT,
        "cannot carry a password",
    ),
    ("socks4 unknown cd", {}, s4(3, 80, "10.0.0.1"), S4_REJECT, "command 0x03"),
    ("socks4 resolve_ptr", {}, s4(0xF1, 0, "10.0.0.1"), S4_REJECT, "command 0xf1"),
    ("socks4 userid too long", {}, s4(1, 80, "10.0.0.1", b"u" * 256), S4_REJECT, "USERID"),
    ("socks4a host too long", {}, s4a(1, 80, b"h" * 256), S4_REJECT, "host name longer"),
    ("socks4a empty host", {}, s4a(1, 80, b""), S4_REJECT, "host name"),
    ("socks4a bad host char", {}, s4a(1, 80, b"a b"), S4_REJECT, "host name"),
    ("nmethods 0", {}, b"\x05\x00", b"\x05\xff", "no methods"),
    ("only gssapi", {}, greeting(1), b"\x05\xff", "no acceptable"),
    ("auth required, none offered", {"require_auth": True}, greeting(0), b"\x05\xff", "no accept"),
    ("auth offered, not enabled", {}, greeting(2), b"\x05\xff", "no acceptable"),
    (
        "rfc1929 bad version",
        {"require_auth": True},
        greeting(2) + b"\x05\x01u\x01p",
        b"\x05\x02\x01\x01",
        "RFC 1929 version",
    ),
    (
        "rfc1929 empty user",
        {"require_auth": True},
        greeting(2) + auth(b"", b"pw"),
        b"\x05\x02\x01\x01",
        "empty RFC 1929 user",
    ),
    ("unknown cmd", {}, greeting(0) + s5(4, "10.0.0.1", 80), b"\x05\x00" + s5_refusal(7), "0x04"),
    (
        "unknown atyp",
        {},
        greeting(0) + b"\x05\x01\x00\x02abcd\x00\x50",
        b"\x05\x00" + s5_refusal(8),
        "address type 0x02",
    ),
    ("request ver 4", {}, greeting(0) + b"\x04\x01\x00\x01", b"\x05\x00" + s5_refusal(1), "vers"),
    ("empty domain", {}, greeting(0) + s5(1, b"", 80), b"\x05\x00" + s5_refusal(1), "domain"),
    ("nul in domain", {}, greeting(0) + s5(1, b"a\0b", 80), b"\x05\x00" + s5_refusal(1), "domain"),
    ("space in domain", {}, greeting(0) + s5(1, b"a b", 80), b"\x05\x00" + s5_refusal(1), "domain"),
    (
        "utf-8 domain",
        {},
        greeting(0) + s5(1, "bücher.de".encode(), 80),
        b"\x05\x00" + s5_refusal(1),
        "domain",
    ),
    (
        "socks4 over max_buffer",
        {"max_buffer": 16},
        s4(1, 80, "10.0.0.1", b"x" * 20),
        S4_REJECT,
        "longer than 16",
    ),
    (
        "socks5 request over max_buffer",
        {"max_buffer": 20},
        greeting(0) + s5(1, b"a" * 30, 80),
        b"\x05\x00" + s5_refusal(1),
        "longer than 20",
    ),
    ("greeting over max_buffer", {"max_buffer": 8}, greeting(*range(10)), b"\x05\xff", "longer"),
]


@pytest.mark.parametrize(
    ("kw", "data", "reply", "message"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
@pytest.mark.parametrize("feed", [one_shot, byte_by_byte])
def test_refusal(feed, kw, data, reply, message):
    events, written, err = feed(data, **kw)
    assert isinstance(err, SocksError)
    assert message in str(err)
    assert written == reply
    assert not any(isinstance(e, Request) for e in events)


def test_error_reply_includes_unsent_output_and_is_raised_once_with_reply():
    server = SocksServer()
    server.receive_data(greeting(0) + s5(9, "10.0.0.1", 80) + b"more")
    with pytest.raises(SocksError) as first:
        server.next_event()
    assert first.value.reply == b"\x05\x00" + s5_refusal(7)
    assert server.data_to_send() == b""
    server.receive_data(b"ignored")  # never raises
    with pytest.raises(SocksError) as again:
        server.next_event()
    assert again.value.reply == b""
    assert server.buffered == 0


def test_unbounded_userid_stream_is_cut_off():
    server = SocksServer()
    server.receive_data(s4(1, 80, "10.0.0.1")[:8])
    for _ in range(300):
        server.receive_data(b"u")
        assert server.buffered <= 1024
    with pytest.raises(SocksError, match="USERID"):
        server.next_event()


def test_constructor_checks():
    with pytest.raises(ValueError):
        SocksServer(socks4=False, socks5=False)
    with pytest.raises(ValueError):
        SocksServer(max_buffer=0)


# -- authentication ----------------------------------------------------------------------


def test_auth_pipelined_waits_for_auth_result():
    server = SocksServer(require_auth=True)
    server.receive_data(greeting(0, 2) + auth(b"erin", b"pw") + s5(1, "10.0.0.1", 80) + b"data")
    assert server.data_to_send() == b"\x05\x02"
    event = server.next_event()
    assert event == NeedsAuth("erin", "pw")
    assert server.next_event() is None  # the request waits for the verdict
    assert server.trailing_data() == b""
    server.auth_result(True)
    assert server.data_to_send() == b"\x01\x00"
    assert server.next_event() == Request(5, Command.CONNECT, "10.0.0.1", 80, "ipv4", "erin")
    assert server.trailing_data() == b"data"


def test_auth_failure_kills_the_handshake():
    server = SocksServer(require_auth=True)
    server.receive_data(greeting(2) + auth(b"erin", b"wrong") + s5(1, "10.0.0.1", 80) + b"x")
    assert server.data_to_send() == b"\x05\x02"
    assert isinstance(server.next_event(), NeedsAuth)
    server.auth_result(False)
    assert server.data_to_send() == b"\x01\x01"
    with pytest.raises(SocksError, match="authentication failed") as exc:
        server.next_event()
    assert exc.value.reply == b""
    server.receive_data(b"more")
    with pytest.raises(SocksError):
        server.next_event()
    assert server.trailing_data() == b""
    with pytest.raises(RuntimeError):
        server.reply(0)


def test_auth_failure_reply_carried_by_error_if_not_taken():
    server = SocksServer(require_auth=True)
    server.receive_data(greeting(2) + auth(b"u", b"p"))
    server.next_event()
    server.auth_result(False)
    with pytest.raises(SocksError) as exc:
        server.next_event()
    assert exc.value.reply == b"\x05\x02\x01\x01"


def test_auth_result_without_needs_auth():
    server = SocksServer()
    with pytest.raises(RuntimeError):
        server.auth_result(True)


def test_credentials_are_lossless():
    server = SocksServer(require_auth=True)
    server.receive_data(greeting(2) + auth(b"\xffuser", "pässword".encode() + b"\x80"))
    event = server.next_event()
    assert event.username.encode("utf-8", "surrogateescape") == b"\xffuser"
    assert event.password.encode("utf-8", "surrogateescape") == "pässword".encode() + b"\x80"
    assert "pässword" not in repr(event)


# -- trailing data and replies ----------------------------------------------------------


def test_trailing_data_is_kept_and_taken_once():
    server = SocksServer()
    server.receive_data(s4a(1, 80, b"example.com") + b"GET / HTTP/1.0\r\n")
    server.receive_data(b"\r\n")
    assert server.trailing_data() == b""  # not before the Request is delivered
    assert isinstance(server.next_event(), Request)
    assert server.trailing_data() == b"GET / HTTP/1.0\r\n\r\n"
    assert server.trailing_data() == b""
    server.receive_data(b"late")
    assert server.next_event() is None
    assert server.trailing_data() == b"late"
    assert server.buffered == 0


def delivered(data: bytes, **kw) -> SocksServer:
    server = SocksServer(**kw)
    server.receive_data(data)
    while not isinstance(server.next_event(), Request):
        pass
    return server


REPLY_CASES = [
    ("s5 ipv4", greeting(0) + s5(1, "10.0.0.1", 80), (0, "10.0.0.1", 8080),
     b"\x05\x00\x00\x01\x0a\x00\x00\x01\x1f\x90"),
    ("s5 default", greeting(0) + s5(1, "10.0.0.1", 80), (Socks5Reply.CONNECTION_REFUSED,),
     b"\x05\x05\x00\x01" + ZERO4),
    ("s5 ipv6", greeting(0) + s5(1, "::1", 80), (0, "2001:db8::2", 1),
     b"\x05\x00\x00\x04" + ipaddress.IPv6Address("2001:db8::2").packed + b"\x00\x01"),
    ("s5 resolve", greeting(0) + s5(0xF0, b"a.example", 0), (0, "192.0.2.33", 0),
     b"\x05\x00\x00\x01\xc0\x00\x02\x21\x00\x00"),
    ("s5 resolve_ptr", greeting(0) + s5(0xF1, "192.0.2.33", 0), (0, "host.example", 0),
     b"\x05\x00\x00\x03\x0chost.example\x00\x00"),
    ("s5 not supported", greeting(0) + s5(2, "0.0.0.0", 0), (Socks5Reply.COMMAND_NOT_SUPPORTED,),
     s5_refusal(7)),
    ("s4 granted", s4(1, 80, "10.0.0.1"), (SOCKS4_GRANTED, "10.0.0.1", 80),
     b"\x00\x5a\x00\x50\x0a\x00\x00\x01"),
    ("s4 rejected", s4(1, 80, "10.0.0.1"), (SOCKS4_REJECTED,), S4_REJECT),
    ("s4 ipv6 bound", s4(1, 80, "10.0.0.1"), (SOCKS4_GRANTED, "::1", 443),
     b"\x00\x5a\x01\xbb\x00\x00\x00\x00"),
    ("s4a resolve", s4a(0xF0, 0, b"a.example"), (SOCKS4_GRANTED, "192.0.2.33"),
     b"\x00\x5a\x00\x00\xc0\x00\x02\x21"),
    ("s4 domain bound", s4(1, 80, "10.0.0.1"), (SOCKS4_GRANTED, "x.example", 1),
     b"\x00\x5a\x00\x01" + bytes(4)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "args", "expected"), [c[1:] for c in REPLY_CASES], ids=[c[0] for c in REPLY_CASES]
)
def test_reply_encoding(data, args, expected):
    assert delivered(data).reply(*args) == expected


def test_reply_misuse():
    with pytest.raises(RuntimeError):
        SocksServer().reply(0)
    server = delivered(greeting(0) + s5(1, "10.0.0.1", 80))
    for bad in [(256,), (-1,), (0, "10.0.0.1", 65536), (0, "ä.example"), (0, "a" * 256), (0, "")]:
        with pytest.raises(ValueError):
            server.reply(*bad)
    server.reply(0)
    with pytest.raises(RuntimeError):
        server.reply(0)


# -- properties --------------------------------------------------------------------------

labels = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
ports = st.integers(0, 65535)
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
names = st.binary(min_size=1, max_size=40)


@st.composite
def valid_handshakes(draw):
    """(server kwargs, client bytes, the Request the server must deliver)."""
    version = draw(st.sampled_from(["4", "4a", "5"]))
    port = draw(ports)
    if version == "4":
        cmd = draw(st.sampled_from([1, 2, 0xF0]))
        host, user = draw(ipv4s), draw(st.binary(max_size=255).filter(lambda b: b"\0" not in b))
        if host.startswith("0.0.0.") and host != "0.0.0.0":
            host = "0.0.0.0"
        data = s4(cmd, port, host, user)
        req = Request(4, Command(cmd), host, port, "ipv4", user.decode("utf-8", "surrogateescape"))
        return {}, data, req
    if version == "4a":
        cmd = draw(st.sampled_from([1, 2, 0xF0]))
        host, user = draw(domains), draw(names.filter(lambda b: b"\0" not in b))
        data = s4a(cmd, port, host.encode(), user, x=draw(st.integers(1, 255)))
        req = Request(
            4, Command(cmd), host, port, "domain", user.decode("utf-8", "surrogateescape")
        )
        return {}, data, req
    cmd = draw(st.sampled_from(list(Command)))
    kind = draw(st.sampled_from(["ipv4", "ipv6", "domain"]))
    host = draw({"ipv4": ipv4s, "ipv6": ipv6s, "domain": domains}[kind])
    request = s5(cmd, host.encode() if kind == "domain" else host, port)
    if draw(st.booleans()):
        user, password = draw(names), draw(st.binary(max_size=255))
        data = greeting(*draw(st.permutations([0, 1, 2]))) + auth(user, password) + request
        username = user.decode("utf-8", "surrogateescape")
        return {"require_auth": True}, data, Request(5, Command(cmd), host, port, kind, username)
    data = greeting(*draw(st.lists(st.integers(0, 255), max_size=20)), 0) + request
    return {}, data, Request(5, Command(cmd), host, port, kind, None)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300)
@given(valid_handshakes(), st.lists(st.integers(0, 2000), max_size=30), st.binary(max_size=50))
def test_any_split_gives_the_same_request(handshake, cuts, payload):
    kw, data, expected = handshake
    server = SocksServer(**kw)
    events, written, err = run(server, split(data + payload, cuts))
    assert err is None
    assert events[-1] == expected
    assert server.trailing_data() == payload
    assert written == one_shot(data, **kw)[1]


prefixes = st.sampled_from(
    [b"", b"\x04", b"\x04\x01", b"\x05", b"\x05\x01\x00", b"\x05\x01\x02\x01", b"\x05\x01\x00\x05"]
)


@settings(max_examples=500)
@given(
    prefixes,
    st.binary(max_size=600),
    st.lists(st.integers(0, 2000), max_size=40),
    st.fixed_dictionaries(
        {
            "socks4": st.booleans(),
            "require_auth": st.booleans(),
            "max_buffer": st.sampled_from([1, 9, 30, 300, 1024]),
        }
    ),
    st.booleans(),
)
def test_fuzz_only_events_or_socks_error_bounded_and_split_invariant(
    prefix, junk, cuts, kw, auth_ok
):
    data = prefix + junk
    server = SocksServer(**kw)
    outcome: list = []
    try:
        for chunk in split(data, cuts):
            server.receive_data(chunk)
            assert server.buffered <= kw["max_buffer"]
            while (event := server.next_event()) is not None:
                assert isinstance(event, Request | NeedsAuth)
                outcome.append(event)
                if isinstance(event, NeedsAuth):
                    server.auth_result(auth_ok)
            outcome.append(server.data_to_send())
    except SocksError as err:
        outcome += [err.reply, str(err)]
    flat = [x for x in outcome if x != b""]
    events, written, err = run(SocksServer(**kw), [data], auth_ok=auth_ok)
    assert [x for x in flat if isinstance(x, Request | NeedsAuth)] == events
    assert b"".join(x for x in flat if isinstance(x, bytes)) == written
    assert [x for x in flat if isinstance(x, str)] == ([str(err)] if err else [])


@settings(max_examples=300)
@given(
    valid_handshakes(),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(0, 2000),
    st.lists(st.integers(0, 2000), max_size=20),
)
def test_mutated_handshakes_fail_cleanly_whatever_the_split(handshake, flips, cut, cuts):
    """Near-valid input reaches the deep checks; one-shot and split feeding agree."""
    kw, data, _ = handshake
    mutated = bytearray(data)
    for pos, value in flips:
        mutated[pos % len(mutated)] = value
    mutated = bytes(mutated[: max(1, cut % (len(mutated) + 1))])
    whole = run(SocksServer(**kw), [mutated])
    server = SocksServer(**kw)
    pieces = run(server, split(mutated, cuts))
    assert server.buffered <= 1024
    assert (pieces[0], pieces[1], str(pieces[2])) == (whole[0], whole[1], str(whole[2]))


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=20),
    st.binary(min_size=1, max_size=60),
    st.binary(max_size=300),
    st.booleans(),
)
def test_password_never_in_repr_or_error(user, secret, tail, ok):
    password = b"PW#" + secret
    server = SocksServer(require_auth=True)
    texts: list[str] = []
    try:
        server.receive_data(greeting(2) + auth(user.encode(), password[:255]) + tail)
        while (event := server.next_event()) is not None:
            texts.append(repr(event))
            if isinstance(event, NeedsAuth):
                assert event.password.encode("utf-8", "surrogateescape") == password[:255]
                server.auth_result(ok)
    except SocksError as err:
        texts += [str(err), repr(err)]
    shown = password[:255].decode("utf-8", "surrogateescape")
    assert texts
    assert not any("PW#" in t or shown in t for t in texts)


# -- layering ----------------------------------------------------------------------------


def test_no_io_imports():
    tree = ast.parse(Path(socks.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }  # fmt: skip
    assert not imported & {"twisted", "socket", "time", "asyncio", "select"}
