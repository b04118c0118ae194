"""Semi-autoregressive block generation with Fast-dLLM's approximate caches (Algorithm 1, Sec. 3.2-3.3).

Shape legend: B batch, P prompt length, G generation length, L = P + G, W block length, V vocabulary.

For each block [s, e) of the response:
1. a full pass over the whole sequence is decode step 1 of the block and (with a cache) refreshes the cache;
2. until the block has no MASK left, one step decodes with
   - ``none``: a full pass (LLaDA's baseline, exact),
   - ``prefix``: the queries x[s:] against the cached K/V of [0, s) (Fast-dLLM PrefixCache),
   - ``dual``: the queries x[s:e] against a full-length cache in which the block's fresh K/V overwrite the
     old ones in place, while the prefix and suffix K/V stay as they were at step 1 (DualCache).
Positions after the block are never selected. The unmask rule is ``fixed`` tokens per step (LLaDA) or the
confidence ``threshold`` (Fast-dLLM, always at least the top-1).
With Dream's logit shift, a window also carries the token before it (its logits come from position i - 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from workers.aux.common.masked_diffusion import KV, MaskedTransformer
from workers.aux.fast_dllm.decoding import num_transfer_schedule, select_transfer

CacheMode = Literal["none", "prefix", "dual"]


@dataclass(frozen=True)
class DecodeSpec:
    """How to decode: cache mode, block length and the unmask rule (``threshold`` None: fixed rule)."""

    gen_length: int = 256
    block_length: int = 32
    cache: CacheMode = "none"
    tokens_per_step: int = 1  # fixed rule: block_length / tokens_per_step steps per block
    threshold: float | None = None  # Fast-dLLM's tau; None selects the fixed rule

    def __post_init__(self) -> None:
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} must be a multiple of block_length={self.block_length}")
        if self.threshold is None and self.block_length % self.tokens_per_step:
            raise ValueError(f"block_length={self.block_length} must be a multiple of "
                             f"tokens_per_step={self.tokens_per_step}")
        if self.cache not in ("none", "prefix", "dual"):
            raise ValueError(f"cache must be 'none', 'prefix' or 'dual', got {self.cache!r}")


@dataclass
class Generation:
    """Output of ``generate``: the full sequences and what the decoding cost."""

    sequences: torch.Tensor  # [B, L]
    nfe: int  # model calls (each over the whole batch)
    query_tokens: int
    qk_pairs: int
    tokens_per_call: list[float] = field(default_factory=list)  # tokens unmasked per row at each call
    calls_per_block: list[int] = field(default_factory=list)
    kv_trace: list[list[torch.Tensor]] = field(default_factory=list)  # per block, per call: keys [layers, G, L, E]

    def response(self, prompt_len: int) -> torch.Tensor:
        return self.sequences[:, prompt_len:]


def _truncate(kv: list[KV], end: int) -> list[KV]:
    return [(k[:, :, :end].clone(), v[:, :, :end].clone()) for k, v in kv]


@torch.no_grad()
def generate(model: MaskedTransformer, prompt_BP: torch.Tensor, spec: DecodeSpec, mask_id: int,
             trace_kv: bool = False) -> Generation:
    """Fill ``spec.gen_length`` masked positions after ``prompt_BP`` (greedy, temperature 0).

    ``trace_kv`` (cache "none" only) keeps the keys of row 0 at every call, for the K/V drift analysis.
    """
    if trace_kv and spec.cache != "none":
        raise ValueError("trace_kv records full passes; use it with cache='none'")
    b, p = prompt_BP.shape
    w = spec.block_length
    shift = 1 if model.spec.logit_shift else 0
    x = torch.cat([prompt_BP, torch.full((b, spec.gen_length), mask_id, dtype=prompt_BP.dtype,
                                         device=prompt_BP.device)], dim=1)
    start_counts = (model.counter.nfe, model.counter.query_tokens, model.counter.qk_pairs)
    per_call: list[float] = []
    steps = w // spec.tokens_per_step
    calls_per_block: list[int] = []
    traces: list[list[torch.Tensor]] = []

    def keys(kv) -> torch.Tensor:
        return torch.stack([k[0] for k, _ in kv])

    def decode(logits_BWV: torch.Tensor, s: int, step: int, schedule: torch.Tensor) -> None:
        block = x[:, s:s + w]
        selectable = block == mask_id
        if spec.threshold is None:
            x0, transfer = select_transfer(logits_BWV, selectable, count_B=schedule[:, min(step, steps - 1)])
        else:
            x0, transfer = select_transfer(logits_BWV, selectable, threshold=spec.threshold)
        block[transfer] = x0[transfer]
        per_call.append(float(transfer.sum()) / b)

    for s in range(p, p + spec.gen_length, w):
        e = s + w
        schedule = num_transfer_schedule((x[:, s:e] == mask_id).sum(dim=1), steps)
        nfe0 = model.counter.nfe
        out = model(x, use_cache=spec.cache != "none" or trace_kv)
        if trace_kv:
            traces.append([keys(out.kv)])
        decode(out.logits[:, s:e], s, 0, schedule)
        ws = s - shift  # window start (one earlier with Dream's logit shift)
        cache = None
        if spec.cache == "prefix":
            cache = _truncate(out.kv, ws)
        elif spec.cache == "dual":
            cache = [(k.clone(), v.clone()) for k, v in out.kv]
        step = 1
        while bool((x[:, s:e] == mask_id).any()):
            if spec.cache == "none":
                out = model(x, use_cache=trace_kv)
                if trace_kv:
                    traces[-1].append(keys(out.kv))
                logits = out.logits[:, s:e]
            elif spec.cache == "prefix":
                logits = model(x[:, ws:], q_start=ws, past=cache).logits[:, shift:shift + w]
            else:
                logits = model(x[:, ws:e], q_start=ws, past=cache, replace=True).logits[:, shift:]
            decode(logits, s, step, schedule)
            step += 1
        calls_per_block.append(model.counter.nfe - nfe0)
    c = model.counter
    return Generation(x, c.nfe - start_counts[0], c.query_tokens - start_counts[1], c.qk_pairs - start_counts[2],
                      per_call, calls_per_block, traces)


def tokens_per_step(gen: Generation, gen_length: int) -> float:
    """Generated tokens per model call (per row)."""
    return gen_length / max(gen.nfe, 1)


def fixed_rule_steps(spec: DecodeSpec) -> int:
    """Model calls of the fixed rule: gen_length / tokens_per_step (blocks are filled at equal pace)."""
    return math.ceil(spec.gen_length / spec.tokens_per_step)
