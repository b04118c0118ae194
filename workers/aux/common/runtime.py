"""Device choice, seeding and progress bars for auxiliary experiments."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request on a CPU machine fails clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device={name!r} but no CUDA device is visible; use 'auto' or 'cpu'")
    return device


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator: experiments never touch the global RNG."""
    return torch.Generator(device=device).manual_seed(int(seed))


def progress(items: Iterable[T], desc: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """A tqdm bar (plain lines when not a terminal, as in Ray job logs); silent when disabled."""
    disable = not enabled or os.environ.get("SOLRL_NO_PROGRESS") == "1"
    return iter(tqdm(items, desc=desc, total=total, disable=disable, dynamic_ncols=True, mininterval=1.0))


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Limit torch's intra-op threads and the BLAS/OpenMP pools (scikit-learn, scipy) to ``n`` inside the
    block, restoring them after (the settings are process-wide). None or 0 leaves them alone.

    The auxiliary experiments' nets are tiny: on a shared CPU, idle-spinning thread pools made them up
    to 20x slower than one thread.
    """
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)
