"""Where FLUX.1-dev's learner step fails on a GPU (session 7: illegal memory access / cuBLAS errors in its first
backward, every scheme and setting). One variant per process, since an illegal access poisons the CUDA context:

  python3 scripts/gpu_learner_probe.py sdpa BACKEND      # attention alone at FLUX's shape, forward and backward
  python3 scripts/gpu_learner_probe.py learner BACKEND   # the learner alone: 2 samples, micro-batch 1, LoRA r32

BACKEND: auto, flash, efficient, cudnn, math. Prints one line: `probe KIND BACKEND ok SECONDS` or the error.
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


def learner(backend: str) -> None:
    # PROBE_SMALL=1: a two-block FLUX on the CPU, to check the probe itself
    small = os.environ.get("PROBE_SMALL") == "1"
    overrides = {"num_layers": 1, "num_single_layers": 1} if small else None
    base = build_transformer("flux1_dev", device="cpu" if small else "cuda", dtype=torch.bfloat16, overrides=overrides)
    adapter = build_adapter("flux1_dev", base, 512)
    settings = LearnerSettings(lora_rank=32, lora_alpha=64.0, micro_batch_size=1, attention_backend=backend)
    learner_ = Learner(adapter, settings, seed=0)
    cond = random_conditioning("flux1_dev", 1, device="cpu", dtype=torch.bfloat16).index([0, 0])
    latents = torch.randn(2, *adapter.latent_shape())
    learner_.train_step(TrainBatch(cond, latents, torch.tensor([1.0, -1.0]), flow_sigmas(10)), 0)


def main() -> None:
    kind, backend = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    try:
        {"sdpa": sdpa, "learner": learner}[kind](backend)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sys.stdout.write(f"probe {kind} {backend} ok {time.perf_counter() - start:.1f}\n")
    except Exception as exc:  # the probe's answer is the error
        sys.stdout.write(f"probe {kind} {backend} FAILED {type(exc).__name__}: {str(exc).splitlines()[0]}\n")
        sys.stdout.flush()
        raise


if __name__ == "__main__":
    main()
