"""The HTTP proxy framer: request parsing and rewriting, body pass-through, response framing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketeer.wire.httpproxy import (
    CONNECT_ESTABLISHED,
    FORWARD_METHODS,
    MAX_HEADERS,
    BodyChunk,
    EndOfRequest,
    HttpError,
    ProxyRequest,
    RequestReader,
    ResponseReader,
    error_response,
    proxy_auth_required,
)

# -- helpers -------------------------------------------------------------------------------


class Driver:
    """Plays the adapter: drains events, starts the next request, switches on CONNECT."""

    def __init__(self, reader: RequestReader | None = None) -> None:
        self.reader = reader or RequestReader()
        self.out: list = []
        self.tunnel: bytes | None = None

    def feed(self, *chunks: bytes) -> Driver:
        for chunk in chunks:
            if self.tunnel is not None:
                self.tunnel += chunk
                continue
            self.reader.receive_data(chunk)
            self.drain()
        return self

    def drain(self) -> None:
        connect = False
        while (event := self.reader.next_event()) is not None:
            if isinstance(event, BodyChunk):
                if self.out and isinstance(self.out[-1], bytes):
                    self.out[-1] += event.data
                else:
                    self.out.append(event.data)
                continue
            self.out.append(event)
            if isinstance(event, ProxyRequest):
                connect = event.is_connect
            elif connect:
                self.tunnel = self.reader.trailing_data()
                return
            else:
                self.reader.start_next()

    @property
    def requests(self) -> list[ProxyRequest]:
        return [e for e in self.out if isinstance(e, ProxyRequest)]


def parse_one(data: bytes) -> ProxyRequest:
    return Driver().feed(data).requests[0]


def status_of(data: bytes, **kw) -> HttpError:
    with pytest.raises(HttpError) as info:
        Driver(RequestReader(**kw)).feed(data)
    return info.value


def head_lines(request: ProxyRequest) -> list[bytes]:
    assert request.head.endswith(b"\r\n\r\n")
    return request.head[:-4].split(b"\r\n")


def respond(request_head: bytes, *chunks: bytes, close: bool = False):
    """(bytes written to the client, reader) for a response to the given request."""
    reader = ResponseReader(parse_one(request_head))
    out = [piece for chunk in chunks for piece in reader.receive_data(chunk)]
    if close:
        out += reader.upstream_closed()
    assert all(isinstance(piece, bytes) and piece for piece in out)
    return b"".join(out), reader


GET = b"GET http://example.com/ HTTP/1.1\r\n\r\n"


# -- request target and method -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "host", "port", "path"),
    [
        (b"GET http://example.com/a/b?c=d HTTP/1.1", "example.com", 80, "/a/b?c=d"),
        (b"GET http://example.com HTTP/1.1", "example.com", 80, "/"),
        (b"GET http://example.com:8080/x HTTP/1.1", "example.com", 8080, "/x"),
        (b"GET http://example.com:/x HTTP/1.1", "example.com", 80, "/x"),
        (b"GET http://example.com?q HTTP/1.1", "example.com", 80, "/?q"),
        (b"GET HTTP://Example.COM/P HTTP/1.1", "example.com", 80, "/P"),
        (b"GET http://10.1.2.3:81/ HTTP/1.0", "10.1.2.3", 81, "/"),
        (b"GET http://[::1]:8080/ HTTP/1.1", "::1", 8080, "/"),
        (b"GET http://[2001:DB8:0::1]/ HTTP/1.1", "2001:db8::1", 80, "/"),
    ],
)
def test_absolute_form_targets(line, host, port, path):
    request = parse_one(line + b"\r\n\r\n")
    assert (request.target_host, request.target_port, request.path) == (host, port, path)
    assert not request.is_connect
    assert head_lines(request)[0] == f"GET {path} HTTP/{request.http_version}".encode()


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        (b"example.com:443", "example.com", 443),
        (b"10.0.0.1:22", "10.0.0.1", 22),
        (b"[::1]:443", "::1", 443),
    ],
)
def test_connect_targets(target, host, port):
    request = parse_one(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    assert request.is_connect and request.method == "CONNECT"
    assert (request.target_host, request.target_port) == (host, port)
    assert request.head == b"" and not request.expects_body


@pytest.mark.parametrize("method", sorted(FORWARD_METHODS))
def test_forward_methods_accepted(method):
    request = parse_one(method.encode() + b" http://h/ HTTP/1.1\r\n\r\n")
    assert request.method == method
    assert request.head.startswith(method.encode() + b" / HTTP/1.1\r\n")


@pytest.mark.parametrize("method", [b"TRACE", b"PROPFIND", b"get", b"BREW"])
def test_other_methods_are_501(method):
    assert status_of(method + b" http://h/ HTTP/1.1\r\n\r\n").status == 501


def test_connect_keeps_trailing_bytes_for_the_tunnel():
    driver = Driver().feed(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03\x01hello")
    assert [type(e) for e in driver.out] == [ProxyRequest, EndOfRequest]
    assert driver.tunnel == b"\x16\x03\x01hello"
    assert driver.reader.buffered == 0
    with pytest.raises(RuntimeError):
        driver.reader.receive_data(b"more")


def test_connect_trailing_bytes_in_later_reads_stay_buffered():
    reader = RequestReader()
    reader.receive_data(b"CONNECT h:443 HTTP/1.1\r\n\r\nab")
    assert reader.next_event().is_connect
    reader.receive_data(b"cd")
    assert reader.trailing_data() == b"abcd"


def test_rejected_connect_lets_the_next_request_through():
    reader = RequestReader()
    reader.receive_data(b"CONNECT h:443 HTTP/1.1\r\n\r\nCONNECT h:443 HTTP/1.1\r\nX: 1\r\n\r\n")
    assert reader.next_event().is_connect
    assert reader.next_event() == EndOfRequest()
    assert reader.next_event() is None
    reader.start_next()
    assert reader.next_event().is_connect


def test_trailing_data_only_after_connect():
    reader = RequestReader()
    reader.receive_data(GET)
    reader.next_event()
    with pytest.raises(RuntimeError):
        reader.trailing_data()


# -- rewriting ------------------------------------------------------------------------------


def test_rewritten_head_keeps_case_and_order():
    request = parse_one(
        b"POST http://example.com:8080/p HTTP/1.1\r\n"
        b"user-agent: t\r\nHOST: wrong.example\r\nX-A: 1\r\ncontent-length: 0\r\n"
        b"Accept: */*\r\n\r\n"
    )
    assert head_lines(request) == [
        b"POST /p HTTP/1.1",
        b"user-agent: t",
        b"HOST: example.com:8080",
        b"X-A: 1",
        b"content-length: 0",
        b"Accept: */*",
        b"Via: 1.1 socketeer",
        b"Connection: close",
    ]


def test_host_added_first_when_missing():
    request = parse_one(b"GET http://[::1]:81/ HTTP/1.0\r\nA: b\r\n\r\n")
    assert head_lines(request)[:3] == [b"GET / HTTP/1.0", b"Host: [::1]:81", b"A: b"]
    assert b"Via: 1.0 socketeer" in head_lines(request)


@pytest.mark.parametrize(
    "field",
    [
        b"Connection: keep-alive",
        b"Proxy-Connection: keep-alive",
        b"Keep-Alive: timeout=5",
        b"TE: trailers",
        b"Trailer: X-Sum",
        b"Upgrade: websocket",
        b"Proxy-Authorization: Basic dTpw",
        b"Proxy-Authenticate: Basic",
    ],
)
def test_hop_by_hop_fields_are_not_forwarded(field):
    request = parse_one(b"GET http://h/ HTTP/1.1\r\n" + field + b"\r\nX-End: 1\r\n\r\n")
    name = field.split(b":")[0].lower()
    forwarded = head_lines(request)[1:-1]
    assert not [line for line in forwarded if line.lower().startswith(name + b":")]
    assert b"X-End: 1" in head_lines(request)
    assert head_lines(request)[-1] == b"Connection: close"


def test_fields_listed_in_connection_are_removed_but_not_framing_or_host():
    request = parse_one(
        b"POST http://h/ HTTP/1.1\r\nConnection: X-Secret, content-length, Host, close\r\n"
        b"X-Secret: s\r\nContent-Length: 2\r\nHost: h\r\n\r\nok"
    )
    lines = head_lines(request)
    assert b"X-Secret: s" not in lines
    assert b"Content-Length: 2" in lines and b"Host: h" in lines
    assert not request.keep_alive


def test_via_is_appended_to_the_last_via():
    request = parse_one(b"GET http://h/ HTTP/1.1\r\nVia: 1.0 a\r\nX: y\r\nVia: 1.1 b\r\n\r\n")
    lines = head_lines(request)
    assert b"Via: 1.0 a" in lines and b"Via: 1.1 b, 1.1 socketeer" in lines


def test_identical_content_lengths_collapse():
    driver = Driver().feed(
        b"PUT http://h/ HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"
    )
    [request] = driver.requests
    assert [line for line in head_lines(request) if b"Content-Length" in line] == [
        b"Content-Length: 3"
    ]
    assert driver.out[1] == b"abc"


def test_transfer_encoding_is_kept():
    request = parse_one(b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head_lines(request)
    assert request.expects_body


def test_bare_lf_heads_and_leading_blank_lines_are_accepted():
    request = parse_one(b"\r\n\nGET http://h/ HTTP/1.1\nX: 1\n\n")
    assert head_lines(request) == [
        b"GET / HTTP/1.1",
        b"Host: h",
        b"X: 1",
        b"Via: 1.1 socketeer",
        b"Connection: close",
    ]


# -- keep-alive and credentials -------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fields", "keep"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"Connection: close\r\n", False),
        (b"1.1", b"Connection: Keep-Alive, CLOSE\r\n", False),
        (b"1.1", b"Proxy-Connection: close\r\n", False),
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", False),  # RFC 9112 9.3: never for a proxy
        (b"1.0", b"Proxy-Connection: Keep-Alive\r\n", False),
    ],
)
def test_client_keep_alive(version, fields, keep):
    request = parse_one(b"GET http://h/ HTTP/" + version + b"\r\n" + fields + b"\r\n")
    assert request.keep_alive is keep
    assert request.http_version == version.decode()


def basic(text: str) -> bytes:
    return base64.b64encode(text.encode())


@pytest.mark.parametrize(
    ("fields", "credentials"),
    [
        (b"Proxy-Authorization: Basic " + basic("alice:s3cret") + b"\r\n", ("alice", "s3cret")),
        (b"Proxy-Authorization: basic " + basic("a:b:c") + b"\r\n", ("a", "b:c")),
        (b"Proxy-Authorization: BASIC   " + basic("a:") + b"\r\n", ("a", "")),
        (
            b"Proxy-Authorization: Basic " + basic("j\u00f6rg:p\u00e4ss") + b"\r\n",
            ("j\u00f6rg", "p\u00e4ss"),
        ),
        (b"Proxy-Authorization: Bearer abc\r\n", None),
        (b"Proxy-Authorization: Basic !!!\r\n", None),
        (b"Proxy-Authorization: Basic " + basic("nocolon") + b"\r\n", None),
        (b"Proxy-Authorization: Basic\r\n", None),
        (b"Proxy-Authorization: Basic " + basic("a:b") + b"\r\n" * 2, None),
        (b"", None),
    ],
)
def test_proxy_credentials(fields, credentials):
    if fields.endswith(b"\r\n" * 2):
        fields = fields[:-2] + b"Proxy-Authorization: Basic " + basic("c:d") + b"\r\n"
    request = parse_one(b"GET http://h/ HTTP/1.1\r\n" + fields + b"\r\n")
    assert request.credentials == credentials
    assert b"roxy-Authorization" not in request.head


def test_credentials_on_connect():
    request = parse_one(
        b"CONNECT h:443 HTTP/1.1\r\nProxy-Authorization: Basic "
        + basic("alice:s3cr3t")
        + b"\r\n\r\n"
    )
    assert request.credentials == ("alice", "s3cr3t")
    assert request.credentials.user == "alice" and request.credentials.password == "s3cr3t"
    assert "s3cr3t" not in repr(request.credentials)
    assert "s3cr3t" not in repr(request) and "alice" not in str(request)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET http://h/\r\n\r\n", 400),
        (b"GET  http://h/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1 x\r\n\r\n", 400),
        (b"GET\thttp://h/ HTTP/1.1\r\n\r\n", 400),
        (b"G(T http://h/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h/a b HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h/\x01 HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h/\x7f HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h/\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h/ http/1.1\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1x\r\n\r\n", 400),
        (b"GET http://h/ HTTP/2.0\r\n\r\n", 505),
        (b"GET http://h/ HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\nHost\t: h\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\n: empty\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\n\tX: a\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nContent-Length: 1" + b"0" * 30 + b"\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n", 400),
        (b"POST http://h/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\n\r\n", 400),
        (b"GET h:80 HTTP/1.1\r\n\r\n", 400),
        (b"GET https://h/ HTTP/1.1\r\n\r\n", 501),
        (b"GET ftp://h/ HTTP/1.1\r\n\r\n", 501),
        (b"GET http://user:pw@h/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h/#frag HTTP/1.1\r\n\r\n", 400),
        (b"GET http:///x HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h_!/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h:0/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h:65536/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://h:8a/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://[::g]/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://[fe80::1%25eth0]/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://[::1/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://::1/ HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT h HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT h: HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT [::1] HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT http://h/ HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT h:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400),
        (b"CONNECT h:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ],
)
def test_request_errors(data, status):
    error = status_of(data)
    assert error.status == status
    assert error.reason and error.message
    assert str(error).startswith(f"{status} ")


def test_origin_form_error_carries_a_hint():
    error = status_of(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert "absolute URI" in error.message and "CONNECT" in error.message
    response = error.response()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"absolute URI" in response


def test_head_too_large_is_431_whatever_the_split():
    data = b"GET http://h/ HTTP/1.1\r\nX: " + b"a" * 300 + b"\r\n\r\n"
    assert status_of(data, max_head=200).status == 431
    with pytest.raises(HttpError) as info:
        Driver(RequestReader(max_head=200)).feed(*[data[i : i + 7] for i in range(0, 400, 7)])
    assert info.value.status == 431
    # a head of exactly max_head bytes is fine
    exact = b"GET http://h/ HTTP/1.1\r\nX: " + b"a" * (200 - 31) + b"\r\n\r\n"
    assert len(exact) == 200
    assert Driver(RequestReader(max_head=200)).feed(exact).requests


def test_unterminated_head_is_refused_once_it_cannot_fit():
    reader = RequestReader(max_head=100)
    reader.receive_data(b"GET http://h/ HTTP/1.1\r\n" + b"X: y\r\n" * 12)
    assert reader.next_event() is None
    reader.receive_data(b"X: y\r\n")
    with pytest.raises(HttpError) as info:
        reader.next_event()
    assert info.value.status == 431
    assert reader.buffered == 0


def test_too_many_fields_is_431():
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    assert status_of(b"GET http://h/ HTTP/1.1\r\n" + fields + b"\r\n").status == 431
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS))
    assert parse_one(b"GET http://h/ HTTP/1.1\r\n" + fields + b"\r\n")


def test_errors_are_sticky_and_input_is_dropped():
    reader = RequestReader()
    reader.receive_data(b"BAD\r\n\r\n")
    with pytest.raises(HttpError) as first:
        reader.next_event()
    reader.receive_data(GET)
    with pytest.raises(HttpError) as second:
        reader.next_event()
    assert second.value is first.value
    assert reader.buffered == 0


# -- bodies and keep-alive ------------------------------------------------------------------


def test_two_keep_alive_requests_to_different_hosts():
    driver = Driver().feed(
        b"GET http://one.example/a HTTP/1.1\r\nHost: one.example\r\n\r\n"
        b"POST http://two.example:8080/b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    )
    first, end1, second, body, end2 = driver.out
    assert (first.target_host, first.target_port, first.path) == ("one.example", 80, "/a")
    assert first.head == (
        b"GET /a HTTP/1.1\r\nHost: one.example\r\nVia: 1.1 socketeer\r\nConnection: close\r\n\r\n"
    )
    assert (second.target_host, second.target_port, second.path) == ("two.example", 8080, "/b")
    assert second.head == (
        b"POST /b HTTP/1.1\r\nHost: two.example:8080\r\nContent-Length: 5\r\n"
        b"Via: 1.1 socketeer\r\nConnection: close\r\n\r\n"
    )
    assert body == b"hello"
    assert end1 == end2 == EndOfRequest()
    assert not first.expects_body and second.expects_body


def test_requests_wait_for_start_next():
    reader = RequestReader()
    reader.receive_data(GET + GET)
    assert isinstance(reader.next_event(), ProxyRequest)
    assert reader.next_event() == EndOfRequest()
    assert reader.next_event() is None
    assert reader.next_event() is None
    reader.start_next()
    assert isinstance(reader.next_event(), ProxyRequest)
    with pytest.raises(RuntimeError):
        reader.start_next()


def test_pipelined_data_is_bounded_while_paused():
    reader = RequestReader(max_head=1000, max_pipelined=2000)
    reader.receive_data(GET)
    reader.next_event()
    reader.next_event()
    reader.receive_data(b"x" * 2000)
    with pytest.raises(HttpError):
        reader.receive_data(b"x")
    assert reader.buffered == 0


def test_content_length_body_arrives_in_pieces():
    reader = RequestReader()
    reader.receive_data(b"PUT http://h/ HTTP/1.1\r\nContent-Length: 6\r\n\r\nab")
    assert reader.next_event().expects_body
    assert reader.next_event() == BodyChunk(b"ab")
    assert reader.next_event() is None
    reader.receive_data(b"cdefGET")
    assert reader.next_event() == BodyChunk(b"cdef")
    assert reader.next_event() == EndOfRequest()
    assert reader.buffered == 3


def test_content_length_zero_has_no_body():
    driver = Driver().feed(b"POST http://h/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + GET)
    assert [type(e) for e in driver.out] == [ProxyRequest, EndOfRequest] * 2
    assert not driver.requests[0].expects_body


CHUNKED_BODY = (
    b"5;name=value;flag\r\nhello\r\n"
    b'1 ; spaced="q"\r\n!\r\n'
    b"A\r\n0123456789\r\n"
    b"0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n"
)


def test_chunked_request_body_is_byte_exact_and_next_request_parsed():
    head = b"POST http://h/up HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    driver = Driver().feed(head + CHUNKED_BODY + GET)
    first, body, end, second, end2 = driver.out
    assert body == CHUNKED_BODY
    assert second.path == "/" and end == end2 == EndOfRequest()
    # and the same one byte at a time
    data = head + CHUNKED_BODY + GET
    driver = Driver().feed(*[data[i : i + 1] for i in range(len(data))])
    assert driver.out[1] == CHUNKED_BODY
    assert driver.out[3] == second


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n",
        b"-1\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXY",
        b"5\r\nhello\n0\r\n\r\n",
        b"5;bad\x01ext\r\nhello\r\n",
        b"1" * 2000,
        b"12345678901234567\r\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"0\r\n folded: x\r\n\r\n",
        b"0\r\n" + b"".join(b"T%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n",
    ],
)
def test_chunked_request_body_errors(body):
    head = b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert status_of(head + body).status == 400


def test_chunk_size_line_limit_is_1_kib():
    head = b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    ok = b"1;" + b"e" * (1024 - 3) + b"\r\nx\r\n0\r\n\r\n"
    assert Driver().feed(head + ok).out[1] == ok
    too_long = b"1;" + b"e" * (1024 - 2) + b"\r\nx\r\n0\r\n\r\n"
    assert status_of(head + too_long).status == 400


# -- responses ------------------------------------------------------------------------------


def test_content_length_response():
    out, reader = respond(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo+junk")
    assert out == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 socketeer\r\n"
        b"Connection: keep-alive\r\n\r\nhello"
    )
    assert reader.complete and reader.client_keep_alive and reader.response_started
    assert reader.receive_data(b"more") == []
    assert reader.upstream_closed() == []


def test_chunked_response_with_extensions_and_trailers():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
    data = head + CHUNKED_BODY
    out, reader = respond(GET, *[data[i : i + 3] for i in range(0, len(data), 3)])
    assert out.endswith(b"\r\nConnection: keep-alive\r\n\r\n" + CHUNKED_BODY)
    assert b"Trailer: X-Checksum" in out
    assert reader.complete and reader.client_keep_alive


def test_close_delimited_response():
    out, reader = respond(GET, b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nsome", b" body")
    assert (
        out
        == b"HTTP/1.1 200 OK\r\nX: y\r\nVia: 1.0 socketeer\r\nConnection: close\r\n\r\nsome body"
    )
    assert not reader.complete
    assert reader.upstream_closed() == []
    assert reader.complete and not reader.client_keep_alive


@pytest.mark.parametrize(
    ("request_head", "status_line"),
    [
        (b"HEAD http://h/ HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK"),
        (GET, b"HTTP/1.1 204 No Content"),
        (GET, b"HTTP/1.1 304 Not Modified"),
    ],
)
def test_responses_without_body(request_head, status_line):
    response = status_line + b"\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n"
    out, reader = respond(request_head, response + b"ignored")
    assert out.endswith(b"Connection: keep-alive\r\n\r\n")
    assert reader.complete and reader.client_keep_alive


def test_interim_responses_are_passed_then_the_final_one():
    out, reader = respond(
        b"POST http://h/ HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    assert out == (
        b"HTTP/1.1 100 Continue\r\nVia: 1.1 socketeer\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\nVia: 1.1 socketeer\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 socketeer\r\n"
        b"Connection: keep-alive\r\n\r\nok"
    )
    assert reader.complete


def test_interim_responses_are_not_sent_to_http_1_0_clients():
    out, _ = respond(
        b"GET http://h/ HTTP/1.0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")


def test_interim_response_before_a_malformed_one_does_not_start_the_response():
    reader = ResponseReader(parse_one(GET))
    assert reader.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n")
    with pytest.raises(HttpError):
        reader.receive_data(b"garbage\r\n\r\n")
    assert not reader.response_started


def test_response_hop_by_hop_fields_are_rewritten():
    out, _ = respond(
        GET,
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\n"
        b"Proxy-Authenticate: Basic\r\nProxy-Connection: close\r\nUpgrade: h2c\r\n"
        b"Via: 1.1 origin\r\nContent-Length: 0\r\n\r\n",
    )
    assert out == (
        b"HTTP/1.1 200 OK\r\nVia: 1.1 origin, 1.1 socketeer\r\nContent-Length: 0\r\n"
        b"Connection: keep-alive\r\n\r\n"
    )


def test_transfer_encoding_overrides_content_length():
    out, reader = respond(
        GET,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert b"Content-Length" not in out and b"Connection: close" in out
    assert reader.complete and not reader.client_keep_alive


def test_non_chunked_transfer_coding_is_close_delimited():
    out, reader = respond(
        GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b", close=True
    )
    assert out.endswith(
        b"Transfer-Encoding: gzip\r\nVia: 1.1 socketeer\r\nConnection: close\r\n\r\n\x1f\x8b"
    )
    assert reader.complete and not reader.client_keep_alive


def test_duplicate_response_content_length_collapses():
    out, _ = respond(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok")
    assert out.count(b"ontent-Length") == 1 and out.endswith(b"\r\n\r\nok")


@pytest.mark.parametrize(
    ("request_head", "response", "keep"),
    [
        (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", True),
        (GET, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
        (
            b"GET http://h/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
        (b"GET http://h/ HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (  # RFC 9112 9.3: a proxy never keeps an HTTP/1.0 client's connection
            b"GET http://h/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
        (
            b"GET http://h/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            False,
        ),
        (
            b"GET http://h/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\n",
            False,
        ),
        (
            b"HEAD http://h/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\n",
            False,
        ),
    ],
)
def test_client_keep_alive_after_response(request_head, response, keep):
    out, reader = respond(request_head, response, close=True)
    assert reader.complete and reader.client_keep_alive is keep
    assert (b"Connection: keep-alive" if keep else b"Connection: close") in out


@pytest.mark.parametrize(
    "response",
    [
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 X\r\n\r\n",
        b"HTTP/1.1 600 X\r\n\r\n",
        b"HTTP/1.1 200 O\x01K\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
        + b"\r\n",
    ],
)
def test_malformed_responses_are_502_before_anything_is_sent(response):
    reader = ResponseReader(parse_one(GET))
    with pytest.raises(HttpError) as info:
        reader.receive_data(response)
    assert info.value.status == 502 and not reader.response_started
    with pytest.raises(HttpError):
        reader.receive_data(b"HTTP/1.1 200 OK\r\n\r\n")


@pytest.mark.parametrize(
    "body",
    [b"zz\r\n", b"5\r\nhelloXX", b"5\nhello\r\n", b"0\r\nno colon\r\n\r\n"],
)
def test_malformed_chunked_response_is_502_after_start(body):
    reader = ResponseReader(parse_one(GET))
    reader.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HttpError) as info:
        reader.receive_data(body)
    assert info.value.status == 502 and reader.response_started


def test_response_head_too_large():
    reader = ResponseReader(parse_one(GET), max_head=100)
    reader.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 13)
    assert reader.buffered < 100
    with pytest.raises(HttpError) as info:
        reader.receive_data(b"X: y\r\n")
    assert info.value.status == 502 and reader.buffered == 0


@pytest.mark.parametrize(
    ("data", "started"),
    [
        (b"", False),
        (b"HTTP/1.1 200 OK\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc", True),
    ],
)
def test_upstream_closing_early_is_502(data, started):
    reader = ResponseReader(parse_one(GET))
    reader.receive_data(data)
    with pytest.raises(HttpError) as info:
        reader.upstream_closed()
    assert info.value.status == 502 and reader.response_started is started
    assert not reader.complete


def test_response_reader_refuses_connect():
    with pytest.raises(ValueError):
        ResponseReader(parse_one(b"CONNECT h:1 HTTP/1.1\r\n\r\n"))


# -- generated responses --------------------------------------------------------------------


def test_error_response():
    data = error_response(
        400, "Bad Request", "caf\u00e9\n", extra_headers=[("X-Hint", "use CONNECT")]
    )
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 400 Bad Request",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: 6",
        b"Connection: close",
        b"X-Hint: use CONNECT",
    ]
    assert body == "caf\u00e9\n".encode()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": 99},
        {"reason": "Bad\r\nX: y"},
        {"extra_headers": [("X", "a\r\nSet-Cookie: b")]},
        {"extra_headers": [("X Y", "a")]},
    ],
)
def test_error_response_refuses_injection(kwargs):
    args = {"status": 400, "reason": "Bad Request", "body_text": "x", **kwargs}
    with pytest.raises(ValueError):
        error_response(**args)


def test_proxy_auth_required_and_connect_established():
    data = proxy_auth_required()
    assert data.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'\r\nProxy-Authenticate: Basic realm="socketeer"\r\n' in data
    assert b"Connection: close" in data
    with pytest.raises(ValueError):
        proxy_auth_required('a"b')
    assert CONNECT_ESTABLISHED == b"HTTP/1.1 200 Connection established\r\n\r\n"


# -- properties -----------------------------------------------------------------------------

tokens = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
field_values = st.from_regex(r"[!-~]([ -~]{0,15}[!-~])?", fullmatch=True)
paths = st.from_regex(r"/[A-Za-z0-9/._~%-]{0,16}(\?[A-Za-z0-9=&]{0,8})?", fullmatch=True)
authorities = st.sampled_from(["example.com", "example.com:8080", "10.0.0.1:81", "[::1]:8080"])
extensions = st.sampled_from([b"", b";a=b", b" ;x", b';q="v"'])


@st.composite
def bodies(draw) -> tuple[bytes, bytes]:
    """(framing header, framed body)."""
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    if kind == "none":
        return b"", b""
    if kind == "length":
        body = draw(st.binary(max_size=60))
        return b"Content-Length: %d\r\n" % len(body), body
    chunks = draw(st.lists(st.binary(min_size=1, max_size=30), max_size=4))
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(c), draw(extensions), c) for c in chunks)
    trailers = b"".join(
        b"T-%s: %s\r\n" % (n.encode(), v.encode())
        for n, v in draw(st.lists(st.tuples(tokens, field_values), max_size=2))
    )
    return b"Transfer-Encoding: chunked\r\n", framed + b"0\r\n" + trailers + b"\r\n"


@st.composite
def requests(draw) -> tuple[bytes, bytes]:
    """(whole request, its framed body)."""
    method = draw(st.sampled_from(sorted(FORWARD_METHODS)))
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    framing, body = draw(bodies())
    if version == b"1.0" and framing.startswith(b"Transfer"):
        framing, body = b"", b""
    fields = b"".join(
        b"X-%s: %s\r\n" % (n.encode(), v.encode())
        for n, v in draw(st.lists(st.tuples(tokens, field_values), max_size=3))
    )
    target = b"http://%s%s" % (draw(authorities).encode(), draw(paths).encode())
    head = b"%s %s HTTP/%s\r\n%s%s\r\n" % (method.encode(), target, version, fields, framing)
    return head + body, body


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(
    stream=st.lists(requests(), min_size=1, max_size=3),
    tunnel=st.none() | st.binary(max_size=20),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_request_stream_split_invariance(stream, tunnel, cuts):
    data = b"".join(r for r, _ in stream)
    if tunnel is not None:
        data += b"CONNECT example.com:443 HTTP/1.1\r\n\r\n" + tunnel
    whole = Driver().feed(data)
    pieces = Driver().feed(*split(data, cuts))
    assert pieces.out == whole.out
    assert pieces.tunnel == whole.tunnel == tunnel
    assert len(whole.requests) == len(stream) + (tunnel is not None)
    got_bodies = [e for e in whole.out if isinstance(e, bytes)]
    assert got_bodies == [body for _, body in stream if body]


@st.composite
def responses(draw) -> tuple[bytes, bytes, bool]:
    """(request head, response bytes, needs upstream close)."""
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]))
    request = b"%s http://h/ HTTP/1.1\r\n\r\n" % method
    interim = draw(st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n"]))
    status = draw(st.sampled_from([200, 201, 204, 304, 404]))
    kind = draw(st.sampled_from(["length", "chunked", "close"]))
    if kind == "close":
        framing, body = b"", draw(st.binary(max_size=40))
    else:
        framing, body = draw(bodies().filter(lambda b: b[0].startswith(kind[:1].upper().encode())))
    fields = b"".join(
        b"X-%s: %s\r\n" % (n.encode(), v.encode())
        for n, v in draw(st.lists(st.tuples(tokens, field_values), max_size=3))
    )
    no_body = method == b"HEAD" or status in (204, 304)
    head = b"HTTP/1.1 %d Whatever\r\n%s%s\r\n" % (status, fields, framing)
    return request, interim + head + (b"" if no_body else body), kind == "close" and not no_body


@given(case=responses(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_response_split_invariance(case, cuts):
    request_head, data, close = case
    whole, whole_reader = respond(request_head, data, close=close)
    pieces, reader = respond(request_head, *split(data, cuts), close=close)
    assert pieces == whole
    assert reader.complete and whole_reader.complete
    assert reader.client_keep_alive == whole_reader.client_keep_alive == (not close)


REQUEST_PREFIXES = [
    b"",
    b"GET http://h/ HTTP/1.1\r\n",
    b"POST http://h/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
    b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET http://h/ HTTP/1.1\r\n\r\nGET http://h/ HTTP/1.1\r\n",
]


@settings(max_examples=300)
@given(
    prefix=st.sampled_from(REQUEST_PREFIXES),
    junk=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_arbitrary_request_bytes(prefix, junk, cuts):
    reader = RequestReader(max_head=128, max_pipelined=256)
    driver = Driver(reader)
    try:
        for piece in split(prefix + junk, cuts):
            driver.feed(piece)
            if driver.tunnel is not None:
                break
            assert reader.buffered <= 256
    except HttpError as error:
        assert error.status in (400, 431, 501, 505)
        assert reader.buffered == 0
    assert all(isinstance(e, ProxyRequest | EndOfRequest | bytes) for e in driver.out)


RESPONSE_PREFIXES = [
    b"",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
]


@settings(max_examples=300)
@given(
    prefix=st.sampled_from(RESPONSE_PREFIXES),
    junk=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    close=st.booleans(),
)
def test_arbitrary_response_bytes(prefix, junk, cuts, close):
    reader = ResponseReader(parse_one(GET), max_head=128)
    try:
        for piece in split(prefix + junk, cuts):
            out = reader.receive_data(piece)
            assert all(isinstance(b, bytes) for b in out)
            assert reader.buffered < 128
        if close:
            assert reader.upstream_closed() == []
            assert reader.complete
    except HttpError as error:
        assert error.status == 502
        assert not reader.complete


secrets = st.text(min_size=1, max_size=12).map(lambda s: "Pw\u00a7" + s)
users = st.text(max_size=8).filter(lambda u: ":" not in u)


@given(
    user=users,
    password=secrets,
    tail=st.sampled_from([b"", b"X: ok\r\n", b"Bad Name: x\r\n", b"Content-Length: z\r\n"]),
    target=st.sampled_from([b"http://h/", b"h:443", b"/origin"]),
)
def test_passwords_never_appear_in_repr_or_errors(user, password, tail, target):
    method = b"CONNECT" if target == b"h:443" else b"GET"
    token = base64.b64encode(f"{user}:{password}".encode())
    data = b"%s %s HTTP/1.1\r\nProxy-Authorization: Basic %s\r\n%s\r\n" % (
        method,
        target,
        token,
        tail,
    )
    try:
        driver = Driver().feed(data)
    except HttpError as error:
        for text in (str(error), repr(error), error.message, error.response().decode()):
            assert password not in text and token.decode() not in text
        return
    [request] = driver.requests
    assert request.credentials == (user, password)
    for text in (repr(request), str(request), repr(driver.out), request.head.decode("latin-1")):
        assert password not in text and token.decode() not in text
