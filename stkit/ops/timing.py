"""Timing rules of the op benchmark: steady-state medians, and an allocator that keeps
freed memory.

This module only times a callable; what is timed (shapes, backends, the roofline) is
:mod:`stkit.ops.bench`. The rules exist because of what this project's machine does:
its first calls fault in fresh memory, its speed drifts within minutes, and a garbage
collection pass can land in any call.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time

import torch

__all__ = ["WARM_S", "TIMED_S", "ROUNDS", "BUDGET_S", "timeit", "keep_freed_memory"]

# Short calls are warmed up and timed for at least these many seconds: the first calls of
# a shape fault in fresh memory for their outputs and gradients until the allocator keeps
# the freed blocks (shape B forward + backward: about 4,200 page faults and 6 ms per call
# at first, none and 2.1 ms later), and a median over a few calls of a millisecond or less
# moves with every hiccup of the machine.
WARM_S = 0.3
TIMED_S = 0.1
# The backends are timed in turns, this many rounds of each, and a backend's figure is
# the median of its rounds: this machine's speed drifts by tens of percent within
# minutes, and timing one backend after the other would put that drift into the ratio.
ROUNDS = 5
# Seconds of timed calls one backend gets per figure (the reference takes seconds a call
# on the big shapes); split evenly over the rounds.
BUDGET_S = 20.0


def timeit(fn, device: torch.device, warmup: int, repeats: int,
           budget_s: float | None = None, warm_s: float | None = None) -> float:
    """Median wall time of fn() in ms, in the steady state: at least `warmup` calls and
    `warm_s` seconds of warm-up, then at least `repeats` timed calls and TIMED_S seconds.
    A call slower than budget_s / 4 needs no warm-up, and repeats stop once they would
    pass budget_s (the reference is slow on big shapes). Python's garbage collector is
    paused while timing, as ``timeit`` does: a collection pass landing in one call would
    be charged to whichever backend runs then. budget_s and warm_s default to BUDGET_S
    and WARM_S."""
    budget_s = BUDGET_S if budget_s is None else budget_s
    warm_s = WARM_S if warm_s is None else warm_s
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _timed_median(fn, sync, warmup, repeats, budget_s, warm_s)
    finally:
        if was_enabled:
            gc.enable()


def _timed_median(fn, sync, warmup: int, repeats: int, budget_s: float,
                  warm_s: float) -> float:
    times: list[float] = []
    warm_start = time.perf_counter()
    while len(times) < max(repeats, 1) or sum(times) < TIMED_S * 1e3:
        t0 = time.perf_counter()
        fn()
        sync()
        dt = time.perf_counter() - t0
        if (warmup > 0 or t0 - warm_start < warm_s) and dt < budget_s / 4:
            warmup -= 1
            continue
        times.append(dt * 1e3)
        if (sum(times) / 1e3 + dt) > budget_s:
            break
    return statistics.median(times)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of giving it back to the
    system; True if it took. By default it gives back large blocks and trims its heap, so
    that later calls fault the same memory in again, page by page, and whether a call does
    depends on what the calls before it freed: shape B's reference forward measured 6.4
    ms without faults and 12 ms with its 4,800 faults per call, from one run to the next.
    With it both backends are timed without faults (after warm-up), as with the caching
    allocators (jemalloc, tcmalloc) recommended for PyTorch on CPUs. It holds for the rest
    of the process, so only the command line sets it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
