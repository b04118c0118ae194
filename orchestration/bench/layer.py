"""`solrl bench layer`: one linear layer's cost per precision path, the unit the rollout numbers are made of.

For each (M, K, N): the BF16 GEMM, FP8 with an eager quantization pass, our FP8 path eager and compiled,
our FP8 path compiled together with its producer (LayerNorm, as in every DiT block), the same producer +
BF16 GEMM compiled, torchao's float8 per-row path compiled where torchao is installed, and the NVFP4
emulation. It shows what the quantization pass costs next to the GEMM and how much fusion buys back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from orchestration.bench.timing import mean_seconds
from workers.precision import Fp8Linear, Nvfp4Linear, fp8


@dataclass
class LayerRow:
    m: int
    k: int
    n: int
    path: str
    milliseconds: float
    tflops: float
    vs_bf16: float


def _time_ms(fn: Callable[[], object], device: torch.device, repeats: int = 20) -> float:
    return mean_seconds(fn, device, repeats, warmup=3) * 1e3


class NormThenLinear(nn.Module):
    """LayerNorm followed by a linear: the producer a fused quantization can fold into."""

    def __init__(self, linear: nn.Module, k: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(k, elementwise_affine=False, eps=1e-6)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def bench_layer(m: int, k: int, n: int, device: str = "cuda") -> list[LayerRow]:
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16, generator=gen)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16, generator=gen) / k**0.5
    b = torch.zeros(n, device=dev, dtype=torch.bfloat16)
    linear = nn.Linear(k, n, device=dev, dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(b)
    fp8_layer = Fp8Linear(w, b, use_native=True)
    w_q, w_s = fp8_layer.quantized_weight()

    def fp8_eager_exact() -> torch.Tensor:
        q, s = fp8.quantize_rows(x)  # the reference quantizer, a separate pass before the GEMM
        return torch._scaled_mm(q, w_q.t(), scale_a=s, scale_b=w_s.reshape(1, -1), out_dtype=torch.bfloat16)

    paths: dict[str, Callable[[], object]] = {
        "bf16 F.linear": lambda: F.linear(x, w, b),
        "fp8 eager quantize pass + _scaled_mm": fp8_eager_exact,
        "fp8 ours, eager": lambda: fp8_layer(x),
    }
    compiled_fp8 = torch.compile(fp8_layer)
    paths["fp8 ours, compiled"] = lambda: compiled_fp8(x)
    norm_bf16 = torch.compile(NormThenLinear(linear, k))
    norm_fp8 = torch.compile(NormThenLinear(fp8_layer, k))
    paths["layernorm + bf16, compiled"] = lambda: norm_bf16(x)
    paths["layernorm + fp8 ours, compiled"] = lambda: norm_fp8(x)
    try:
        from orchestration.bench.rollout import quantize_torchao_fp8_module

        tao = torch.compile(NormThenLinear(quantize_torchao_fp8_module(linear), k))
        paths["layernorm + fp8 torchao, compiled"] = lambda: tao(x)
    except ImportError:
        pass
    nvfp4_layer = torch.compile(Nvfp4Linear(w, b, use_native=False))
    paths["nvfp4 emulated, compiled"] = lambda: nvfp4_layer(x)
    flops = 2 * m * k * n
    rows: list[LayerRow] = []
    with torch.no_grad():
        base_ms = _time_ms(paths["bf16 F.linear"], dev)
        for name, fn in paths.items():
            ms = base_ms if name == "bf16 F.linear" else _time_ms(fn, dev)
            rows.append(LayerRow(m, k, n, name, ms, flops / ms / 1e9, base_ms / ms))
    return rows


def rows_to_markdown(rows: list[LayerRow]) -> str:
    lines = ["| M x K x N | path | ms | TFLOP/s | speed vs bf16 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.m}x{r.k}x{r.n} | {r.path} | {r.milliseconds:.3f} | {r.tflops:.0f} | {r.vs_bf16:.2f}x |"
              for r in rows]
    return "\n".join(lines)


def rows_to_dicts(rows: list[LayerRow]) -> list[dict]:
    return [asdict(r) for r in rows]
