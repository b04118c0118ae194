"""`solrl bench rollout`: images/s and peak memory of the denoising loop, per (arch, resolution, steps,
batch, mode), plus the GEMM-level roofline of the architecture.

Modes (every row times only the transformer's denoising loop; text encoding and VAE are excluded):
- ``diffusers-eager-bf16``: diffusers' FlowMatchEulerDiscreteScheduler stepping loop over the eager
  BF16 transformer — how flow_grpo and the paper's baselines sample (the anchor);
- ``engine-<precision>``: our sampler over a freshly built copy with the precision swapped in (bf16,
  fp8, nvfp4), optionally ``torch.compile``d; each engine copy is built, timed and freed in turn, so
  no row holds two copies of the weights beyond the anchor's BF16 base;
- ``engine-fp8-torchao``: torchao's float8 dynamic-activation/float8-weight (per-row) quantization of
  the same layers, compiled: the library reference for a fused FP8 path (needs torchao).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from orchestration.bench.arch import ARCHS, build_adapter, build_transformer, random_conditioning
from orchestration.bench.timing import mean_seconds
from workers.compile import CompileScope, compile_model
from workers.models.base import Conditioning, ModelAdapter
from workers.precision import apply_precision
from workers.sampling import flow_sigmas, initial_noise, sample


@dataclass
class RolloutRow:
    arch: str
    resolution: int
    steps: int
    batch: int
    mode: str
    compiled: bool
    images_per_second: float
    seconds_per_batch: float
    peak_memory_gib: float | None
    tflops_achieved: float | None
    note: str = ""


def flops_per_image(adapter: ModelAdapter, cond: Conditioning, steps: int) -> float:
    """FLOPs of one image's denoising loop (one transformer forward per step), counted by torch."""
    x = torch.zeros(1, *adapter.latent_shape(), device=adapter.device, dtype=adapter.dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        adapter.velocity(x, torch.full((1,), 0.5, device=adapter.device), cond.index([0]))
    return float(counter.get_total_flops()) * steps


def diffusers_loop(adapter: ModelAdapter, cond: Conditioning, steps: int, batch: int, seed: int) -> Callable:
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    device, dtype = adapter.device, adapter.dtype

    @torch.no_grad()
    def run() -> torch.Tensor:
        scheduler.set_timesteps(steps, device=device)
        x = initial_noise(list(range(seed, seed + batch)), adapter.latent_shape(), dtype=dtype, device=device)
        for t in scheduler.timesteps:
            v = adapter.velocity(x, (t / 1000).expand(batch).to(device), cond)
            x = scheduler.step(v, t, x, return_dict=False)[0]
        return x

    return run


def engine_loop(adapter: ModelAdapter, model: nn.Module, cond: Conditioning, steps: int, batch: int,
                seed: int) -> Callable:
    sigmas = flow_sigmas(steps).to(adapter.device)
    device, dtype = adapter.device, adapter.dtype

    @torch.no_grad()
    def run() -> torch.Tensor:
        x = initial_noise(list(range(seed, seed + batch)), adapter.latent_shape(), dtype=torch.float32, device=device)
        return sample(lambda z, t: adapter.velocity(z.to(dtype), t, cond, transformer=model).float(), x, sigmas,
                      solver="euler").x0

    return run


def engine_model(arch: str, precision: str, device: torch.device, overrides: dict | None,
                 min_dim: int | None = None) -> nn.Module:
    """A fresh BF16 transformer with ``precision`` swapped in (same random weights as the anchor's: same seed).

    min_dim: None = the family's policy (Sol-RL's: e.g. SD3 keeps layers with max(in, out) <= 2432 in BF16,
    which on SD3.5-Medium leaves only the image-stream MLPs quantized); 0 = every layer the skip list allows.
    """
    model = build_transformer(arch, device=device, dtype=torch.bfloat16, overrides=overrides)
    family = ARCHS[arch].family
    if precision == "fp8-torchao":
        quantize_torchao_fp8(model, family, min_dim)
    elif precision != "bf16":
        apply_precision(model, precision, family, min_dim=min_dim)  # type: ignore[arg-type]
    return model


def quantize_torchao_fp8(model: nn.Module, family: str, min_dim: int | None = None) -> None:
    """torchao float8 W8A8 (dynamic per-row activation scales) on the layers our FP8 backend swaps."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    from workers.precision.selection import FAMILY_POLICIES, skip_reason

    policy = FAMILY_POLICIES[family]
    resolved = policy.min_dim if min_dim is None else min_dim

    def eligible(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear) and skip_reason(name, module, policy.skip, resolved) is None

    quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=eligible)


def quantize_torchao_fp8_module(linear: nn.Linear) -> nn.Module:
    """One nn.Linear under torchao's float8 per-row W8A8 (in place; returned for chaining)."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    holder = nn.Sequential(linear)
    quantize_(holder, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return holder[0]


def bench_rollout(arch: str, *, resolution: int, steps: int, batch: int, modes: list[str], compile_engine: bool,
                  device: str, repeats: int = 3, overrides: dict | None = None,
                  bf16_tflops: float | None = None, compile_mode: str | None = None,
                  min_dim: int | None = None, compile_scope: CompileScope = "full") -> list[RolloutRow]:
    dev = torch.device(device)
    base = build_transformer(arch, device=dev, dtype=torch.bfloat16, overrides=overrides)
    adapter = build_adapter(arch, base, resolution)
    cond = random_conditioning(arch, batch, device=dev, dtype=torch.bfloat16)
    flops = flops_per_image(adapter, cond, steps)
    rows = []
    for mode in modes:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        compiled = False
        model = None
        if mode == "diffusers-eager-bf16":
            fn = diffusers_loop(adapter, cond, steps, batch, seed=0)
        elif mode.startswith("engine-"):
            precision = mode.removeprefix("engine-")
            model = engine_model(arch, precision, dev, overrides, min_dim)
            if compile_engine:
                compile_model(model, compile_scope, compile_mode)  # in place: state-dict keys unchanged
                compiled = True
            fn = engine_loop(adapter, model, cond, steps, batch, seed=0)
        else:
            raise ValueError(f"unknown mode {mode!r}: diffusers-eager-bf16 or engine-<bf16|fp8|nvfp4|fp8-torchao>")
        seconds = mean_seconds(fn, dev, repeats)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
        achieved = flops * batch / seconds / 1e12
        note = f"{achieved / bf16_tflops:.0%} of measured BF16 peak" if bf16_tflops else ""
        if min_dim is not None and mode.startswith("engine-") and mode != "engine-bf16":
            note = f"min_dim={min_dim}; {note}"
        if compiled and compile_scope != "full":
            note = f"compiled per block; {note}"
        rows.append(RolloutRow(arch, resolution, steps, batch, mode, compiled, batch / seconds, seconds, peak,
                               achieved, note))
        del fn, model
        gc.collect()
        torch._dynamo.reset()
    return rows


def measured_gemm_tflops(device: str, size: int = 8192) -> dict[str, float]:
    """The GPU's measured BF16 and FP8 (rowwise _scaled_mm) GEMM rates on one large square product."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return {}
    a = torch.randn(size, size, device=dev, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=dev, dtype=torch.bfloat16)
    flops = 2 * size**3
    out = {"bf16": flops / mean_seconds(lambda: a @ b, dev, 10) / 1e12}
    if torch.cuda.get_device_capability(dev) >= (8, 9):
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
        sa = torch.ones(size, 1, device=dev)
        sb = torch.ones(1, size, device=dev)
        out["fp8"] = flops / mean_seconds(lambda: torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb,
                                                             out_dtype=torch.bfloat16), dev, 10) / 1e12
    return out


def rows_to_markdown(rows: list[RolloutRow]) -> str:
    head = "| arch | res | steps | batch | mode | compiled | images/s | s/batch | peak GiB | TFLOP/s | note |"
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    for r in rows:
        peak = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "-"
        lines.append(f"| {r.arch} | {r.resolution} | {r.steps} | {r.batch} | {r.mode} | {r.compiled} | "
                     f"{r.images_per_second:.2f} | {r.seconds_per_batch:.3f} | {peak} | "
                     f"{r.tflops_achieved:.1f} | {r.note} |")
    return "\n".join(lines)


def rows_to_dicts(rows: list[RolloutRow]) -> list[dict]:
    return [asdict(r) for r in rows]
