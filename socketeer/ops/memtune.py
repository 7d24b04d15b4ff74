"""glibc malloc settings for a relay process: keep freed message buffers for reuse.

Every relayed chunk is a bytes object of up to 256 KiB, made and freed a few times per hop
(the socket read, the sealed copy, the parsed body). glibc serves allocations above its mmap
threshold (128 KiB until it adapts) with fresh ``mmap()`` calls and gives freed heap back to
the kernel beyond its trim threshold, so chunk after chunk costs page faults: about 100 µs
per 256 KiB on the benchmark machine, half the CPU a source spent on a bulk upload
(``bench/notes.rst``). Fixing both thresholds at a few MiB keeps freed buffers for the next
chunk; the price is at most ``trim_threshold`` of idle heap per process.

Only the twistd plugin calls this: an embedding application owns its process's allocator.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations below this come from the heap (and are reused), not from mmap().
MMAP_THRESHOLD = 4 << 20
#: Free heap kept before glibc returns memory to the kernel.
TRIM_THRESHOLD = 16 << 20


def user_tuned(environ=os.environ) -> bool:
    """The operator set glibc's malloc knobs already (their choice wins)."""
    return "glibc.malloc" in environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") and name.endswith("_") for name in environ
    )


def tune_malloc(
    mmap_threshold: int = MMAP_THRESHOLD,
    trim_threshold: int = TRIM_THRESHOLD,
    environ=os.environ,
) -> bool:
    """Set glibc's mmap and trim thresholds; False where there is no glibc or the user
    tuned malloc already."""
    if not sys.platform.startswith("linux") or user_tuned(environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success; musl's stub returns 0.
    return (
        mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
        and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    )
