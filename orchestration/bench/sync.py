"""`solrl bench sync`: learner -> sampling-copy weight refresh latency, re-quantization included.

Times ``PolicyCopy.set_policy`` (what every rollout worker runs after an update) for a LoRA update
(rank r on the family's target modules: merge W = W0 + s B A, then re-derive the quantized weights)
and for full weights, per precision. Transport (object store / collective) is not included: it is
timed per iteration by the runtime itself (``sync_seconds`` in metrics.jsonl).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from orchestration.bench.arch import build_adapter, build_transformer
from orchestration.bench.timing import mean_seconds
from workers.generation import PolicyCopy, PolicyWeights


@dataclass
class SyncRow:
    arch: str
    precision: str
    update: str
    seconds: float
    num_bytes: int


def random_lora(model: nn.Module, targets: tuple[str, ...], rank: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    deltas = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name.endswith(t) for t in targets):
            deltas[name] = {"A": torch.randn(rank, module.in_features, generator=gen) / rank,
                            "B": torch.randn(module.out_features, rank, generator=gen) * 1e-3,
                            "scaling": 2.0}
    return deltas


def bench_sync(arch: str, *, precisions: list[str], lora_rank: int, device: str, repeats: int = 3,
               overrides: dict | None = None) -> list[SyncRow]:
    dev = torch.device(device)
    base = build_transformer(arch, device=dev, dtype=torch.bfloat16, overrides=overrides)
    adapter = build_adapter(arch, base, 512)
    lora = PolicyWeights(1, lora=random_lora(base, adapter.lora_target_modules, lora_rank))
    full = PolicyWeights(1, full={k: v.clone() for k, v in base.state_dict().items()})
    rows = []
    for precision in precisions:
        copy_ = PolicyCopy(adapter, precision, batch_size=1)
        for label, weights in ((f"lora_r{lora_rank}", lora), ("full", full)):
            seconds = mean_seconds(lambda w=weights, c=copy_: c.set_policy(w), dev, repeats)
            rows.append(SyncRow(arch, precision, label, seconds, weights.num_bytes()))
        del copy_
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def rows_to_markdown(rows: list[SyncRow]) -> str:
    lines = ["| arch | precision | update | seconds | payload MB |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.arch} | {r.precision} | {r.update} | {r.seconds:.3f} | {r.num_bytes / 1e6:.1f} |" for r in rows]
    return "\n".join(lines)


def rows_to_dicts(rows: list[SyncRow]) -> list[dict]:
    return [asdict(r) for r in rows]
