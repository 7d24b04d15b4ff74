"""HTTP/1.1 proxy framing: CONNECT and absolute-form requests in, origin-form requests out.

I own the HTTP side of the HTTP proxy front-end, sans-IO: bytes in, frozen events out,
bytes to send returned. No twisted, no sockets, no clocks. The Twisted adapter only moves
bytes, opens one upstream stream per request and dispatches my events.

Public API
----------
``RequestReader(max_head=65536, max_pipelined=131072)``
    Client -> proxy, one per client connection, many requests one at a time.
    ``receive_data(data)``; ``next_event()`` returns :class:`ProxyRequest`, then zero or more
    :class:`BodyChunk` (raw body bytes *with their framing*, to forward untouched), then
    :class:`EndOfRequest`, then ``None`` until ``start_next()``. ``None`` also means "need
    more data". ``trailing_data()`` after a CONNECT request hands over the bytes that follow
    the head (they belong to the tunnel) and retires the reader.
``ResponseReader(request, max_head=65536)``
    Upstream -> proxy, one per forwarded request. ``receive_data(data)`` and
    ``upstream_closed()`` return the list of byte strings to write to the client now
    (rewritten heads, then body bytes as they come; never the whole body at once).
    ``complete``, ``client_keep_alive`` and ``response_started`` tell the adapter what next.
``HttpError(status, message)``
    Every malformed, oversized or unsupported input; carries the status to answer with
    (``.status``, ``.reason``, ``.message``; ``.response()`` builds it). Messages never
    echo header values or the request target, so no secret can leak through them.
``error_response(status, reason, body_text, *, extra_headers=())``,
``proxy_auth_required(realm="socketeer")``, ``CONNECT_ESTABLISHED``
    Small responses the proxy generates itself.

Adapter loop (sketch)::

    reader.receive_data(data)
    while (event := reader.next_event()) is not None:
        ProxyRequest  -> check event.credentials (else write proxy_auth_required(); close);
                         CONNECT: open stream, write CONNECT_ESTABLISHED,
                                  stream.write(reader.trailing_data()), relay raw bytes;
                         else:    open stream, stream.write(event.head),
                                  response = ResponseReader(event)
        BodyChunk     -> stream.write(event.data)
        EndOfRequest  -> stop reading the client until the response is complete
    upstream bytes / EOF -> write each of response.receive_data(data) / upstream_closed()
    response.complete -> close the stream; if response.client_keep_alive and EndOfRequest
                         was seen: reader.start_next(), resume, drain next_event() again
                         (pipelined bytes may already be buffered); else close the client.
    HttpError         -> if not response_started: write err.response(); then close.

Decisions
---------
* Host: RFC 9112 section 3.2.2 says a proxy MUST replace a received Host with the
  authority of the absolute-form target, so I replace its value (keeping its position and
  spelling) or add one; two Host fields are a 400. Otherwise a client could reach one
  virtual host while the access list saw another.
* The forwarded request keeps the client's HTTP version (1.0 stays 1.0), so an origin never
  answers a 1.0 client with chunked coding that client cannot read.
* Hop-by-hop fields removed both ways: Connection and the fields it lists, Proxy-Connection,
  Keep-Alive, TE, Upgrade, Proxy-Authorization, Proxy-Authenticate,
  Proxy-Authentication-Info; Trailer from requests only. Content-Length, Transfer-Encoding
  and Host are never removed because Connection lists them: the body is forwarded with its
  framing, so they must stay.
* Upstream requests end with ``Connection: close``; responses get ``Connection: keep-alive``
  or ``close`` from me. Via gets ``1.x socketeer`` appended (x: the version received).
* Request framing is strict (anti-smuggling): CL with TE, differing CLs, a final coding
  other than chunked, TE in HTTP/1.0, and chunk lines not ending in CRLF are errors.
  Response framing follows RFC 9112 section 6.3: TE overrides CL (CL then dropped and the
  client connection closed), a non-chunked TE or no length means close-delimited.
* Interim 1xx responses are forwarded to HTTP/1.1 clients and dropped for HTTP/1.0 ones;
  101 is a 502 because Upgrade is never forwarded. Bytes after a complete response are
  dropped (the origin was told to close).
* Heads accept bare LF line ends (I rewrite heads anyway); chunked framing, which passes
  through untouched, must use CRLF.
* Limits: a head (and a trailer section) at most ``max_head`` bytes and 100 fields, a
  chunk-size line at most 1 KiB, and at most ``max_pipelined`` bytes buffered while a
  request is in flight (the adapter should pause the client meanwhile).
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "CONNECT_ESTABLISHED",
    "FORWARD_METHODS",
    "MAX_CHUNK_LINE",
    "MAX_HEAD",
    "MAX_HEADERS",
    "BodyChunk",
    "Credentials",
    "EndOfRequest",
    "HttpError",
    "ProxyRequest",
    "RequestReader",
    "ResponseReader",
    "error_response",
    "proxy_auth_required",
]

MAX_HEAD = 65536
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024
FORWARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: What the proxy writes to the client before relaying a tunnel (no length fields: RFC 9110).
CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

_PSEUDONYM = b"socketeer"
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-authentication-info",
    }
)
# Trailer announces trailer fields, which pass through untouched inside the chunked body;
# it is dropped from requests only, kept in responses (RFC 9110 6.6.2).
_REQUEST_HOP_BY_HOP = _HOP_BY_HOP | {b"trailer"}
_NEVER_LISTED = frozenset({b"content-length", b"transfer-encoding", b"host"})

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/1\.([01])")
_OTHER_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_STATUS = re.compile(rb"HTTP/1\.([0-9]) ([1-5][0-9][0-9])(?: (.*))?", re.S)
_REG_NAME = re.compile(r"[A-Za-z0-9._~-]{1,253}")
_PORT = re.compile(r"[0-9]{1,5}")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_HINT = (
    "This is a proxy: send an absolute URI (GET http://host/path HTTP/1.1) "
    "or CONNECT host:port HTTP/1.1."
)

Fields = list[tuple[bytes, bytes]]


# -- events and errors -------------------------------------------------------------------


class HttpError(Exception):
    """A message I cannot accept, carrying the status the proxy should answer with.

    ``message`` is a fixed text written here: it never quotes header values or targets,
    so credentials in them cannot reach logs through me.
    """

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        self.status = status
        self.reason = reason or _REASONS.get(status, "Error")
        self.message = message
        super().__init__(status, self.reason, message)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"

    def response(self) -> bytes:
        """The error response to write to the client (then close)."""
        return error_response(self.status, self.reason, self.message + "\n")


class Credentials(NamedTuple):
    """A client's Basic proxy credentials; the password stays out of the repr."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True)
class ProxyRequest:
    """One request head from the client, already rewritten for the origin.

    ``target_host`` is bare (``::1``, not ``[::1]``). ``head`` is the origin-form head to
    send upstream (``b""`` for CONNECT); it and ``credentials`` stay out of the repr, the
    first because it holds cookies and origin credentials, the second for the proxy password.
    """

    method: str
    target_host: str
    target_port: int
    http_version: str
    is_connect: bool
    path: str
    keep_alive: bool
    expects_body: bool
    head: bytes = field(repr=False)
    credentials: Credentials | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BodyChunk:
    """Raw request-body bytes, framing included, to forward upstream as they are."""

    data: bytes

    def __repr__(self) -> str:
        return f"BodyChunk(<{len(self.data)} bytes>)"


@dataclass(frozen=True)
class EndOfRequest:
    """The current request's body has ended; the next request waits for ``start_next()``."""


RequestEvent = ProxyRequest | BodyChunk | EndOfRequest


# -- small responses ---------------------------------------------------------------------


def _check_text(text: str, what: str) -> None:
    if any(c in text for c in "\r\n\x00"):
        raise ValueError(f"{what} must not contain CR, LF or NUL")


def error_response(
    status: int,
    reason: str,
    body_text: str,
    *,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A complete plain-text response that closes the connection (the proxy's own errors)."""
    if not 100 <= status <= 599:
        raise ValueError("status must be 100..599")
    _check_text(reason, "reason")
    body = body_text.encode("utf-8")
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    for name, value in extra_headers:
        if not _TOKEN.fullmatch(name.encode("latin-1")):
            raise ValueError("header name must be a token")
        _check_text(value, "header value")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def proxy_auth_required(realm: str = "socketeer") -> bytes:
    """The 407 that asks the client for Basic proxy credentials."""
    if '"' in realm or "\\" in realm:
        raise ValueError("realm must not contain quotes or backslashes")
    return error_response(
        407,
        _REASONS[407],
        "Proxy authentication required.\n",
        extra_headers=[("Proxy-Authenticate", f'Basic realm="{realm}"')],
    )


# -- field helpers -----------------------------------------------------------------------


def _values(fields: Fields, name: bytes) -> list[bytes]:
    return [v for n, v in fields if n.lower() == name]


def _list_items(values: list[bytes]) -> list[bytes]:
    """Elements of a comma-separated list field, trimmed, lowercased, empties dropped."""
    items = (item.strip(b" \t").lower() for value in values for item in value.split(b","))
    return [item for item in items if item]


def _parse_field(line: bytes, status: int) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise HttpError(status, "obsolete line folding is not allowed")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        raise HttpError(status, "malformed header field name")
    value = value.strip(b" \t")
    if _BAD_VALUE_CHAR.search(value):
        raise HttpError(status, "control character in a header field value")
    return name, value


def _parse_head(head: bytes, status: int, too_many: int) -> tuple[bytes, Fields]:
    """Split a complete head (ending with its empty line) into start line and fields."""
    raw_lines = head.split(b"\n")[:-1]
    lines = [line[:-1] if line.endswith(b"\r") else line for line in raw_lines]
    if any(b"\r" in line for line in lines):
        raise HttpError(status, "bare CR in the message head")
    start, field_lines = lines[0], lines[1:-1]
    if len(field_lines) > MAX_HEADERS:
        raise HttpError(too_many, f"more than {MAX_HEADERS} header fields")
    return start, [_parse_field(line, status) for line in field_lines]


def _content_length(values: list[bytes], status: int) -> int | None:
    if not values:
        return None
    items = [item.strip(b" \t") for value in values for item in value.split(b",")]
    if not all(_DIGITS.fullmatch(item) for item in items):
        raise HttpError(status, "invalid Content-Length")
    lengths = {int(item) for item in items}
    if len(lengths) != 1:
        raise HttpError(status, "differing Content-Length values")
    return lengths.pop()


def _transfer_codings(values: list[bytes], status: int) -> list[bytes]:
    codings = []
    for item in _list_items(values):
        name = item.split(b";", 1)[0].strip(b" \t")
        if not _TOKEN.fullmatch(name):
            raise HttpError(status, "invalid Transfer-Encoding")
        codings.append(name)
    return codings


def _dropped(fields: Fields, hop_by_hop: frozenset[bytes]) -> frozenset[bytes]:
    """Lowercased names not to forward: hop-by-hop ones and those Connection lists."""
    listed = {t for t in _list_items(_values(fields, b"connection")) if _TOKEN.fullmatch(t)}
    return hop_by_hop | (frozenset(listed) - _NEVER_LISTED)


def _append_via(fields: Fields, via: bytes) -> Fields:
    """Append my Via entry to the last Via field, or add one."""
    last = max((i for i, (n, _) in enumerate(fields) if n.lower() == b"via"), default=None)
    if last is None:
        return [*fields, (b"Via", via)]
    name, value = fields[last]
    out = list(fields)
    out[last] = (name, value + b", " + via if value else via)
    return out


def _serialize(start: bytes, fields: Fields) -> bytes:
    return b"".join([start, b"\r\n", *(n + b": " + v + b"\r\n" for n, v in fields), b"\r\n"])


def _basic_credentials(values: list[bytes]) -> Credentials | None:
    """The credentials of exactly one ``Basic`` Proxy-Authorization, else None."""
    if len(values) != 1:
        return None
    parts = values[0].split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"basic":
        return None
    try:
        raw = base64.b64decode(parts[1].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    return Credentials(user, password) if sep else None


# -- targets -----------------------------------------------------------------------------


def _parse_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` -> (bare host, port)."""
    if authority.startswith("["):
        close = authority.find("]")
        literal, rest = authority[1:close], authority[close + 1 :]
        if close == -1 or "%" in literal:
            raise HttpError(400, "invalid IPv6 literal in the request target")
        try:
            host = ipaddress.IPv6Address(literal).compressed
        except ValueError:
            raise HttpError(400, "invalid IPv6 literal in the request target") from None
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep:
            host, port_text = authority, ""
        rest = sep + port_text
        if not _REG_NAME.fullmatch(host):
            raise HttpError(400, "invalid host in the request target")
        host = host.lower()
    if rest in ("", ":"):
        if default_port is None:
            raise HttpError(400, "CONNECT needs host:port")
        return host, default_port
    if rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or not 1 <= int(rest[1:]) <= 65535:
        raise HttpError(400, "invalid port in the request target")
    return host, int(rest[1:])


def _host_field(host: str, port: int) -> bytes:
    shown = f"[{host}]" if ":" in host else host
    return (shown if port == 80 else f"{shown}:{port}").encode("ascii")


def _parse_absolute(target: str) -> tuple[str, int, str]:
    """``http://authority/path?query`` -> (host, port, origin-form)."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isascii() or not scheme.isalpha():
        raise HttpError(400, "the request target is not an absolute URI. " + _HINT)
    if scheme.lower() == "https":
        raise HttpError(501, "https URIs are not forwarded; use CONNECT host:443")
    if scheme.lower() != "http":
        raise HttpError(501, "only http URIs are forwarded")
    if "#" in rest:
        raise HttpError(400, "a fragment is not allowed in the request target")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    authority, path = rest[:end], rest[end:]
    if "@" in authority:
        raise HttpError(400, "user information is not allowed in the request target")
    host, port = _parse_authority(authority, 80)
    if not path.startswith("/"):
        path = "/" + path
    return host, port, path


# -- chunked framing ---------------------------------------------------------------------


class _Chunk(enum.Enum):
    SIZE = "reading a chunk-size line"
    DATA = "passing chunk data"
    DATA_END = "expecting the CRLF after chunk data"
    TRAILER = "reading trailer fields"
    DONE = "the last chunk and trailer section have passed"


class _ChunkedBody:
    """I find where a chunked body ends while its bytes pass through untouched.

    The caller forwards exactly the bytes I report as consumed; I keep only the current
    framing line (bounded) to parse it.
    """

    def __init__(self, status: int, max_trailer: int) -> None:
        self._status = status
        self._max_trailer = max_trailer
        self._state = _Chunk.SIZE
        self._line = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0
        self._trailer_fields = 0

    @property
    def done(self) -> bool:
        return self._state is _Chunk.DONE

    def feed(self, data: bytes | bytearray) -> int:
        """Consume body bytes from the start of ``data``; returns how many belong to it."""
        pos, size = 0, len(data)
        while pos < size and self._state is not _Chunk.DONE:
            if self._state is _Chunk.DATA:
                take = min(self._remaining, size - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _Chunk.DATA_END
                continue
            newline = data.find(b"\n", pos)
            end = size if newline == -1 else newline
            if len(self._line) + end - pos > self._line_limit():
                raise HttpError(self._status, "chunked framing line too long or malformed")
            self._line += data[pos:end]
            if newline == -1:
                return size
            pos = newline + 1
            line = bytes(self._line)
            self._line.clear()
            self._line_done(line)
        return pos

    def _line_limit(self) -> int:
        if self._state is _Chunk.SIZE:
            return MAX_CHUNK_LINE
        if self._state is _Chunk.DATA_END:
            return 1
        return self._max_trailer - self._trailer_bytes

    def _line_done(self, line: bytes) -> None:
        if not line.endswith(b"\r"):
            raise HttpError(self._status, "chunked framing lines must end with CRLF")
        line = line[:-1]
        if self._state is _Chunk.SIZE:
            match = _CHUNK_SIZE.fullmatch(line)
            if not match:
                raise HttpError(self._status, "invalid chunk-size line")
            self._remaining = int(match[1], 16)
            self._state = _Chunk.DATA if self._remaining else _Chunk.TRAILER
        elif self._state is _Chunk.DATA_END:
            if line:
                raise HttpError(self._status, "chunk data not followed by CRLF")
            self._state = _Chunk.SIZE
        elif not line:
            self._state = _Chunk.DONE
        else:
            _parse_field(line, self._status)
            self._trailer_fields += 1
            self._trailer_bytes += len(line) + 2
            if self._trailer_fields > MAX_HEADERS:
                raise HttpError(self._status, f"more than {MAX_HEADERS} trailer fields")


# -- head buffering ----------------------------------------------------------------------


class _HeadBuffer:
    """Input bytes plus a resumable scan for the empty line that ends a head.

    Every byte is scanned once, and a head that cannot end within ``max_head`` bytes is
    refused as soon as that is certain, whatever the split of the input.
    """

    def __init__(self, max_head: int, too_large: int, what: str) -> None:
        self.data = bytearray()
        self._max_head = max_head
        self._too_large = too_large
        self._what = what
        self._scanned = 0

    def take_head(self) -> bytes | None:
        """The next complete head (after ignoring blank lines before it), or None."""
        self._skip_blank_lines()
        buf = self.data
        index = buf.find(b"\n", self._scanned)
        while index != -1:
            before = buf[max(0, index - 2) : index]
            if before.endswith(b"\n") or before == b"\n\r":
                if index + 1 > self._max_head:
                    break
                head = bytes(buf[: index + 1])
                del buf[: index + 1]
                self._scanned = 0
                return head
            index = buf.find(b"\n", index + 1)
        if len(buf) >= self._max_head:
            raise HttpError(self._too_large, f"{self._what} larger than {self._max_head} bytes")
        self._scanned = len(buf)
        return None

    def take(self, count: int) -> bytes:
        chunk = bytes(self.data[:count])
        del self.data[:count]
        self._scanned = 0
        return chunk

    def _skip_blank_lines(self) -> None:
        buf, skip = self.data, 0
        while True:
            if buf[skip : skip + 1] == b"\n":
                skip += 1
            elif buf[skip : skip + 2] == b"\r\n":
                skip += 2
            else:
                break
        if skip:
            del buf[:skip]
            self._scanned = max(0, self._scanned - skip)


def _go(current: enum.Enum, new: enum.Enum, table: dict) -> enum.Enum:
    if new not in table[current]:
        raise RuntimeError(f"invalid transition {current.name} -> {new.name}")
    return new


# -- requests ----------------------------------------------------------------------------


class _Req(enum.Enum):
    HEAD = "reading a request head"
    BODY = "passing body bytes through"
    END = "body complete; EndOfRequest not yet returned"
    PAUSED = "EndOfRequest returned; waiting for start_next()"
    SWITCHED = "CONNECT handed over; the bytes belong to the tunnel"
    ERROR = "HttpError raised; the connection is done"


# The story of one client connection: read a head, pass its body through (CONNECT and
# bodiless requests go straight to END), report EndOfRequest, then wait until the adapter
# has finished the response and calls start_next(). A CONNECT may instead be switched to a
# tunnel with trailing_data(). Any HttpError is final.
_REQ_TRANSITIONS: dict[_Req, frozenset[_Req]] = {
    _Req.HEAD: frozenset({_Req.BODY, _Req.END, _Req.ERROR}),
    _Req.BODY: frozenset({_Req.END, _Req.ERROR}),
    _Req.END: frozenset({_Req.PAUSED, _Req.SWITCHED, _Req.ERROR}),
    _Req.PAUSED: frozenset({_Req.HEAD, _Req.SWITCHED, _Req.ERROR}),
    _Req.SWITCHED: frozenset(),
    _Req.ERROR: frozenset(),
}


class RequestReader:
    """I parse the requests of one client connection, strictly one at a time."""

    def __init__(self, max_head: int = MAX_HEAD, max_pipelined: int = 2 * MAX_HEAD) -> None:
        self._input = _HeadBuffer(max_head, 431, "request head")
        self._max_pipelined = max_pipelined
        self._state = _Req.HEAD
        self._error: HttpError | None = None
        self._remaining = 0
        self._chunked: _ChunkedBody | None = None
        self._connect = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned in an event (for tests and flow control)."""
        return len(self._input.data)

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client. Raises HttpError if too much arrives while paused."""
        if self._state is _Req.ERROR:
            return
        if self._state is _Req.SWITCHED:
            raise RuntimeError("the connection was switched to a tunnel")
        self._input.data += data
        if self._state in (_Req.END, _Req.PAUSED) and self.buffered > self._max_pipelined:
            raise self._fail(HttpError(400, "too much pipelined data"))

    def next_event(self) -> RequestEvent | None:
        """The next event, or None when more data (or ``start_next()``) is needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except HttpError as error:
            raise self._fail(error) from None

    def start_next(self) -> None:
        """Allow the next request to be parsed (after EndOfRequest and the response)."""
        if self._state is not _Req.PAUSED:
            raise RuntimeError(f"start_next() while {self._state.value}")
        self._to(_Req.HEAD)
        self._connect = False

    def trailing_data(self) -> bytes:
        """After a CONNECT: everything the client sent past the head; I then retire."""
        if not self._connect or self._state not in (_Req.END, _Req.PAUSED):
            raise RuntimeError("trailing_data() is only for an accepted CONNECT")
        self._to(_Req.SWITCHED)
        return self._input.take(len(self._input.data))

    def _to(self, state: _Req) -> None:
        self._state = _go(self._state, state, _REQ_TRANSITIONS)

    def _fail(self, error: HttpError) -> HttpError:
        """Record the error: every later next_event() raises it again."""
        self._to(_Req.ERROR)
        self._error = error
        self._input.data.clear()
        return error

    def _next_event(self) -> RequestEvent | None:
        if self._state is _Req.HEAD:
            head = self._input.take_head()
            return None if head is None else self._start(head)
        if self._state is _Req.BODY:
            return self._body()
        if self._state is _Req.END:
            self._to(_Req.PAUSED)
            return EndOfRequest()
        return None

    def _body(self) -> BodyChunk | None:
        if not self._input.data:
            return None
        if self._chunked is None:
            chunk = self._input.take(min(self._remaining, len(self._input.data)))
            self._remaining -= len(chunk)
            done = not self._remaining
        else:
            chunk = self._input.take(self._chunked.feed(self._input.data))
            done = self._chunked.done
        if done:
            self._to(_Req.END)
        return BodyChunk(chunk)

    def _start(self, head: bytes) -> ProxyRequest:
        request, length, chunked = _parse_request(head)
        self._connect = request.is_connect
        self._remaining = length
        self._chunked = _ChunkedBody(400, MAX_HEAD) if chunked else None
        self._to(_Req.BODY if request.expects_body else _Req.END)
        return request


def _parse_request(head: bytes) -> tuple[ProxyRequest, int, bool]:
    """A request head -> (request, content length, chunked?)."""
    start, fields = _parse_head(head, 400, 431)
    parts = start.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method_raw, target_raw, version_raw = parts
    if not _TOKEN.fullmatch(method_raw):
        raise HttpError(400, "malformed method")
    version_match = _VERSION.fullmatch(version_raw)
    if not version_match:
        if _OTHER_VERSION.fullmatch(version_raw):
            raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise HttpError(400, "malformed HTTP version")
    if not _TARGET.fullmatch(target_raw):
        raise HttpError(400, "invalid character in the request target")
    method, target = method_raw.decode("ascii"), target_raw.decode("ascii")
    version = "1." + version_match[1].decode("ascii")
    is_connect = method == "CONNECT"
    if is_connect:
        host, port = _parse_authority(target, None)
        path = ""
    elif method in FORWARD_METHODS:
        host, port, path = _parse_absolute(target)
    else:
        raise HttpError(501, "method not supported by this proxy")
    if len(_values(fields, b"host")) > 1:
        raise HttpError(400, "more than one Host field")

    transfer = _values(fields, b"transfer-encoding")
    lengths = _values(fields, b"content-length")
    if transfer and lengths:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    length, chunked = 0, False
    if transfer:
        if version == "1.0":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = _transfer_codings(transfer, 400)
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise HttpError(400, "the final transfer coding must be chunked")
        chunked = True
    elif lengths:
        length = _content_length(lengths, 400) or 0
    if is_connect and (chunked or length):
        raise HttpError(400, "a CONNECT request has no content")

    options = set(
        _list_items(_values(fields, b"connection") + _values(fields, b"proxy-connection"))
    )
    # RFC 9112 section 9.3: a proxy MUST NOT keep a persistent connection with an HTTP/1.0
    # client (its Keep-Alive may be a hop-by-hop option some older proxy forwarded blindly).
    keep_alive = version == "1.1" and b"close" not in options

    credentials = _basic_credentials(_values(fields, b"proxy-authorization"))
    out_head = b""
    if not is_connect:
        out_head = _origin_head(method, path, version, fields, _host_field(host, port), length)
    request = ProxyRequest(
        method=method,
        target_host=host,
        target_port=port,
        http_version=version,
        is_connect=is_connect,
        path=path,
        keep_alive=keep_alive,
        expects_body=chunked or length > 0,
        head=out_head,
        credentials=credentials,
    )
    return request, length, chunked


def _origin_head(
    method: str, path: str, version: str, fields: Fields, host: bytes, length: int
) -> bytes:
    """The head to send upstream: origin-form, Host replaced, hop-by-hop gone, Via added."""
    dropped = _dropped(fields, _REQUEST_HOP_BY_HOP)
    out: Fields = []
    seen_length = False
    for name, value in fields:
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == b"host":
            value = host
        elif lower == b"content-length":
            if seen_length:
                continue
            seen_length, value = True, str(length).encode("ascii")
        out.append((name, value))
    if not any(name.lower() == b"host" for name, _ in out):
        out.insert(0, (b"Host", host))
    out = _append_via(out, version.encode("ascii") + b" " + _PSEUDONYM)
    out.append((b"Connection", b"close"))
    return _serialize(f"{method} {path} HTTP/{version}".encode("ascii"), out)


# -- responses ---------------------------------------------------------------------------


class _Resp(enum.Enum):
    HEAD = "reading a response head (interim 1xx heads loop here)"
    LENGTH = "passing a Content-Length body"
    CHUNKED = "passing a chunked body"
    CLOSE = "passing a body that ends when the upstream closes"
    DONE = "the response has ended"
    ERROR = "HttpError raised"


# The story of one response: heads are read until a final (non-1xx) one; its framing picks
# the body state; the body ends by length, by the last chunk, or by upstream EOF.
_RESP_TRANSITIONS: dict[_Resp, frozenset[_Resp]] = {
    _Resp.HEAD: frozenset({_Resp.LENGTH, _Resp.CHUNKED, _Resp.CLOSE, _Resp.DONE, _Resp.ERROR}),
    _Resp.LENGTH: frozenset({_Resp.DONE, _Resp.ERROR}),
    _Resp.CHUNKED: frozenset({_Resp.DONE, _Resp.ERROR}),
    _Resp.CLOSE: frozenset({_Resp.DONE, _Resp.ERROR}),
    _Resp.DONE: frozenset(),
    _Resp.ERROR: frozenset(),
}


class ResponseReader:
    """I stream one upstream response to the client, rewriting only its head(s)."""

    def __init__(self, request: ProxyRequest, max_head: int = MAX_HEAD) -> None:
        if request.is_connect:
            raise ValueError("a CONNECT request has no forwarded response")
        self._request = request
        self._input = _HeadBuffer(max_head, 502, "response head")
        self._state = _Resp.HEAD
        self._error: HttpError | None = None
        self._remaining = 0
        self._chunked: _ChunkedBody | None = None
        self._keep_alive = False
        self._started = False

    @property
    def complete(self) -> bool:
        """The response has ended; the upstream stream can be closed."""
        return self._state is _Resp.DONE

    @property
    def client_keep_alive(self) -> bool:
        """After completion: the client connection may carry another request."""
        return self.complete and self._keep_alive

    @property
    def response_started(self) -> bool:
        """The final head went out: an error can now only be reported by closing."""
        return self._started

    @property
    def buffered(self) -> int:
        """Bytes held back (an incomplete head)."""
        return len(self._input.data)

    def receive_data(self, data: bytes) -> list[bytes]:
        """Bytes from upstream -> bytes to write to the client now."""
        if self._error is not None:
            raise self._error
        if self._state is _Resp.DONE:
            return []
        try:
            return self._receive(data)
        except HttpError as error:
            raise self._fail(error) from None

    def upstream_closed(self) -> list[bytes]:
        """Upstream EOF: ends a close-delimited body; anything else unfinished is a 502."""
        if self._error is not None:
            raise self._error
        if self._state is _Resp.CLOSE:
            self._to(_Resp.DONE)
        elif self._state is _Resp.HEAD:
            raise self._fail(HttpError(502, "upstream closed before a complete response head"))
        elif self._state is not _Resp.DONE:
            raise self._fail(HttpError(502, "upstream closed in the middle of the response body"))
        return []

    def _to(self, state: _Resp) -> None:
        self._state = _go(self._state, state, _RESP_TRANSITIONS)

    def _fail(self, error: HttpError) -> HttpError:
        """Record the error: every later call raises it again."""
        self._to(_Resp.ERROR)
        self._error = error
        self._input.data.clear()
        return error

    def _receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self._state is _Resp.HEAD:
            self._input.data += data
            while self._state is _Resp.HEAD:
                head = self._input.take_head()
                if head is None:
                    return out
                rewritten = self._head(head)
                if rewritten:
                    out.append(rewritten)
            data = self._input.take(len(self._input.data))
        body = self._body(data)
        if body:
            out.append(body)
        return out

    def _body(self, data: bytes) -> bytes:
        if self._state is _Resp.CLOSE:
            return data
        if self._state is _Resp.LENGTH:
            body = data[: self._remaining]
            self._remaining -= len(body)
            if not self._remaining:
                self._to(_Resp.DONE)
            return body
        if self._state is _Resp.CHUNKED and self._chunked is not None:
            body = data[: self._chunked.feed(data)]
            if self._chunked.done:
                self._to(_Resp.DONE)
            return body
        return b""

    def _head(self, head: bytes) -> bytes:
        """Parse one response head, choose the framing, and return it rewritten."""
        start, fields = _parse_head(head, 502, 502)
        match = _STATUS.fullmatch(start)
        if not match or _BAD_VALUE_CHAR.search(match[3] or b""):
            raise HttpError(502, "malformed status line from upstream")
        minor, code, reason = match[1], int(match[2]), match[3] or b""
        length = _content_length(_values(fields, b"content-length"), 502)
        via = b"1." + minor + b" " + _PSEUDONYM
        dropped = _dropped(fields, _HOP_BY_HOP)
        kept = [(n, v) for n, v in fields if n.lower() not in dropped]
        status_line = b"HTTP/1.1 %d %s" % (code, reason)
        if code == 101:
            raise HttpError(502, "upstream switched protocols, which was not asked for")
        if code < 200:
            if self._request.http_version == "1.0":
                return b""
            return _serialize(status_line, _append_via(kept, via))

        transfer = _values(fields, b"transfer-encoding")
        keep = self._request.keep_alive
        if self._request.method == "HEAD" or code in (204, 304):
            state = _Resp.DONE
        elif transfer:
            if minor == b"0":
                raise HttpError(502, "Transfer-Encoding in an HTTP/1.0 response")
            codings = _transfer_codings(transfer, 502)
            chunked = codings[-1:] == [b"chunked"]
            if b"chunked" in codings[:-1]:
                raise HttpError(502, "chunked is not the final transfer coding")
            state = _Resp.CHUNKED if chunked else _Resp.CLOSE
            if length is not None:
                keep = False
                kept = [(n, v) for n, v in kept if n.lower() != b"content-length"]
            if self._request.http_version == "1.0":
                keep = False
        elif length is not None:
            state = _Resp.LENGTH if length else _Resp.DONE
            self._remaining = length
        else:
            state = _Resp.CLOSE
        if state is _Resp.CLOSE:
            keep = False
        if length is not None and state in (_Resp.LENGTH, _Resp.DONE):
            kept = _single_content_length(kept, length)

        if state is _Resp.CHUNKED:
            self._chunked = _ChunkedBody(502, MAX_HEAD)
        self._keep_alive = keep
        self._started = True
        self._to(state)
        kept = _append_via(kept, via)
        kept.append((b"Connection", b"keep-alive" if keep else b"close"))
        return _serialize(status_line, kept)


def _single_content_length(fields: Fields, length: int) -> Fields:
    out: Fields = []
    seen = False
    for name, value in fields:
        if name.lower() == b"content-length":
            if seen:
                continue
            seen, value = True, str(length).encode("ascii")
        out.append((name, value))
    return out
