"""Pure helpers shared by the benchmark's processes: test data, checksums, statistics.

Nothing here starts a process or opens a socket, so ``tests/test_bench_smoke.py`` can
exercise it on tiny inputs.

Test data is a pseudo-random block of ``PATTERN_LEN`` bytes (a prime, so that no socket read
or write size lines up with it) repeated without end; stream ``k`` starts at offset
``k * STREAM_STRIDE`` so that bytes of one stream landing in another fail the check. Every
transfer is verified by its length and CRC-32: fast enough (about 2 GB/s here) that the
check does not cap the direct-TCP baseline, and any loss, duplication, reordering or
corruption changes it.
"""

from __future__ import annotations

import math
import random
import statistics
import zlib
from collections.abc import Iterable, Sequence

#: Length of the repeated test-data block: a prime a little under 1 MiB.
PATTERN_LEN = 1_048_573
#: Offset between the data of two parallel streams.
STREAM_STRIDE = 7_919
#: Largest write the senders make (bytes).
CHUNK = 256 * 1024
MiB = 1024 * 1024


class Pattern:
    """The endless test stream: ``chunk(offset, size)`` is bytes [offset, offset+size)."""

    def __init__(self, seed: int = 7, length: int = PATTERN_LEN) -> None:
        block = random.Random(seed).randbytes(length)
        self.length = length
        self._double = memoryview(block + block)

    def chunk(self, offset: int, size: int) -> memoryview:
        if size > self.length:
            raise ValueError("chunk larger than the pattern block")
        start = offset % self.length
        return self._double[start : start + size]

    def chunks(self, offset: int, count: int, size: int = CHUNK):
        """The ``count`` bytes from ``offset``, as memoryviews of at most ``size`` bytes."""
        size = min(size, self.length)
        done = 0
        while done < count:
            n = min(size, count - done)
            yield self.chunk(offset + done, n)
            done += n

    def checksum(self, offset: int, count: int) -> tuple[int, int]:
        """(length, crc32) of the ``count`` bytes from ``offset``: what a receiver must see."""
        check = Checksum()
        for piece in self.chunks(offset, count, self.length):
            check.update(piece)
        return check.value


class Checksum:
    """Running length and CRC-32 of the bytes seen so far."""

    __slots__ = ("count", "crc")

    def __init__(self) -> None:
        self.count = 0
        self.crc = 0

    def update(self, data) -> None:
        self.count += len(data)
        self.crc = zlib.crc32(data, self.crc)

    @property
    def value(self) -> tuple[int, int]:
        return (self.count, self.crc)


def format_checksum(value: tuple[int, int]) -> str:
    return f"{value[0]} {value[1]:08x}"


def parse_checksum(text: str) -> tuple[int, int]:
    count, crc = text.split()
    return (int(count), int(crc, 16))


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100), linearly interpolated between closest ranks
    (numpy's default method); ``values`` need not be sorted."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError("p must be within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(ordered[lo])
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p99/mean/min/max of latencies given in nanoseconds, in milliseconds."""
    ms = [s / 1e6 for s in samples_ns]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def median(values: Iterable[float]) -> float | None:
    """The median of the values that are not None; None if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def mib_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds if seconds > 0 else float("inf")


def meets(value: float | None, op: str, bound: float) -> bool | None:
    """Whether ``value op bound`` holds (op is ">=" or "<="); None when unknown."""
    if value is None:
        return None
    if op == ">=":
        return value >= bound
    if op == "<=":
        return value <= bound
    raise ValueError(op)


def fmt_num(value: float | None, digits: int = 3) -> str:
    """A figure with about ``digits`` significant digits; '-' for a missing one."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
