"""SOCKS4, SOCKS4a and SOCKS5 server handshakes (sans-IO): bytes in, events and replies out.

The front-end Protocol feeds what the client sends and writes what I return; I never touch
a socket, a clock or twisted. The shape follows h11/wsproto::

    server = SocksServer(socks4=True, socks5=True, require_auth=False, max_buffer=1024)
    server.receive_data(data)           # never raises; parses as far as the bytes allow
    server.next_event()                 # -> Request | NeedsAuth | None; raises SocksError
    server.data_to_send()               # -> bytes to write now (method choice, auth status)
    server.auth_result(ok)              # answer a NeedsAuth (queues RFC 1929 01 00 / 01 01)
    server.reply(code, host, port)      # -> the final reply bytes for the Request
    server.trailing_data()              # -> bytes after the request: they belong to the tunnel
    server.version                      # 4, 5 or None before the first byte
    server.buffered                     # unparsed handshake bytes held (<= max_buffer)

Events are frozen dataclasses: ``Request(version, command, host, port, address_type,
username)`` and ``NeedsAuth(username, password)`` (the password is left out of repr).
``SocksError(message, reply)`` carries the bytes to write before closing: everything still
queued for the client followed by the protocol's own refusal (possibly b"").

A typical adapter::

    server.receive_data(data)
    try:
        while (event := server.next_event()) is not None:
            handle(event)                       # may call auth_result() or reply()
    except SocksError as e:
        transport.write(e.reply); transport.loseConnection(); return
    transport.write(server.data_to_send())

Decisions, where the RFCs leave room:

* Versions are told apart by the first byte (0x04 / 0x05); anything else is refused with
  no reply. A disabled SOCKS4 gets ``00 5B`` + 6 zero bytes, a disabled SOCKS5 ``05 FF``.
  With ``require_auth`` SOCKS4 is refused at once (``00 5B``): it cannot carry a password.
* Method choice: 0x02 if ``require_auth`` and offered, 0x00 if not ``require_auth`` and
  offered, else ``05 FF`` and SocksError (also for NMETHODS = 0). A client offering only
  0x02 to a server without ``require_auth`` is refused, so NeedsAuth means "check this".
* RFC 1929: VER must be 1 and ULEN 1..255 (PLEN may be 0); a malformed sub-negotiation is
  answered ``01 01``. After ``auth_result(False)`` the handshake is dead and the next
  ``next_event()`` raises. User names and passwords are decoded as UTF-8 with
  ``surrogateescape``, so ``s.encode("utf-8", "surrogateescape")`` gives the exact bytes
  back and two different passwords never compare equal.
* Requests are parsed eagerly, even ones pipelined behind an auth sub-negotiation (so an
  optimistic client cannot overflow the buffer while credentials are being checked); a
  request behind NeedsAuth is delivered only after ``auth_result(True)``. ``next_event()``
  returns None while an ``auth_result`` is awaited.
* SOCKS5 request: RSV is ignored. Unknown CMD -> reply 0x07; unknown ATYP -> 0x08; VER not
  5 -> 0x01. BIND, UDP ASSOCIATE and Tor's RESOLVE (0xF0) / RESOLVE_PTR (0xF1) are
  delivered as Requests: the caller decides, logs and answers (e.g. 0x07) with reply().
* SOCKS4: CD 1 (CONNECT), 2 (BIND) and Tor's 0xF0 (RESOLVE, which Tor also accepts over
  SOCKS4/4a) are delivered; any other CD is refused with 0x5B. USERID and the 4a host name
  are NUL-terminated and at most 255 bytes each. A SOCKS4 USERID is reported as given,
  possibly "", as ``username``; SOCKS5 reports the RFC 1929 UNAME, or None without auth.
* Domain names (ATYP 3, SOCKS4a) must be 1..255 bytes of printable ASCII (0x21..0x7E;
  IDNs arrive as punycode); anything else is refused with general failure (SOCKS5 0x01,
  SOCKS4 0x5B): the address type is supported, this address is not. A name that is an IP
  literal is reported as that address (``address_type`` "ipv4"/"ipv6"), so that access
  checks see one canonical form. IPv6 is reported compressed, without brackets.
* Port 0 is delivered; the caller fails it (BIND and UDP ASSOCIATE legitimately use it).
* Bounds: no handshake message may exceed ``max_buffer`` bytes (the largest legal ones: a
  SOCKS5 request 262, RFC 1929 513, SOCKS4a 520), and no more than ``max_buffer`` unparsed
  bytes are ever held. The outcome does not depend on how the input is split. After the
  request, further bytes go to ``trailing_data()`` unbounded: the caller bounds them by
  pausing reads until the tunnel is open.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum

__all__ = [
    "SOCKS4_GRANTED",
    "SOCKS4_REJECTED",
    "Command",
    "NeedsAuth",
    "Request",
    "Socks5Reply",
    "SocksError",
    "SocksServer",
]

SOCKS4_GRANTED = 0x5A
SOCKS4_REJECTED = 0x5B

_METHOD_NONE = 0x00
_METHOD_USERPASS = 0x02
_NO_ACCEPTABLE = b"\x05\xff"
_AUTH_OK = b"\x01\x00"
_AUTH_FAIL = b"\x01\x01"
_MAX_FIELD = 255  # SOCKS4 USERID and 4a host name, without their NUL
_SOCKS4_HEAD = struct.Struct("!BBH4s")  # VN CD DSTPORT DSTIP
_SOCKS5_HEAD = struct.Struct("!BBBB")  # VER CMD RSV ATYP (also VER REP RSV ATYP)
_PORT = struct.Struct("!H")


class Command(IntEnum):
    """SOCKS commands; 0xF0/0xF1 are Tor's name-resolution extensions."""

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03
    RESOLVE = 0xF0
    RESOLVE_PTR = 0xF1


_SOCKS4_COMMANDS = frozenset({Command.CONNECT, Command.BIND, Command.RESOLVE})
_SOCKS5_COMMANDS = frozenset(Command)


class Socks5Reply(IntEnum):
    """RFC 1928 REP codes."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


@dataclass(frozen=True)
class Request:
    """A complete, validated request; answer it with ``SocksServer.reply``."""

    version: int  # 4 (also 4a) or 5
    command: Command
    host: str  # dotted IPv4, compressed IPv6 without brackets, or a domain name
    port: int
    address_type: str  # "ipv4" | "ipv6" | "domain"
    username: str | None = None  # SOCKS4 USERID or RFC 1929 UNAME


@dataclass(frozen=True)
class NeedsAuth:
    """RFC 1929 credentials arrived; the caller checks them and calls ``auth_result``."""

    username: str
    password: str = field(repr=False)


class SocksError(Exception):
    """The handshake failed; write ``reply`` (possibly b"") and close.

    The message never quotes client bytes, so it cannot leak a password into a log.
    """

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


class _State(Enum):
    """Where the parser is. Story: START picks SOCKS4 (one message, then DONE) or SOCKS5
    (GREETING, then AUTH if 0x02 was chosen, then REQUEST, then DONE). Any refusal goes to
    DEAD. Parsing never waits for the caller; only event delivery does (auth_result)."""

    START = "waiting for the version byte"
    SOCKS4 = "reading VN CD DSTPORT DSTIP USERID NUL [HOST NUL]"
    GREETING = "reading VER NMETHODS METHODS"
    AUTH = "reading the RFC 1929 sub-negotiation VER ULEN UNAME PLEN PASSWD"
    REQUEST = "reading VER CMD RSV ATYP DST.ADDR DST.PORT"
    DONE = "request parsed; later bytes are trailing data"
    DEAD = "refused; no more input is parsed"


def _socks4_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """SOCKS4 reply: VN=0, CD, DSTPORT, DSTIP (0.0.0.0 unless host is IPv4)."""
    try:
        addr = ipaddress.IPv4Address(host).packed
    except ValueError:
        addr = bytes(4)
    return _SOCKS4_HEAD.pack(0, code, port, addr)


def _socks5_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """SOCKS5 reply with ATYP chosen from host: IPv4, IPv6, else a domain (RESOLVE_PTR)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("ascii") if host.isascii() else b""
        if not 1 <= len(name) <= 255:
            raise ValueError("bound host: not an IP address nor a 1..255 byte ASCII name") from None
        atyp, addr = 3, bytes([len(name)]) + name
    else:
        atyp, addr = (1, ip.packed) if ip.version == 4 else (4, ip.packed)
    return _SOCKS5_HEAD.pack(5, code, 0, atyp) + addr + _PORT.pack(port)


def _decode_text(raw: bytes) -> str:
    """Lossless: UTF-8 where valid, with the exact bytes recoverable via surrogateescape."""
    return raw.decode("utf-8", "surrogateescape")


def _name(raw: bytes) -> tuple[str, str] | None:
    """(host, address_type) for a wire domain name, or None if it is not acceptable."""
    if not 1 <= len(raw) <= 255 or any(b < 0x21 or b > 0x7E for b in raw):
        return None
    text = raw.decode("ascii")
    if "%" not in text:  # a scoped IPv6 literal names a local interface: keep it a name
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return str(ip), "ipv4" if ip.version == 4 else "ipv6"
    return text, "domain"


class SocksServer:
    """Server side of one SOCKS4/4a/5 handshake."""

    def __init__(
        self,
        *,
        socks4: bool = True,
        socks5: bool = True,
        require_auth: bool = False,
        max_buffer: int = 1024,
    ) -> None:
        if not (socks4 or socks5):
            raise ValueError("enable at least one of socks4 and socks5")
        if max_buffer < 1:
            raise ValueError("max_buffer must be positive")
        self._socks4 = socks4
        self._socks5 = socks5
        self._require_auth = require_auth
        self._max_buffer = max_buffer
        self._state = _State.START
        self._buf = bytearray()
        self._out = bytearray()
        self._trailing = bytearray()
        # Parsed outcomes in wire order, waiting for next_event(): events or one error last.
        self._queue: deque[Request | NeedsAuth | SocksError] = deque()
        self._username: str | None = None
        self._awaiting_auth = False
        self._request: Request | None = None  # set once delivered
        self._replied = False
        self._failed: str | None = None  # message of the error already raised
        self._version: int | None = None

    # -- public API ------------------------------------------------------------------

    @property
    def version(self) -> int | None:
        """4 or 5 once the first byte is in, else None."""
        return self._version

    @property
    def buffered(self) -> int:
        """Unparsed handshake bytes held; never more than ``max_buffer`` between calls."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the client and parse as far as they go; errors wait in next_event."""
        if self._state is _State.DEAD:
            return
        if self._state is _State.DONE:
            self._trailing += data
            return
        self._buf += data
        self._parse()

    def next_event(self) -> Request | NeedsAuth | None:
        """The next event; None if more data (or an ``auth_result``) is needed first."""
        if self._awaiting_auth:
            return None
        if self._queue:
            item = self._queue.popleft()
            if isinstance(item, SocksError):
                self._raise(item)
            if isinstance(item, NeedsAuth):
                self._awaiting_auth = True
            else:
                self._request = item
            return item
        if self._failed is not None:
            self._raise(SocksError(self._failed))
        return None

    def data_to_send(self) -> bytes:
        """Bytes to write to the client now (method choice, auth status); taken once."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def auth_result(self, ok: bool) -> None:
        """Answer the NeedsAuth just delivered; on failure the handshake is over."""
        if not self._awaiting_auth:
            raise RuntimeError("auth_result() without a pending NeedsAuth")
        self._awaiting_auth = False
        if ok:
            self._out += _AUTH_OK
            return
        self._out += _AUTH_FAIL
        self._queue.clear()
        self._trailing.clear()
        self._buf.clear()
        self._state = _State.DEAD
        self._queue.append(SocksError("authentication failed"))

    def reply(self, code: int, bound_host: str = "0.0.0.0", bound_port: int = 0) -> bytes:
        """The final reply to the delivered Request (for RESOLVE: the resolved address)."""
        if self._request is None:
            raise RuntimeError("reply() before a Request was delivered")
        if self._replied:
            raise RuntimeError("reply() called twice")
        if not 0 <= code <= 0xFF:
            raise ValueError(f"reply code out of range: {code}")
        if not 0 <= bound_port <= 0xFFFF:
            raise ValueError(f"port out of range: {bound_port}")
        encode = _socks4_reply if self._request.version == 4 else _socks5_reply
        out = encode(code, bound_host, bound_port)
        self._replied = True
        return out

    def trailing_data(self) -> bytes:
        """Bytes that followed the delivered Request: tunnel payload, taken once."""
        if self._request is None:
            return b""
        out = bytes(self._trailing)
        self._trailing.clear()
        return out

    # -- machinery -------------------------------------------------------------------

    def _raise(self, err: SocksError) -> None:
        err.reply = self.data_to_send() + err.reply
        self._failed = str(err)
        self._queue.clear()
        raise err

    def _parse(self) -> None:
        """Run readers over the buffer until one needs more bytes or the state stops parsing.

        A reader sees at most ``max_buffer`` bytes; if that is not enough the message is too
        long. So the outcome depends only on the bytes, never on how they were split.
        """
        while (reader := _READERS.get(self._state)) is not None:
            window = bytes(self._buf[: self._max_buffer])
            try:
                used = reader(self, window)
                if used is None and len(self._buf) > self._max_buffer:
                    raise SocksError(
                        f"handshake message longer than {self._max_buffer} bytes",
                        _TOO_LONG_REPLY[self._state],
                    )
            except SocksError as err:
                self._buf.clear()
                self._state = _State.DEAD
                self._queue.append(err)
                return
            if used is None:
                return
            del self._buf[:used]
        if self._state is _State.DONE:
            self._trailing += self._buf
            self._buf.clear()

    # Readers: given the buffered start of the current message, return the bytes consumed
    # (after queueing events, output and the next state), None if incomplete, or raise
    # SocksError. Every check runs as soon as its bytes are present, in wire order.

    def _read_start(self, buf: bytes) -> int | None:
        if not buf:
            return None
        if buf[0] == 4:
            self._version = 4
            if not self._socks4:
                raise SocksError("SOCKS4 is disabled", _socks4_reply(SOCKS4_REJECTED))
            if self._require_auth:
                raise SocksError(
                    "SOCKS4 cannot carry a password and authentication is required",
                    _socks4_reply(SOCKS4_REJECTED),
                )
            self._state = _State.SOCKS4
        elif buf[0] == 5:
            self._version = 5
            if not self._socks5:
                raise SocksError("SOCKS5 is disabled", _NO_ACCEPTABLE)
            self._state = _State.GREETING
        else:
            raise SocksError(f"not a SOCKS request (first byte 0x{buf[0]:02x})")
        return 0

    def _read_socks4(self, buf: bytes) -> int | None:
        reject = _socks4_reply(SOCKS4_REJECTED)
        if len(buf) >= 2 and buf[1] not in _SOCKS4_COMMANDS:
            raise SocksError(f"unsupported SOCKS4 command 0x{buf[1]:02x}", reject)
        if len(buf) < _SOCKS4_HEAD.size:
            return None
        _, cd, port, dstip = _SOCKS4_HEAD.unpack_from(buf)
        user_end = self._find_nul(buf, _SOCKS4_HEAD.size, "USERID", reject)
        if user_end is None:
            return None
        userid = _decode_text(buf[_SOCKS4_HEAD.size : user_end])
        end = user_end + 1
        if dstip[:3] == b"\0\0\0" and dstip[3] != 0:  # SOCKS4a: the host name follows
            host_end = self._find_nul(buf, end, "host name", reject)
            if host_end is None:
                return None
            parsed = _name(buf[end:host_end])
            if parsed is None:
                raise SocksError("unacceptable SOCKS4a host name", reject)
            host, address_type = parsed
            end = host_end + 1
        else:
            host, address_type = str(ipaddress.IPv4Address(dstip)), "ipv4"
        self._queue.append(Request(4, Command(cd), host, port, address_type, userid))
        self._state = _State.DONE
        return end

    @staticmethod
    def _find_nul(buf: bytes, start: int, what: str, reject: bytes) -> int | None:
        end = buf.find(b"\0", start, start + _MAX_FIELD + 1)
        if end < 0:
            if len(buf) > start + _MAX_FIELD:
                raise SocksError(f"SOCKS4 {what} longer than {_MAX_FIELD} bytes", reject)
            return None
        return end

    def _read_greeting(self, buf: bytes) -> int | None:
        if len(buf) < 2:
            return None
        nmethods = buf[1]
        if nmethods == 0:
            raise SocksError("SOCKS5 greeting offers no methods", _NO_ACCEPTABLE)
        if len(buf) < 2 + nmethods:
            return None
        methods = buf[2 : 2 + nmethods]
        if self._require_auth and _METHOD_USERPASS in methods:
            self._out += bytes([5, _METHOD_USERPASS])
            self._state = _State.AUTH
        elif not self._require_auth and _METHOD_NONE in methods:
            self._out += bytes([5, _METHOD_NONE])
            self._state = _State.REQUEST
        else:
            raise SocksError("no acceptable SOCKS5 authentication method", _NO_ACCEPTABLE)
        return 2 + nmethods

    def _read_auth(self, buf: bytes) -> int | None:
        if not buf:
            return None
        if buf[0] != 1:
            raise SocksError(f"bad RFC 1929 version 0x{buf[0]:02x}", _AUTH_FAIL)
        if len(buf) < 2:
            return None
        ulen = buf[1]
        if ulen == 0:
            raise SocksError("empty RFC 1929 user name", _AUTH_FAIL)
        if len(buf) < 3 + ulen:
            return None
        plen = buf[2 + ulen]
        end = 3 + ulen + plen
        if len(buf) < end:
            return None
        username = _decode_text(buf[2 : 2 + ulen])
        self._username = username
        self._queue.append(NeedsAuth(username, _decode_text(buf[3 + ulen : end])))
        self._state = _State.REQUEST
        return end

    def _read_request(self, buf: bytes) -> int | None:
        if not buf:
            return None
        if buf[0] != 5:
            raise SocksError(
                f"bad SOCKS5 request version 0x{buf[0]:02x}",
                _socks5_reply(Socks5Reply.GENERAL_FAILURE),
            )
        if len(buf) < 2:
            return None
        if buf[1] not in _SOCKS5_COMMANDS:
            raise SocksError(
                f"unsupported SOCKS5 command 0x{buf[1]:02x}",
                _socks5_reply(Socks5Reply.COMMAND_NOT_SUPPORTED),
            )
        if len(buf) < _SOCKS5_HEAD.size:
            return None
        _, cmd, _rsv, atyp = _SOCKS5_HEAD.unpack_from(buf)
        start = _SOCKS5_HEAD.size
        if atyp == 1:
            end = start + 4
            if len(buf) < end + 2:
                return None
            host, address_type = str(ipaddress.IPv4Address(buf[start:end])), "ipv4"
        elif atyp == 4:
            end = start + 16
            if len(buf) < end + 2:
                return None
            host, address_type = str(ipaddress.IPv6Address(buf[start:end])), "ipv6"
        elif atyp == 3:
            if len(buf) < start + 1:
                return None
            end = start + 1 + buf[start]
            if len(buf) < end + 2:
                return None
            parsed = _name(buf[start + 1 : end])
            if parsed is None:
                raise SocksError(
                    "unacceptable SOCKS5 domain name",
                    _socks5_reply(Socks5Reply.GENERAL_FAILURE),
                )
            host, address_type = parsed
        else:
            raise SocksError(
                f"unsupported SOCKS5 address type 0x{atyp:02x}",
                _socks5_reply(Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED),
            )
        (port,) = _PORT.unpack_from(buf, end)
        self._queue.append(Request(5, Command(cmd), host, port, address_type, self._username))
        self._state = _State.DONE
        return end + 2


_READERS: dict[_State, Callable[[SocksServer, bytes], int | None]] = {
    _State.START: SocksServer._read_start,
    _State.SOCKS4: SocksServer._read_socks4,
    _State.GREETING: SocksServer._read_greeting,
    _State.AUTH: SocksServer._read_auth,
    _State.REQUEST: SocksServer._read_request,
}

#: What to send when a message in this state outgrows max_buffer.
_TOO_LONG_REPLY: dict[_State, bytes] = {
    _State.START: b"",
    _State.SOCKS4: _socks4_reply(SOCKS4_REJECTED),
    _State.GREETING: _NO_ACCEPTABLE,
    _State.AUTH: _AUTH_FAIL,
    _State.REQUEST: _socks5_reply(Socks5Reply.GENERAL_FAILURE),
}
