"""STOMP framing: a bounded, incremental frame parser and an encoder (sans-IO).

stompest's own ``StompParser`` keeps an unbounded buffer and rescans it on
every read, so a peer can make it use any amount of memory and quadratic time.
:class:`StompFrameParser` produces the same stompest objects
(:class:`StompFrame`, :class:`StompHeartBeat`) but:

* remembers where it stopped scanning, so every input byte is examined a
  bounded number of times (``scanned`` counts them, for tests);
* enforces :class:`StompLimits` while the frame is still arriving, so it never
  holds more than ``max_head + max_body + 2`` unparsed bytes;
* reports every malformation as :class:`StompProtocolError`, whose text is fit
  for the ``message`` header of an ERROR frame, and then refuses further input.

Leniencies, chosen for interoperability: CRLF line ends are accepted in every
version (a CONNECT frame arrives before the version is known), and a bare
``:`` inside a header value is kept as is (stomp.py does not escape values).

This module imports nothing from twisted.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from stompest.error import StompFrameError
from stompest.protocol import StompFrame, StompSpec
from stompest.protocol.frame import StompHeartBeat
from stompest.protocol.util import escape, unescape

__all__ = [
    "DEFAULT_MAX_BODY",
    "StompFrame",
    "StompFrameParser",
    "StompFrameTooLarge",
    "StompHeartBeat",
    "StompLimits",
    "StompProtocolError",
    "can_encode_header",
    "encode_frame",
]

_LF = 0x0A
_CR = 0x0D
_CONTENT_LENGTH = StompSpec.CONTENT_LENGTH_HEADER
_HANDSHAKE_CLIENT = frozenset({StompSpec.CONNECT, StompSpec.STOMP})
_HANDSHAKE_SERVER = frozenset({StompSpec.CONNECTED})
# CONNECT/STOMP/CONNECTED are legal whatever version we currently assume, since
# they are what decides the version.
_ALWAYS_KNOWN = _HANDSHAKE_CLIENT | _HANDSHAKE_SERVER

#: Bytes one frame body may hold unless the caller says otherwise.
DEFAULT_MAX_BODY = 16 * 1024 * 1024


class StompLimits(NamedTuple):
    """Caps on what one frame may make the parser hold, in bytes or counts."""

    max_header_line: int = 8192
    max_headers: int = 64
    max_head: int = 65536
    max_body: int = DEFAULT_MAX_BODY


class StompProtocolError(Exception):
    """The peer sent something we will not parse; ``str(e)`` suits an ERROR frame.

    ``frames`` holds the complete frames that preceded the bad input in the same
    ``feed`` call, so the caller can still act on them before failing.
    """

    def __init__(self, message: str, frames: list[StompFrame | StompHeartBeat] | None = None):
        super().__init__(message)
        self.frames: list[StompFrame | StompHeartBeat] = frames if frames is not None else []


class StompFrameTooLarge(StompProtocolError):
    """A frame exceeded one of the :class:`StompLimits` (as opposed to being malformed)."""


class _State(enum.Enum):
    IDLE = "between frames: heart-beat EOLs or the start of a command line"
    HEAD = "reading the command line and header lines"
    BODY = "reading the body up to its NUL"
    DEAD = "an error was raised; no more input is accepted"


def _short(data: bytes | str, limit: int = 40) -> str:
    """Render untrusted input for an error message: repr'd, single line, truncated."""
    text = repr(data[:limit])
    return text + ("..." if len(data) > limit else "")


def _header_shown(line: bytes | str) -> str:
    """A bad header line for an error message, with a passcode's value never shown."""
    head = line[:8].lower()
    if head in (b"passcode", "passcode"):
        return "'passcode:***'"
    return _short(line)


class StompFrameParser:
    """I turn a byte stream into stompest frames and heart-beats, within limits.

    ``version`` is the negotiated STOMP version; it selects header unescaping,
    the command set and whether bare EOLs between frames are reported as
    :class:`StompHeartBeat` (1.1+) or silently skipped (1.0).

    Because a handshake frame decides how what follows must be parsed, parsing
    stops after CONNECT/STOMP (``server=True``: I read what clients send) or
    CONNECTED (``server=False``) until ``version`` is assigned; the bytes behind
    it wait in the buffer, and the next ``feed`` (``feed(b"")`` will do)
    continues with them.

    ``handshake_limits``, if given, apply until the first handshake frame is complete and
    ``limits`` from then on: a server accepts only a small CONNECT from a stranger, yet
    large frames once it knows who is talking.
    """

    def __init__(
        self,
        version: str = StompSpec.VERSION_1_0,
        limits: StompLimits = StompLimits(),  # noqa: B008 - immutable NamedTuple
        server: bool = True,
        handshake_limits: StompLimits | None = None,
    ) -> None:
        self.limits = limits if handshake_limits is None else handshake_limits
        self._after_handshake = limits
        self._handshake = _HANDSHAKE_CLIENT if server else _HANDSHAKE_SERVER
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed input
        self._scan = 0  # where the next delimiter search starts
        self._state = _State.IDLE
        self._held = False
        #: Bytes examined so far by delimiter searches; linear in the input.
        self.scanned = 0
        self._reset_frame()
        self.version = version

    @property
    def version(self) -> str:
        return self._version

    @version.setter
    def version(self, value: str) -> None:
        if value not in StompSpec.VERSIONS:
            raise ValueError(f"unsupported STOMP version {value!r}")
        self._version = value
        self._commands = StompSpec.COMMANDS[value] | _ALWAYS_KNOWN
        self._body_allowed = StompSpec.COMMANDS_BODY_ALLOWED[value]
        self._heartbeats = value != StompSpec.VERSION_1_0
        self._held = False

    @property
    def buffered(self) -> int:
        """How many received bytes are held, not yet returned as frames."""
        return len(self._buf) - self._pos

    @property
    def held(self) -> bool:
        """True after a handshake frame, until ``version`` is assigned."""
        return self._held

    def feed(self, data: bytes) -> list[StompFrame | StompHeartBeat]:
        """Take more bytes; return every frame and heart-beat they complete."""
        if self._state is _State.DEAD:
            raise StompProtocolError("parser closed after an earlier protocol error")
        self._buf += data
        out: list[StompFrame | StompHeartBeat] = []
        try:
            self._parse(out)
            if self._held and self.buffered > self.limits.max_head + self.limits.max_body + 2:
                raise StompFrameTooLarge("too much data before the handshake completed")
        except StompProtocolError as e:
            self._state = _State.DEAD
            self._buf = bytearray()
            self._pos = self._scan = 0
            e.frames = out
            raise
        self._compact()
        return out

    # -- internals -------------------------------------------------------

    def _reset_frame(self) -> None:
        self._frame_start = 0
        self._body_start = 0
        self._command: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._length: int | None = None

    def _compact(self) -> None:
        shift = self._pos
        if not shift:
            return
        del self._buf[:shift]
        self._pos = 0
        self._scan -= shift
        self._frame_start -= shift
        self._body_start -= shift

    def _parse(self, out: list[StompFrame | StompHeartBeat]) -> None:
        buf = self._buf
        limits = self.limits
        while not self._held:
            if self._state is _State.IDLE:
                if self._pos >= len(buf):
                    return
                first = buf[self._pos]
                if first == _LF or first == _CR:
                    eol = 1 if first == _LF else 2
                    if eol == 2:
                        if self._pos + 1 >= len(buf):
                            return
                        if buf[self._pos + 1] != _LF:
                            raise StompProtocolError("carriage return without line feed")
                    self._pos += eol
                    self.scanned += eol
                    if self._heartbeats:
                        out.append(StompHeartBeat())
                    continue
                self._reset_frame()
                self._frame_start = self._scan = self._pos
                if self._whole_head(buf):
                    continue  # parsed in one go; now in BODY
                self._state = _State.HEAD

            if self._state is _State.HEAD:
                nl = buf.find(b"\n", self._scan)
                if nl < 0:
                    self.scanned += len(buf) - self._scan
                    self._scan = len(buf)
                    if len(buf) - self._pos > limits.max_header_line + 1:
                        raise StompFrameTooLarge(
                            f"header line longer than {limits.max_header_line} bytes"
                        )
                    if len(buf) - self._frame_start > limits.max_head:
                        raise StompFrameTooLarge(f"frame head larger than {limits.max_head} bytes")
                    return
                self.scanned += nl + 1 - self._scan
                end = nl - 1 if nl > self._pos and buf[nl - 1] == _CR else nl
                line = bytes(buf[self._pos : end])
                self._pos = self._scan = nl + 1
                if len(line) > limits.max_header_line:
                    raise StompFrameTooLarge(
                        f"header line longer than {limits.max_header_line} bytes"
                    )
                if self._pos - self._frame_start > limits.max_head:
                    raise StompFrameTooLarge(f"frame head larger than {limits.max_head} bytes")
                if self._command is None:
                    self._command = self._parse_command(line)
                elif line:
                    self._parse_header(line)
                else:
                    self._end_of_head()
                continue

            # _State.BODY
            if self._length is not None:
                end = self._body_start + self._length
                if len(buf) <= end:
                    return
                self.scanned += 1
                if buf[end] != 0:
                    raise StompProtocolError(
                        "frame not terminated by NUL after content-length bytes"
                    )
            else:
                end = buf.find(b"\0", self._scan)
                if end < 0 or end - self._body_start > limits.max_body:
                    self.scanned += (len(buf) if end < 0 else end + 1) - self._scan
                    self._scan = len(buf)
                    if len(buf) - self._body_start > limits.max_body:
                        raise StompFrameTooLarge(f"frame body larger than {limits.max_body} bytes")
                    return
                self.scanned += end + 1 - self._scan
            out.append(self._finish_frame(end))

    def _whole_head(self, buf: bytearray) -> bool:
        """Parse a head that is all in the buffer and plain ASCII without escapes, in one go.

        That is every frame Socketeer itself sends, and it saves a Python round per header
        line. Anything else (a head split across reads, CR, backslashes, non-ASCII, or
        anything wrong) returns False, having changed nothing but ``scanned``, and the
        line-by-line path below takes it, with its precise errors.
        """
        pos = self._pos
        limits = self.limits
        # Stop at the first CR too: a CRLF head has no blank LF line, and searching on
        # through the frames behind it would cost max_head bytes per frame.
        m = _HEAD_END.search(buf, pos, pos + limits.max_head)
        if m is None or m.group() == b"\r":
            self.scanned += (m.start() if m else min(len(buf), pos + limits.max_head)) - pos
            return False
        end = m.start()
        head = bytes(buf[pos:end])
        if b"\\" in head or not head.isascii():
            return False
        lines = head.decode("ascii").split("\n")
        command = lines[0]
        if (
            command not in self._commands
            or len(lines) - 1 > limits.max_headers
            or max(map(len, lines)) > limits.max_header_line
        ):
            return False
        headers = []
        length = None
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not (sep and name):
                return False
            if name == _CONTENT_LENGTH and length is None:
                if not value.isdigit() or int(value) > limits.max_body:
                    return False
                length = int(value)
            headers.append((name, value))
        self.scanned += end + 2 - pos
        self._pos = self._scan = end + 2
        self._command = command
        self._headers = headers
        self._length = length
        self._end_of_head()
        return True

    def _parse_command(self, line: bytes) -> str:
        try:
            command = line.decode("ascii")
        except UnicodeDecodeError:
            command = ""
        if command not in self._commands:
            raise StompProtocolError(f"unknown command {_short(line)} for STOMP {self._version}")
        return command

    def _parse_header(self, line: bytes) -> None:
        limits = self.limits
        if len(self._headers) >= limits.max_headers:
            raise StompFrameTooLarge(f"more than {limits.max_headers} headers")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise StompProtocolError(f"header is not valid UTF-8: {_header_shown(line)}") from None
        name, sep, value = text.partition(":")
        if not sep:
            raise StompProtocolError(f"header line without ':': {_header_shown(text)}")
        if not name:
            raise StompProtocolError(f"header with an empty name: {_short(text)}")
        assert self._command is not None
        # Without a backslash or a bare CR there is nothing to unescape (the common case).
        if ("\\" in text or "\r" in text) and _escaped(self._version, self._command):
            decode = unescape(self._version, self._command)
            try:
                name = decode(name)
                # Lenient: a bare ':' in a value is data, not an error.
                value = ":".join(decode(part) for part in value.split(":"))
            except StompFrameError:
                raise StompProtocolError(
                    f"undefined escape sequence in header {_header_shown(text)}"
                ) from None
        if name == _CONTENT_LENGTH and not any(h == _CONTENT_LENGTH for h, _ in self._headers):
            if not (value.isascii() and value.isdigit()):
                raise StompProtocolError(f"bad content-length {_short(value)}")
            length = int(value)
            if length > limits.max_body:
                raise StompFrameTooLarge(f"frame body larger than {limits.max_body} bytes")
            self._length = length
        self._headers.append((name, value))

    def _end_of_head(self) -> None:
        assert self._command is not None
        if self._length and self._command not in self._body_allowed:
            raise StompProtocolError(f"{self._command} frames must not have a body")
        self._state = _State.BODY
        self._body_start = self._scan = self._pos

    def _finish_frame(self, end: int) -> StompFrame:
        command = self._command
        assert command is not None
        with memoryview(self._buf) as view:
            body = bytes(view[self._body_start : end])
        if body and command not in self._body_allowed:
            raise StompProtocolError(f"{command} frames must not have a body")
        frame = StompFrame(command, rawHeaders=self._headers, body=body, version=self._version)
        self._pos = self._scan = end + 1
        self._state = _State.IDLE
        self._reset_frame()
        if command in self._handshake:
            self._held = True
            self.limits = self._after_handshake
        return frame


#: Where a plain head ends (a blank line), or why it is not plain (a CR).
_HEAD_END = re.compile(rb"\r|\n\n")

#: Characters that STOMP escapes or forbids in a header (anything else goes as it is).
_CARE = re.compile(r"[:\\\r\n]")


def _escaped(version: str, command: str) -> bool:
    """Whether headers of ``command`` are escaped in ``version`` (never in 1.0)."""
    return (
        version != StompSpec.VERSION_1_0
        and command not in StompSpec.COMMANDS_ESCAPE_EXCLUDED[version]
    )


def _escaper(version: str, command: str):
    return escape(version, command) if _escaped(version, command) else str


def can_encode_header(version: str, command: str, name: str, value: str) -> bool:
    """Whether ``name: value`` survives a trip through :func:`encode_frame` in ``version``.

    STOMP 1.0 and the CONNECT/CONNECTED frames have no escaping, so a newline
    (or a colon in a name) cannot be carried; neither can a bare carriage
    return in 1.1.
    """
    if not (name + value).isascii():
        try:
            (name + value).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            return False
    esc = _escaper(version, command)
    wire_name, wire_value = esc(name), esc(value)
    return bool(wire_name) and not (
        ":" in wire_name or "\n" in wire_name + wire_value or "\r" in wire_name + wire_value
    )


def encode_frame(frame: StompFrame) -> bytes:
    """Serialize ``frame`` for its version, always stating a content-length for a body.

    A body may contain NULs (tunnel data does), so any frame with a body gets a
    correct ``content-length``; headers are escaped per version by stompest and
    sent as UTF-8. Raises ValueError for a header that cannot be represented.
    """
    version = frame.version
    command = frame.command
    body = bytes(frame.body)
    items = frame.rawHeaders if frame.rawHeaders is not None else frame.headers.items()
    headers = [(str(k), str(v)) for k, v in items]
    if body or any(k == _CONTENT_LENGTH for k, _ in headers):
        headers = [(_CONTENT_LENGTH, str(len(body)))] + [
            (k, v) for k, v in headers if k != _CONTENT_LENGTH
        ]
    if all(name and not _CARE.search(name) and not _CARE.search(value) for name, value in headers):
        # Fast path: nothing to escape or check, whatever the version (every relayed chunk).
        try:
            head = "\n".join([command, *(f"{name}:{value}" for name, value in headers)])
            return b"".join((head.encode("utf-8"), b"\n\n", body, b"\0"))
        except UnicodeEncodeError:
            pass  # lone surrogates: let the careful path explain
    esc = _escaper(version, command)
    lines = [command]
    for name, value in headers:
        if not can_encode_header(version, command, name, value):
            raise ValueError(f"header {name!r} cannot be encoded in STOMP {version} {command}")
        lines.append(f"{esc(name)}:{esc(value)}")
    lines.append("\n")
    return "\n".join(lines).encode("utf-8") + body + b"\0"
