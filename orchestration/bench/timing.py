"""Wall-clock timing of GPU work for the benchmarks: synchronize around the timed region."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Mean seconds per call over ``repeats`` calls, after ``warmup`` untimed ones (compilation, caches)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def seconds_once(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Seconds of one call, and its result (a phase of an iteration, whose output feeds the next)."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out
