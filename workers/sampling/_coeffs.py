"""Private helpers shared by the step rules: the compute-dtype rule and time-coefficient broadcasting.

Legend: B batch, ``*`` the per-sample latent dims (e.g. C, H, W); ``x_B*`` is a tensor of shape [B, *latent].

Precision rule (used by every step in this package): the update arithmetic runs in
``compute_dtype(x.dtype)``, which is float32 for bf16/fp16/float32 inputs and float64 for float64 inputs.
Results that become the next latent are cast back to ``x.dtype``. This matches what diffusers' flow-match
scheduler does (upcast the sample to float32 for the update, cast back) and keeps bf16 models accurate: a bf16
``dt * v`` would lose about 3 significant digits per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workers.sampling.errors import SamplingInputError

# A time argument is either one value for the whole batch or one value per sample.
TimeLike = float | Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype the step arithmetic runs in: float64 stays float64, everything else becomes float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def time_coeff(t: TimeLike, x: Tensor, name: str) -> Tensor:
    """Turn a time argument into a tensor that broadcasts against ``x`` [B, *latent].

    Args:
        t: a python number, a 0-d tensor, or a per-sample tensor of shape [B].
        x: the latent the coefficient will multiply; only its shape, device and dtype are read.
        name: the argument name, used in error messages.

    Returns:
        A tensor in ``compute_dtype(x.dtype)`` on ``x.device`` of shape [] (shared t) or [B, 1, ..., 1].
    """
    dtype = compute_dtype(x.dtype)
    if isinstance(t, Tensor):
        if t.ndim == 0:
            return t.to(device=x.device, dtype=dtype)
        if t.ndim == 1 and t.shape[0] == x.shape[0]:
            return t.to(device=x.device, dtype=dtype).reshape(-1, *([1] * (x.ndim - 1)))
        raise SamplingInputError(
            f"`{name}` has shape {tuple(t.shape)} but the latent batch is {x.shape[0]}; pass a float, a 0-d "
            f"tensor or a tensor of shape [{x.shape[0]}]."
        )
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise SamplingInputError(f"`{name}` must be a float or a tensor, got {type(t).__name__}.")
    return torch.tensor(float(t), device=x.device, dtype=dtype)


def check_step_times(t: TimeLike, t_next: TimeLike, names: tuple[str, str] = ("t", "t_next")) -> None:
    """Raise unless ``0 <= t_next < t <= 1`` holds (per sample for tensors); ``names`` label the message.

    Python floats are checked for free; tensors cost one host sync, which is negligible next to a model
    forward (the sampler passes floats, so its loop never syncs here).
    """
    if isinstance(t, Tensor) or isinstance(t_next, Tensor):
        t_ = torch.as_tensor(t, dtype=torch.float64)
        tn_ = torch.as_tensor(t_next, dtype=torch.float64, device=t_.device)
        ok = bool(torch.all((tn_ >= 0) & (tn_ < t_) & (t_ <= 1)))
    else:
        ok = 0.0 <= t_next < t <= 1.0 and math.isfinite(t)
    if not ok:
        raise SamplingInputError(
            f"A step needs 0 <= {names[1]} < {names[0]} <= 1 (t=1 is noise, t=0 is data), got "
            f"{names[0]}={t!r}, {names[1]}={t_next!r}."
        )


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise unless two tensors have the same shape (no silent broadcasting of latents)."""
    if a.shape != b.shape:
        raise SamplingInputError(
            f"`{name_a}` has shape {tuple(a.shape)} but `{name_b}` has shape {tuple(b.shape)}; they must match."
        )


def check_fraction(value: float, name: str, *, upper: float | None) -> None:
    """Raise unless ``value`` is a finite float >= 0 (and <= ``upper`` when given)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SamplingInputError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    if upper is not None and value > upper:
        raise SamplingInputError(f"`{name}` must be <= {upper}, got {value!r}.")


def mean_over_latent(x: Tensor) -> Tensor:
    """Average [B, *latent] over every non-batch dim -> [B] (the per-dimension mean every anchor uses)."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x
