"""The common client driver: one scenario against one peer, in a process of its own.

``python -m bench.client '<json spec>'`` runs the scenario the spec names and prints one line
``RESULT <json>``. Every peer except "direct" is reached through SOCKS5 (no authentication,
CONNECT to an IPv4 address), so the client's own work is the same for all of them; "direct"
connects to the target itself. The hold scenarios print ``HELD <json>`` once every stream is
open and wait for a line on standard input (the harness measures memory meanwhile) before
they verify and close the streams.

Scenarios (the spec's other keys are their parameters):

* ``bulk_up`` / ``bulk_down`` (``size``): one stream; timed from the first byte sent to the
  target's checksum answer (up) or the last byte received (down). Connection set-up is not
  in the figure.
* ``parallel`` (``streams``, ``size``): that many streams at once, even ones uploading and
  odd ones downloading, each with its own data; aggregate MiB/s over the transfer phase.
* ``connect`` (``count``): sequentially: TCP connect, SOCKS5 handshake, send one byte to
  the echo server, receive it back, close. Timed to the echoed byte, as a user feels it
  (ssh -D and pproxy answer SOCKS before their upstream connection exists).
* ``rtt`` (``count``, ``size``): one open echo stream, ``count`` ping-pongs of ``size`` bytes.
* ``hold`` (``streams``, ``concurrency``): open that many echo streams (each checked with
  one echoed byte), report, wait, then send each a distinct 8-byte token and check the echo.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time

from bench.common import (
    CHUNK,
    STREAM_STRIDE,
    Checksum,
    Pattern,
    latency_summary,
    mib_per_s,
    parse_checksum,
)
from bench.target import raise_fd_limit


class BenchError(Exception):
    """A scenario failed: a refused or broken stream, or a checksum mismatch."""


class Conn(asyncio.Protocol):
    """A client connection with awaitable exact reads, a checksum sink mode and flow control."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.want = 0
        self.waiter: asyncio.Future | None = None
        self.sink: Checksum | None = None
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self._drain: asyncio.Future | None = None
        self.paused = False
        self.transport: asyncio.Transport | None = None

    # protocol callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.update(data)
            return
        self.buf += data
        if self.waiter is not None and len(self.buf) >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    def eof_received(self) -> bool:
        if not self.eof.done():
            self.eof.set_result(None)
        self._wake(BenchError("connection closed by the peer"))
        return True  # keep our half open: we may still be sending

    def connection_lost(self, exc) -> None:
        if not self.eof.done():
            self.eof.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake(BenchError(f"connection lost: {exc}" if exc else "connection closed"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(BenchError("connection lost while sending"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            if len(self.buf) >= self.want:
                self.waiter.set_result(None)
            else:
                self.waiter.set_exception(error)

    # awaitables
    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if self.eof.done():
                raise BenchError(f"connection closed after {len(self.buf)} of {n} bytes")
            self.want = n
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_to_eof(self) -> bytes:
        await self.eof
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def start_sink(self, check: Checksum) -> None:
        if self.buf:
            check.update(self.buf)
            self.buf.clear()
        self.sink = check

    async def drain(self) -> None:
        if self.paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def write(self, data) -> None:
        self.transport.write(data)

    async def close(self) -> None:
        self.transport.close()
        await self.lost


async def open_stream(spec: dict, service: str) -> Conn:
    """A connection to the target's ``service`` port, through the SOCKS5 proxy if any."""
    loop = asyncio.get_running_loop()
    target = spec["target"]
    host, port = target["host"], target[service]
    proxy = spec.get("proxy")
    if proxy is None:
        _, conn = await loop.create_connection(Conn, host, port)
        return conn
    _, conn = await loop.create_connection(Conn, proxy[0], proxy[1])
    try:
        conn.write(b"\x05\x01\x00")
        reply = await conn.read_exactly(2)
        if reply != b"\x05\x00":
            raise BenchError(f"SOCKS5 greeting refused: {reply!r}")
        conn.write(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
        head = await conn.read_exactly(4)
        if head[0] != 5 or head[1] != 0:
            raise BenchError(f"SOCKS5 CONNECT refused: reply code {head[1]}")
        atyp = head[3]
        if atyp == 1:
            await conn.read_exactly(4 + 2)
        elif atyp == 4:
            await conn.read_exactly(16 + 2)
        elif atyp == 3:
            (length,) = await conn.read_exactly(1)
            await conn.read_exactly(length + 2)
        else:
            raise BenchError(f"SOCKS5 reply with address type {atyp}")
    except BaseException:
        conn.transport.abort()
        raise
    return conn


PATTERN = Pattern()


async def _upload(spec: dict, size: int, offset: int, conn: Conn | None = None) -> float:
    expected = PATTERN.checksum(offset, size)
    conn = conn or await open_stream(spec, "upload")
    start = time.perf_counter()
    conn.write(f"{size}\n".encode())
    for piece in PATTERN.chunks(offset, size, CHUNK):
        conn.write(piece)
        await conn.drain()
    answer = (await conn.read_to_eof()).decode().strip()
    elapsed = time.perf_counter() - start
    conn.transport.close()
    if not answer:
        raise BenchError("upload: no checksum answer (stream cut)")
    got = parse_checksum(answer)
    if got != expected:
        raise BenchError(f"upload checksum mismatch: sent {expected}, target saw {got}")
    return elapsed


async def _download(spec: dict, size: int, offset: int, conn: Conn | None = None) -> float:
    expected = PATTERN.checksum(offset, size)
    conn = conn or await open_stream(spec, "download")
    check = Checksum()
    conn.start_sink(check)
    start = time.perf_counter()
    conn.write(f"{size} {offset}\n".encode())
    await conn.eof
    elapsed = time.perf_counter() - start
    conn.transport.close()
    if check.value != expected:
        raise BenchError(f"download checksum mismatch: expected {expected}, got {check.value}")
    return elapsed


async def bulk_up(spec: dict) -> dict:
    size = spec["size"]
    elapsed = await _upload(spec, size, 0)
    return {"bytes": size, "seconds": elapsed, "mibps": mib_per_s(size, elapsed)}


async def bulk_down(spec: dict) -> dict:
    size = spec["size"]
    elapsed = await _download(spec, size, 0)
    return {"bytes": size, "seconds": elapsed, "mibps": mib_per_s(size, elapsed)}


async def parallel(spec: dict) -> dict:
    streams, size = spec["streams"], spec["size"]
    services = ["upload" if i % 2 == 0 else "download" for i in range(streams)]
    for i in range(streams):  # warm the checksum cache outside the timed phase
        PATTERN.checksum(i * STREAM_STRIDE, size)
    conns = await asyncio.gather(*(open_stream(spec, s) for s in services))
    start = time.perf_counter()
    jobs = [
        (_upload if s == "upload" else _download)(spec, size, i * STREAM_STRIDE, conns[i])
        for i, s in enumerate(services)
    ]
    await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - start
    total = streams * size
    return {"bytes": total, "seconds": elapsed, "mibps": mib_per_s(total, elapsed)}


async def connect(spec: dict) -> dict:
    samples: list[int] = []
    socks: list[int] = []
    for i in range(spec["count"]):
        t0 = time.perf_counter_ns()
        conn = await open_stream(spec, "echo")
        t1 = time.perf_counter_ns()
        byte = bytes([i % 256])
        conn.write(byte)
        if await conn.read_exactly(1) != byte:
            raise BenchError("connect: wrong byte echoed")
        t2 = time.perf_counter_ns()
        await conn.close()
        samples.append(t2 - t0)
        socks.append(t1 - t0)
    out = latency_summary(samples)
    out["socks_p50_ms"] = latency_summary(socks)["p50_ms"]
    return out


async def rtt(spec: dict) -> dict:
    count, size = spec["count"], spec.get("size", 64)
    conn = await open_stream(spec, "echo")
    payload = bytearray(os.urandom(size))
    for _ in range(10):  # warm up
        conn.write(bytes(payload))
        await conn.read_exactly(size)
    samples = []
    for i in range(count):
        payload[0] = i % 256
        msg = bytes(payload)
        t0 = time.perf_counter_ns()
        conn.write(msg)
        got = await conn.read_exactly(size)
        samples.append(time.perf_counter_ns() - t0)
        if got != msg:
            raise BenchError("rtt: echo differs")
    await conn.close()
    return latency_summary(samples)


async def hold(spec: dict) -> dict:
    n, concurrency = spec["streams"], spec.get("concurrency", 64)
    gate = asyncio.Semaphore(concurrency)
    conns: list[Conn | None] = [None] * n
    errors: dict[str, int] = {}

    async def open_one(i: int) -> None:
        async with gate:
            try:
                conn = await open_stream(spec, "echo")
                conn.write(b"!")
                if await conn.read_exactly(1) != b"!":
                    raise BenchError("wrong byte")
                conns[i] = conn
            except (OSError, BenchError) as e:
                key = type(e).__name__ + ": " + str(e)[:80]
                errors[key] = errors.get(key, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    open_s = time.perf_counter() - t0
    opened = sum(c is not None for c in conns)
    print("HELD " + json.dumps({"opened": opened, "open_s": open_s}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def verify(i: int, conn: Conn) -> bool:
        token = i.to_bytes(8, "big")
        try:
            conn.write(token)
            ok = await conn.read_exactly(8) == token
        except (OSError, BenchError):
            ok = False
        return ok

    t1 = time.perf_counter()
    results = await asyncio.gather(*(verify(i, c) for i, c in enumerate(conns) if c is not None))
    verify_s = time.perf_counter() - t1
    verified = sum(results)
    for c in conns:
        if c is not None:
            c.transport.close()
    await asyncio.sleep(0.2)
    return {
        "streams": n,
        "opened": opened,
        "verified": verified,
        "open_s": open_s,
        "verify_s": verify_s,
        "errors": errors,
        "ok": verified == n,
    }


SCENARIOS = {
    "bulk_up": bulk_up,
    "bulk_down": bulk_down,
    "parallel": parallel,
    "connect": connect,
    "rtt": rtt,
    "hold": hold,
}


async def run(spec: dict) -> dict:
    fn = SCENARIOS[spec["scenario"]]
    return await asyncio.wait_for(fn(spec), spec.get("timeout", 120))


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_fd_limit()
    try:
        result = asyncio.run(run(spec))
    except TimeoutError:
        result = {"error": f"timed out after {spec.get('timeout', 120)}s"}
    except (OSError, BenchError) as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
