"""Masked (absorbing-state) diffusion building blocks shared by aux.fast_dllm and aux.vadd.

Shape legend:
    B: batch, L: sequence length, Q: query tokens of one call, K: key tokens of one call,
    H: attention heads, G: key/value heads (grouped-query attention), D: model width, E: head width,
    V: vocabulary size, C: conditioning width (AdaLN)

- The forward process q(x_t | x_0) = prod_i Cat((1 - p) delta_{x0^i} + p delta_[MASK]) (Fast-dLLM Sec. 2.1,
  MDLM Sec. 3), with p = p_mask(t): LLaDA's ``(1 - eps) t + eps`` or MDLM/VADD's linear ``alpha_t = 1 - t``.
- The loss weight -alpha'_t / (1 - alpha_t) = 1 / p_mask (LLaDA GUIDELINES.md; VADD's w(t) for the linear
  schedule): the masked cross-entropy divided by the masking probability.
- ``MaskedTransformer``: the LLaDA backbone: a bidirectional pre-norm transformer (RMSNorm, RoPE, SwiGLU, no
  causal mask), its parameter names following LLaDA's llama block so published checkpoints map by name. It
  has the key/value-cache API Fast-dLLM needs (keys stored before RoPE, an in-place "replace" window), an
  optional grouped-query attention and q/k/v bias (Dream/Qwen2), and optional AdaLN conditioning (VADD's z
  and the time embedding), zero-initialised so a conditioned model starts as the unconditioned one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------- masking


def llada_p_mask(t: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """LLaDA's masking probability p = (1 - eps) t + eps (GUIDELINES.md), so no sample is left unmasked."""
    return (1.0 - eps) * t + eps


def forward_mask(x0: torch.Tensor, p_mask: torch.Tensor, mask_id: int, generator: torch.Generator,
                 maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample x_t ~ q(x_t | x_0): each maskable token becomes MASK with probability ``p_mask`` (per row).

    Returns (x_t [B, L], masked [B, L] bool). ``maskable`` (bool [B, L] or [L]) keeps e.g. the prompt of an
    SFT pair clean (LLaDA SFT never masks the prompt).
    """
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    masked = u < p_mask.reshape(-1, *([1] * (x0.dim() - 1)))
    if maskable is not None:
        masked = masked & maskable
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def masked_nll(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Per-row sum over masked positions of -log p_theta(x0^i | x_t): [B] (the bracket of MDLM Eq. 10)."""
    nll = F.cross_entropy(logits.transpose(1, 2).float(), x0, reduction="none")
    return (nll * masked).sum(dim=1)


def llada_loss(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, p_mask: torch.Tensor,
               length: torch.Tensor | float) -> torch.Tensor:
    """LLaDA's loss: sum_masked CE / p_mask / length, averaged over rows (pre-training: length = L;
    SFT: length = the answer length of each row)."""
    return (masked_nll(logits, x0, masked) / p_mask / length).mean()


# ----------------------------------------------------------------------------------------------- RoPE


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [len(positions), E] of rotary embeddings (Su et al., RoFormer Eq. 34), half-split layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
                                / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, N, E] by the angles of its N positions (rotate-half convention of LLaMA/Qwen2)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class TransformerSpec:
    """Shape of a ``MaskedTransformer`` (also what config.json of a saved model holds)."""

    vocab_size: int
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: = n_heads (LLaDA); fewer: grouped-query attention (Dream)
    mlp_hidden: int | None = None  # None: 4 * dim * 2/3 rounded up to a multiple of 16 (SwiGLU convention)
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False  # Dream (Qwen2) has biases on q/k/v; LLaDA has none
    cond_dim: int = 0  # > 0: AdaLN conditioning of every norm (VADD)
    logit_shift: bool = False  # Dream: the logits of position i are read from position i - 1
    extra: dict = field(default_factory=dict)  # e.g. mask/eos ids of a loaded checkpoint

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 16 * math.ceil(8 * self.dim / 3 / 16)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ForwardCounter:
    """Hardware-independent cost counted inside the model: calls, query tokens and query-key pairs."""

    nfe: int = 0
    query_tokens: int = 0
    qk_pairs: int = 0

    def add(self, batch: int, queries: int, keys: int) -> None:
        self.nfe += 1
        self.query_tokens += batch * queries
        self.qk_pairs += batch * queries * keys

    def reset(self) -> None:
        self.nfe = self.query_tokens = self.qk_pairs = 0


KV = tuple[torch.Tensor, torch.Tensor]  # (keys before RoPE, values), each [B, G, N, E]


class AdaLN(nn.Module):
    """Shift/scale of a normalised activation from a condition c: h * (1 + scale(c)) + shift(c) (DiT, Eq. in
    Sec. 3.2 of Peebles & Xie); zero-initialised, so it starts as the identity."""

    def __init__(self, cond_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.proj(F.silu(cond)).chunk(2, dim=-1)
        if cond.dim() == 2:  # one condition per row ([B, C]); [B, L, C] conditions each position
            shift, scale = shift[:, None], scale[:, None]
        return h * (1 + scale) + shift


class Block(nn.Module):
    """One LLaDA llama block: h += attn(attn_norm(h)); h += ff_out(silu(ff_proj(x)) * up_proj(x)), x = ff_norm(h)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        d, e = spec.dim, spec.head_dim
        self.attn_norm = nn.RMSNorm(d, eps=spec.norm_eps)
        self.q_proj = nn.Linear(d, spec.n_heads * e, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(d, spec.kv_heads * e, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(d, spec.kv_heads * e, bias=spec.qkv_bias)
        self.attn_out = nn.Linear(spec.n_heads * e, d, bias=False)
        self.ff_norm = nn.RMSNorm(d, eps=spec.norm_eps)
        self.ff_proj = nn.Linear(d, spec.hidden, bias=False)  # the SwiGLU gate
        self.up_proj = nn.Linear(d, spec.hidden, bias=False)
        self.ff_out = nn.Linear(spec.hidden, d, bias=False)
        if spec.cond_dim:
            self.attn_ada = AdaLN(spec.cond_dim, d)
            self.ff_ada = AdaLN(spec.cond_dim, d)

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, heads, self.spec.head_dim).transpose(1, 2)

    def forward(self, h_BQD: torch.Tensor, q_start: int, past: KV | None, replace: bool,
                cond: torch.Tensor | None) -> tuple[torch.Tensor, KV]:
        spec = self.spec
        x = self.attn_norm(h_BQD)
        if cond is not None:
            x = self.attn_ada(x, cond)
        q = self._split(self.q_proj(x), spec.n_heads)
        k_new = self._split(self.k_proj(x), spec.kv_heads)
        v_new = self._split(self.v_proj(x), spec.kv_heads)
        n_q = q.shape[2]
        if past is None:
            keys, values = k_new, v_new
        elif replace:
            # Dual cache: the window's fresh K/V overwrite the cache in place; the rest stays stale.
            past[0][:, :, q_start:q_start + n_q] = k_new
            past[1][:, :, q_start:q_start + n_q] = v_new
            keys, values = past
        else:
            # Prefix cache: cached positions [0, q_start), then this call's window.
            if past[0].shape[2] != q_start:
                raise ValueError(f"prefix cache covers {past[0].shape[2]} positions but the queries start "
                                 f"at {q_start}")
            keys, values = torch.cat([past[0], k_new], dim=2), torch.cat([past[1], v_new], dim=2)
        # RoPE is applied after caching, over absolute positions (the cache stores keys before RoPE).
        cos_k, sin_k = rope_cos_sin(torch.arange(keys.shape[2], device=h_BQD.device), spec.head_dim,
                                    spec.rope_theta, q.dtype)
        q = apply_rope(q, cos_k[q_start:q_start + n_q], sin_k[q_start:q_start + n_q])
        k = apply_rope(keys, cos_k, sin_k)
        v = values
        if spec.kv_heads != spec.n_heads:
            rep = spec.n_heads // spec.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v)  # no mask: bidirectional
        h_BQD = h_BQD + self.attn_out(attn.transpose(1, 2).reshape(h_BQD.shape[0], n_q, -1))
        x = self.ff_norm(h_BQD)
        if cond is not None:
            x = self.ff_ada(x, cond)
        h_BQD = h_BQD + self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))
        return h_BQD, (k_new, v_new)


@dataclass
class MaskedLMOutput:
    logits: torch.Tensor  # [B, Q, V]
    kv: list[KV] | None  # per layer, this call's fresh (pre-RoPE) K/V, when use_cache


class MaskedTransformer(nn.Module):
    """The LLaDA-style mask predictor: token ids (MASK included) -> logits of x_0 at every position.

    ``forward(ids, q_start=s, past=cache, replace=...)`` runs only the window ``ids`` (absolute positions
    s .. s+Q) against cached keys: ``replace=False`` appends it to a prefix cache of length s; ``replace=True``
    overwrites the window inside a full-length cache (Fast-dLLM's DualCache, Sec. 3.2).
    Every call is counted in ``self.counter``.
    """

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.wte = nn.Embedding(spec.vocab_size, spec.dim)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.n_layers))
        self.ln_f = nn.RMSNorm(spec.dim, eps=spec.norm_eps)
        self.ff_out = nn.Linear(spec.dim, spec.vocab_size, bias=False)  # the LM head (LLaDA's name)
        if spec.cond_dim:
            self.final_ada = AdaLN(spec.cond_dim, spec.dim)
        self.counter = ForwardCounter()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.wte(ids)

    def forward(self, ids: torch.Tensor, *, q_start: int = 0, past: list[KV] | None = None,
                replace: bool = False, cond: torch.Tensor | None = None, use_cache: bool = False,
                inputs_embeds: torch.Tensor | None = None) -> MaskedLMOutput:
        h = self.embed(ids) if inputs_embeds is None else inputs_embeds
        b, n_q = h.shape[:2]
        if past is None:
            n_k = n_q
        else:
            n_k = past[0][0].shape[2] if replace else past[0][0].shape[2] + n_q
        self.counter.add(b, n_q, n_k)
        fresh: list[KV] = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, q_start, None if past is None else past[i], replace, cond)
            fresh.append(kv)
        h = self.ln_f(h)
        if cond is not None and self.spec.cond_dim:
            h = self.final_ada(h, cond)
        logits = self.ff_out(h)
        if self.spec.logit_shift:  # Dream: position i is predicted from hidden state i - 1
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return MaskedLMOutput(logits, fresh if use_cache else None)


def build_transformer(spec: TransformerSpec, seed: int) -> MaskedTransformer:
    """A freshly initialised model; nn.Module init draws from the global RNG, so it is pinned here."""
    torch.manual_seed(seed)
    return MaskedTransformer(spec)


def sinusoidal_time(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of a scalar time per row (t in [0, 1] is scaled by 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)
