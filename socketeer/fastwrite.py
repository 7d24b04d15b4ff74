"""Send now, not on the next reactor turn, when a TCP transport has nothing queued.

Twisted's ``transport.write()`` only appends to a buffer and asks the reactor to watch the
socket for writability; the bytes leave one reactor turn later, after two ``epoll_ctl``
calls. A relay forwards one message per turn on every hop, so that costs each hop about
10 µs of CPU and a turn of latency (measured in ``bench/notes.rst``). When the transport's
buffer is empty, which is the usual case, sending at once is equivalent: the bytes go out
in the same order, and whatever the kernel does not take is handed to ``transport.write()``,
which queues it and applies back-pressure (producer pause) exactly as before. Any socket
error is left for Twisted to find on its own write, so connection loss is reported the
usual way.

Only plain TCP and UNIX transports qualify; TLS transports and test doubles always go
through ``write()``/``writeSequence()``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from twisted.internet.tcp import Connection


def _idle(transport) -> bool:
    """A plain socket transport with an empty buffer that still accepts writes."""
    return (
        isinstance(transport, Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting
        and not transport._writeDisconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    )


def write(transport, data: bytes) -> None:
    """``transport.write(data)``, trying the socket first when nothing is queued."""
    if data and _idle(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN, or an error Twisted will report on its own write
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def write_sequence(transport, parts: Sequence[bytes]) -> None:
    """``transport.writeSequence(parts)`` without joining them when the kernel takes them."""
    if _idle(transport):
        try:
            sent = transport.socket.sendmsg(parts)
        except OSError:
            sent = 0
        if sent == sum(len(part) for part in parts):
            return
        transport.write(b"".join(parts)[sent:])  # a copy only when the socket was full
        return
    transport.writeSequence(list(parts))


def reset(transport) -> None:
    """End a connection with a TCP reset, not a FIN: the bytes it should have carried did
    not all arrive, and a FIN would tell the client they had (SO_LINGER 0, then abort)."""
    handle = getattr(transport, "getHandle", None)
    sock = handle() if handle is not None else None
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def no_delay(transport) -> None:
    """Turn Nagle's algorithm off: with writes leaving at once, a small message must not
    wait for the acknowledgement of the one before (40 ms behind a delayed ACK)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:  # a UNIX socket has no such option
            pass


#: Read (and queue before pausing a producer) this much at a time, not Twisted's 64 KiB: one
#: ``recv`` per 256 KiB data message (``stream.MAX_DATA_MESSAGE``) on local sockets and
#: broker connections alike, since every read is a round through the parser and the node.
LARGE_READ = 256 * 1024


def large_reads(transport) -> None:
    """Read a whole data message at a time (any transport with a ``bufferSize``)."""
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = LARGE_READ
