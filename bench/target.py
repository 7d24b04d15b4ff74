"""The benchmark's targets: echo, upload (discard + checksum) and download servers.

Run as its own process (``python -m bench.target``); it prints one JSON line with its
ports, then serves on 127.0.0.1 until its standard input closes or it gets SIGTERM.

* echo: writes back whatever it reads (reading pauses while the client does not read).
* upload: reads one line ``<length>\\n`` and that many bytes, answers
  ``<length> <crc32 hex>\\n`` and closes.
* download: reads one line ``<length> <offset>\\n`` and sends that many bytes of the test
  pattern from that offset, then closes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys

from bench.common import CHUNK, Checksum, Pattern, format_checksum

PATTERN = Pattern()


class Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # close once what we wrote is out


class Upload(asyncio.Protocol):
    """``<length>\n`` then that many bytes; answers their checksum (no half-close needed:
    pproxy closes both ways on a client's FIN)."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.check = Checksum()
        self.head = bytearray()
        self.remaining = -1

    def data_received(self, data: bytes) -> None:
        if self.remaining < 0:
            self.head += data
            if b"\n" not in self.head:
                if len(self.head) > 100:
                    self.transport.abort()
                return
            line, _, rest = bytes(self.head).partition(b"\n")
            self.remaining = int(line)
            data = rest
        if len(data) > self.remaining:
            self.transport.abort()  # more than announced: the client will see no answer
            return
        self.check.update(data)
        self.remaining -= len(data)
        if self.remaining == 0:
            self.transport.write(format_checksum(self.check.value).encode() + b"\n")
            self.transport.close()


class Download(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)
        self.request = bytearray()
        self.remaining = -1
        self.offset = 0
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if self.remaining >= 0:
            return
        self.request += data
        if b"\n" not in self.request:
            if len(self.request) > 100:
                self.transport.abort()
            return
        line = bytes(self.request).split(b"\n", 1)[0]
        count, offset = (int(v) for v in line.split())
        self.remaining, self.offset = count, offset
        self._produce()

    def _produce(self) -> None:
        while self.remaining > 0 and not self.paused:
            n = min(CHUNK, self.remaining)
            self.transport.write(PATTERN.chunk(self.offset, n))
            self.offset += n
            self.remaining -= n
        if self.remaining == 0:
            self.remaining = -2  # done
            # Close after the buffer drains, and not from inside resume_writing: asyncio
            # 3.11 then calls connection_lost twice (its _write_ready closes as well).
            asyncio.get_running_loop().call_soon(self.transport.close)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.remaining > 0:
            self._produce()

    def eof_received(self) -> bool:
        return True  # the client's half-close does not end our sending


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()
    servers = {}
    for name, proto in (("echo", Echo), ("upload", Upload), ("download", Download)):
        servers[name] = await loop.create_server(proto, host, 0, backlog=4096)
    ports = {name: s.sockets[0].getsockname()[1] for name, s in servers.items()}
    print(json.dumps({"host": host, **ports}), flush=True)
    done = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    def stdin_readable() -> None:
        if not sys.stdin.buffer.read1(4096):  # the harness went away
            loop.remove_reader(sys.stdin.fileno())
            finish()

    loop.add_signal_handler(signal.SIGTERM, finish)
    loop.add_signal_handler(signal.SIGINT, finish)
    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    await done
    for s in servers.values():
        s.close()


def main() -> None:
    raise_fd_limit()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
