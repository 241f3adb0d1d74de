"""Timing shared by the bench scripts: wall and process CPU seconds of one call.

CPU seconds stay fair on a shared, busy machine; wall seconds are what a user waits. On CUDA the
device is synchronised before and after, so queued kernels are counted.

>>> out, wall_s, cpu_s = timed(lambda: sum(range(1000)))
>>> out, wall_s >= 0, cpu_s >= 0
(499500, True, True)
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, float, float]:
    """``(fn(), wall seconds, process CPU seconds)``."""
    sync = device.startswith("cuda")
    if sync:
        import torch

        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if sync:
        import torch

        torch.cuda.synchronize()
    return out, time.perf_counter() - t0, time.process_time() - c0
