"""Memory a server returns to the system after a burst (large frames, large results): glibc keeps freed heap
in its arenas for good, and its dynamic mmap threshold moves big buffers (frames, tensors) into them after the
first few are freed. ``tune_allocator`` fixes the threshold (buffers of 1 MiB and more are mapped and unmapped
on their own) and bounds the arenas; ``return_memory`` trims the rest now and then. Elsewhere than glibc, no-ops."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import os
from pathlib import Path

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD_BYTES = 1 << 20
ARENAS = 4
TRIM_EVERY_S = 10.0
BURST_BYTES = 32 << 20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold at 1 MiB and its arenas at ``ARENAS`` (call before serving); False elsewhere."""
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and libc.mallopt(_M_ARENA_MAX, ARENAS)
    libc.mallopt(_M_TRIM_THRESHOLD, 8 * MMAP_THRESHOLD_BYTES)
    return bool(ok)


def trim(collect: bool = False) -> None:
    """Give freed heap back to the system now (after ``gc.collect`` with ``collect``: a burst of objects went)."""
    if collect:
        gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def return_memory(every_s: float = TRIM_EVERY_S, burst_bytes: int = BURST_BYTES) -> None:
    """Every ``every_s``: give freed heap back to the system (``malloc_trim``), until cancelled. After a burst
    (the process grew by ``burst_bytes`` since the last look) a full garbage collection first: refused gRPC
    messages and their calls end up in reference cycles that hold megabytes until the collector's next full
    pass; only then, so that no steady-state tick pays for a full pass. Elsewhere than glibc on Linux, nothing."""
    if _libc() is None:
        return
    me = os.getpid()
    last = rss_bytes(me)
    while True:
        await asyncio.sleep(every_s)
        trim(collect=rss_bytes(me) - last > burst_bytes)
        last = rss_bytes(me)
