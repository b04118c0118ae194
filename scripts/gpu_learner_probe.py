"""Where FLUX.1-dev's learner step fails on a GPU (session 7: illegal memory access / cuBLAS errors in its first
backward, every scheme and setting). One variant per process, since an illegal access poisons the CUDA context:

  python3 scripts/gpu_learner_probe.py sdpa BACKEND      # attention alone at FLUX's shape, forward and backward
  python3 scripts/gpu_learner_probe.py learner BACKEND   # the learner alone: 2 samples, micro-batch 1, LoRA r32
  python3 scripts/gpu_learner_probe.py timing BACKEND    # learner steps of 8 samples: micro-batch 2 (warm-up, then
                                                         # timed), 1, and 2 again with memory-efficient attention

BACKEND: auto, flash, efficient, cudnn, math. Ends with `probe KIND BACKEND ok SECONDS` or the error; `timing`
prints a line per step before it.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from orchestration.bench.arch import build_adapter, build_transformer, random_conditioning
from workers.learner import Learner, LearnerSettings, TrainBatch, attention_backend
from workers.sampling import flow_sigmas


def sdpa(backend: str) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 24, 4608, 128, device="cuda", dtype=torch.bfloat16, generator=gen, requires_grad=True)
               for _ in range(3))
    with attention_backend(backend):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out.float().square().mean().backward()


def _flux_learner(backend: str, micro_batch: int) -> tuple[Learner, object]:
    small = os.environ.get("PROBE_SMALL") == "1"  # a two-block FLUX on the CPU, to check the probe itself
    overrides = {"num_layers": 1, "num_single_layers": 1} if small else None
    base = build_transformer("flux1_dev", device="cpu" if small else "cuda", dtype=torch.bfloat16, overrides=overrides)
    adapter = build_adapter("flux1_dev", base, 512)
    settings = LearnerSettings(lora_rank=32, lora_alpha=64.0, micro_batch_size=micro_batch, attention_backend=backend)
    return Learner(adapter, settings, seed=0), adapter


def _batch(adapter, n: int) -> TrainBatch:
    cond = random_conditioning("flux1_dev", 1, device="cpu", dtype=torch.bfloat16).index([0] * n)
    advantages = torch.linspace(-1.0, 1.0, n)
    return TrainBatch(cond, torch.randn(n, *adapter.latent_shape()), advantages, flow_sigmas(10))


def timing(backend: str) -> None:
    learner_, adapter = _flux_learner(backend, 2)
    batch = _batch(adapter, 8)
    for iteration, (label, mb, kernel) in enumerate((("warm-up", 2, backend), ("timed", 2, backend),
                                                     ("timed", 1, backend), ("timed", 2, "efficient"))):
        learner_.settings.micro_batch_size, learner_.settings.attention_backend = mb, kernel
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        learner_.train_step(batch, iteration)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sys.stdout.write(f"timing {label} micro_batch={mb} attention={kernel}: {time.perf_counter() - start:.2f} s "
                         f"for 8 samples\n")
        sys.stdout.flush()


def learner(backend: str) -> None:
    learner_, adapter = _flux_learner(backend, 1)
    learner_.train_step(_batch(adapter, 2), 0)


def main() -> None:
    kind, backend = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    try:
        {"sdpa": sdpa, "learner": learner, "timing": timing}[kind](backend)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sys.stdout.write(f"probe {kind} {backend} ok {time.perf_counter() - start:.1f}\n")
    except Exception as exc:  # the probe's answer is the error
        sys.stdout.write(f"probe {kind} {backend} FAILED {type(exc).__name__}: {str(exc).splitlines()[0]}\n")
        sys.stdout.flush()
        raise


if __name__ == "__main__":
    main()
