"""Seeded, regenerable noise: any candidate's initial and per-step noise can be rebuilt anywhere.

Sol-RL ranks candidates with a cheap (FP4) rollout and regenerates the chosen seeds in BF16 elsewhere, so a
candidate's noise must be a pure function of its identity: (run_seed, iteration, prompt_id, candidate) ->
:func:`candidate_seed`, and per SDE/CPS step :func:`step_seed`. Seeds are hashed with BLAKE2b (stable across
processes, machines and Python versions; Python's ``hash()`` is salted per process) into 63 bits, which
``torch.Generator.manual_seed`` accepts.

Each sample is drawn with its own CPU ``torch.Generator`` in float32 and only then cast and moved, so:
- the noise is bit-identical on every device type (CPU and CUDA generators produce different streams);
- a candidate's noise does not depend on which other candidates share its batch, or their order.
The per-sample CPU draw costs a host-to-device copy of one latent per candidate, negligible next to a
model forward.

Legend: B batch (one entry per seed), ``*`` the per-sample latent shape.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import torch
from torch import Tensor

from workers.sampling.errors import SamplingInputError

_SEED_BITS = 63
_MAX_FIELD = 2**63  # fields are packed as unsigned 64-bit; 63-bit keeps them valid torch seeds too
# Distinct BLAKE2b personalisations keep the two hash families (candidate vs step) from ever colliding.
_CANDIDATE_PERSON = b"solrl.cand.v1"
_STEP_PERSON = b"solrl.step.v1"


def _check_field(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_FIELD:
        raise SamplingInputError(f"`{name}` must be an int in [0, 2**63), got {value!r}.")


def _hash_ints(person: bytes, *values: int) -> int:
    digest = hashlib.blake2b(struct.pack(f"<{len(values)}Q", *values), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "little") >> (64 - _SEED_BITS)


def candidate_seed(run_seed: int, iteration: int, prompt_id: int, candidate: int) -> int:
    """Stable 63-bit seed identifying one candidate: BLAKE2b of the packed tuple.

    Args:
        run_seed: the run's base seed.
        iteration: training iteration.
        prompt_id: the prompt's stable id.
        candidate: candidate index within the prompt's group (e.g. 0..95 for Sol-RL's 96-candidate pool).

    Returns:
        int in [0, 2**63).
    """
    for value, name in (
        (run_seed, "run_seed"),
        (iteration, "iteration"),
        (prompt_id, "prompt_id"),
        (candidate, "candidate"),
    ):
        _check_field(value, name)
    return _hash_ints(_CANDIDATE_PERSON, run_seed, iteration, prompt_id, candidate)


def step_seed(candidate_seed: int, step: int) -> int:
    """Stable 63-bit seed for the noise of solver step ``step`` of one candidate (distinct from the seed
    used for its initial noise, and from every other step's)."""
    _check_field(candidate_seed, "candidate_seed")
    _check_field(step, "step")
    return _hash_ints(_STEP_PERSON, candidate_seed, step)


def _draw(seeds: Sequence[int], shape_per_sample: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
    if len(seeds) == 0:
        raise SamplingInputError("`seeds` is empty; pass one seed per sample.")
    shape = tuple(shape_per_sample)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise SamplingInputError(f"`shape_per_sample` must be positive ints, got {shape_per_sample!r}.")
    draws = []
    for seed in seeds:
        _check_field(seed, "seeds[i]")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        draws.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    return torch.stack(draws).to(device=device, dtype=dtype)


def initial_noise(
    seeds: Sequence[int],
    shape_per_sample: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Initial latents x_1 ~ N(0, I), one independent stream per candidate seed.

    Args:
        seeds: B candidate seeds (from :func:`candidate_seed`).
        shape_per_sample: latent shape of one sample, e.g. (C, H, W).
        dtype: output dtype (the draw itself is float32, so the values do not depend on it beyond rounding).
        device: output device.

    Returns:
        [B, *shape_per_sample] noise; row i depends only on ``seeds[i]``.
    """
    return _draw(seeds, shape_per_sample, dtype, device)


def step_noise(
    seeds: Sequence[int],
    step: int,
    shape_per_sample: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """N(0, I) noise for stochastic solver step ``step`` (0-based) of each candidate.

    Args:
        seeds: B candidate seeds (the same ones given to :func:`initial_noise`).
        step: the step index in the sampling grid (step i goes sigmas[i] -> sigmas[i + 1]).
        shape_per_sample: latent shape of one sample.
        dtype: output dtype.
        device: output device.

    Returns:
        [B, *shape_per_sample] noise; row i depends only on (``seeds[i]``, ``step``).
    """
    _check_field(step, "step")
    return _draw([step_seed(seed, step) for seed in seeds], shape_per_sample, dtype, device)
