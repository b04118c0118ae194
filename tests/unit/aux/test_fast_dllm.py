"""aux.fast_dllm: model math and the LLaDA/Dream loader against float64 references, the caches, the unmask
rules, Theorem 1, the task split and config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from workers.aux.common.masked_diffusion import (
    MaskedTransformer,
    TransformerSpec,
    build_transformer,
    forward_mask,
    llada_loss,
)
from workers.aux.fast_dllm.checkpoint import CheckpointError, load_checkpoint, save_llada_layout
from workers.aux.fast_dllm.config import FastDllmConfig
from workers.aux.fast_dllm.decoding import num_transfer_schedule, select_transfer, theorem1_sweep
from workers.aux.fast_dllm.generate import DecodeSpec, generate
from workers.aux.fast_dllm.task import AdditionTask

# ------------------------------------------------------------------------------ float64 reference model


def _ref_rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _ref_rope(x, theta):
    """RoPE by explicit complex rotation of the pairs (j, j + E/2) — a different formulation than the model's."""
    n, e = x.shape[-2], x.shape[-1]
    half = e // 2
    out = torch.empty_like(x)
    for pos in range(n):
        for j in range(half):
            ang = pos / theta ** (2 * j / e)
            c = complex(math.cos(ang), math.sin(ang))
            z = (x[..., pos, j] + 1j * x[..., pos, j + half]) * c
            out[..., pos, j], out[..., pos, j + half] = z.real, z.imag
    return out


def _ref_forward(w: dict[str, torch.Tensor], cfg: dict, ids: torch.Tensor, dream: bool) -> torch.Tensor:
    """Logits of a LLaDA (or Dream) checkpoint, straight from its named tensors, in float64."""
    w = {k: v.double() for k, v in w.items()}
    if dream:
        d, heads, kv_heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], \
            cfg["num_hidden_layers"]
        eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
        name = {"emb": "model.embed_tokens.weight", "norm": "model.norm.weight", "head": "lm_head.weight"}
        blk = lambda i, n: {"attn_norm": f"model.layers.{i}.input_layernorm", "q": f"model.layers.{i}.self_attn.q_proj",  # noqa: E731,E501
                            "k": f"model.layers.{i}.self_attn.k_proj", "v": f"model.layers.{i}.self_attn.v_proj",
                            "o": f"model.layers.{i}.self_attn.o_proj", "ff_norm": f"model.layers.{i}.post_attention_layernorm",
                            "gate": f"model.layers.{i}.mlp.gate_proj", "up": f"model.layers.{i}.mlp.up_proj",
                            "down": f"model.layers.{i}.mlp.down_proj"}[n]
    else:
        d, heads, kv_heads, layers = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["n_layers"]
        eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
        p = "model.transformer."
        name = {"emb": p + "wte.weight", "norm": p + "ln_f.weight", "head": p + "ff_out.weight"}
        blk = lambda i, n: p + f"blocks.{i}." + {"attn_norm": "attn_norm", "q": "q_proj", "k": "k_proj",  # noqa: E731
                                                  "v": "v_proj", "o": "attn_out", "ff_norm": "ff_norm",
                                                  "gate": "ff_proj", "up": "up_proj", "down": "ff_out"}[n]

    def lin(x, key):
        y = x @ w[key + ".weight"].T
        return y + w[key + ".bias"] if key + ".bias" in w else y

    e = d // heads
    h = w[name["emb"]][ids]  # [L, D]
    n = h.shape[0]
    for i in range(layers):
        x = _ref_rmsnorm(h, w[blk(i, "attn_norm") + ".weight"], eps)
        q = lin(x, blk(i, "q")).view(n, heads, e).transpose(0, 1)
        k = lin(x, blk(i, "k")).view(n, kv_heads, e).transpose(0, 1)
        v = lin(x, blk(i, "v")).view(n, kv_heads, e).transpose(0, 1)
        q, k = _ref_rope(q, theta), _ref_rope(k, theta)
        outs = []
        for hh in range(heads):
            g = hh // (heads // kv_heads)
            att = torch.softmax(q[hh] @ k[g].T / math.sqrt(e), dim=-1)  # no causal mask
            outs.append(att @ v[g])
        h = h + lin(torch.cat(outs, dim=-1), blk(i, "o"))
        x = _ref_rmsnorm(h, w[blk(i, "ff_norm") + ".weight"], eps)
        gate = lin(x, blk(i, "gate"))
        h = h + lin(gate * torch.sigmoid(gate) * lin(x, blk(i, "up")), blk(i, "down"))
    logits = _ref_rmsnorm(h, w[name["norm"]], eps) @ w[name["head"]].T
    if dream:
        logits = torch.cat([logits[:1], logits[:-1]])
    return logits


def _random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g) * (0.3 if len(s) > 1 else 0.1) + (1.0 if k.endswith("norm.weight")
                                                                              or "layernorm" in k else 0.0))
            for k, s in shapes.items()}


def _write(path: Path, cfg: dict, weights: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "model.safetensors"))
    return path


def _tiny_llada(path: Path) -> tuple[Path, dict, dict]:
    d, hid, vocab, layers = 16, 24, 11, 2
    cfg = {"model_type": "llada", "d_model": d, "n_heads": 2, "n_kv_heads": 2, "n_layers": layers,
           "mlp_hidden_size": hid, "vocab_size": vocab, "embedding_size": vocab, "rope_theta": 10000.0,
           "rms_norm_eps": 1e-5, "mask_token_id": 10, "eos_token_id": 9}
    p = "model.transformer."
    shapes = {p + "wte.weight": (vocab, d), p + "ln_f.weight": (d,), p + "ff_out.weight": (vocab, d)}
    for i in range(layers):
        b = f"{p}blocks.{i}."
        shapes.update({b + "attn_norm.weight": (d,), b + "ff_norm.weight": (d,), b + "q_proj.weight": (d, d),
                       b + "k_proj.weight": (d, d), b + "v_proj.weight": (d, d), b + "attn_out.weight": (d, d),
                       b + "ff_proj.weight": (hid, d), b + "up_proj.weight": (hid, d), b + "ff_out.weight": (d, hid)})
    weights = _random_weights(shapes, 0)
    return _write(path, cfg, weights), cfg, weights


def _tiny_dream(path: Path) -> tuple[Path, dict, dict]:
    d, hid, vocab, layers, heads, kvh = 16, 24, 13, 2, 4, 2
    e = d // heads
    cfg = {"model_type": "Dream", "hidden_size": d, "num_attention_heads": heads, "num_key_value_heads": kvh,
           "num_hidden_layers": layers, "intermediate_size": hid, "vocab_size": vocab, "rope_theta": 1e6,
           "rms_norm_eps": 1e-6, "mask_token_id": 12, "tie_word_embeddings": False}
    shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,), "lm_head.weight": (vocab, d)}
    for i in range(layers):
        b = f"model.layers.{i}."
        shapes.update({b + "input_layernorm.weight": (d,), b + "post_attention_layernorm.weight": (d,),
                       b + "self_attn.q_proj.weight": (d, d), b + "self_attn.q_proj.bias": (d,),
                       b + "self_attn.k_proj.weight": (kvh * e, d), b + "self_attn.k_proj.bias": (kvh * e,),
                       b + "self_attn.v_proj.weight": (kvh * e, d), b + "self_attn.v_proj.bias": (kvh * e,),
                       b + "self_attn.o_proj.weight": (d, d), b + "mlp.gate_proj.weight": (hid, d),
                       b + "mlp.up_proj.weight": (hid, d), b + "mlp.down_proj.weight": (d, hid)})
    weights = _random_weights(shapes, 1)
    return _write(path, cfg, weights), cfg, weights


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_loaded_checkpoint_matches_float64_reference(tmp_path: Path, family: str) -> None:
    path, cfg, weights = (_tiny_llada if family == "llada" else _tiny_dream)(tmp_path / family)
    model = load_checkpoint(path)
    ids = torch.randint(0, cfg["vocab_size"], (9,), generator=torch.Generator().manual_seed(2))
    ref = _ref_forward(weights, cfg, ids, dream=family == "dream")
    got = model(ids[None]).logits[0].double()
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)
    assert model.spec.extra["mask_token_id"] == cfg["mask_token_id"]
    assert model.spec.logit_shift == (family == "dream")


def test_own_model_round_trips_through_llada_layout(tmp_path: Path) -> None:
    model = build_transformer(TransformerSpec(vocab_size=9, dim=16, n_layers=1, n_heads=2), seed=0)
    path = save_llada_layout(model, tmp_path / "m", mask_token_id=8, eos_token_id=7, extra={"symbols": ["0"]})
    loaded = load_checkpoint(path)
    ids = torch.randint(0, 9, (2, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.spec.extra["solrl"] == {"symbols": ["0"]}


def test_loader_errors_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not a directory.*config.json \+ \*.safetensors"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=f"{tmp_path} has no config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="model_type='gpt2'"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llada"}))
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_checkpoint(tmp_path)


def test_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    path, cfg, weights = _tiny_llada(tmp_path / "m")
    weights.pop("model.transformer.blocks.1.up_proj.weight")
    _write(path, cfg, weights)
    with pytest.raises(CheckpointError, match="missing.*blocks.1.up_proj"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------ LLaDA loss and masking


def test_llada_loss_matches_float64_reference() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    x0 = torch.randint(0, 7, (3, 5), generator=g)
    masked = torch.rand(3, 5, generator=g) < 0.5
    p = torch.tensor([0.2, 0.5, 0.9])
    ref = 0.0
    for b in range(3):
        for i in range(5):
            if masked[b, i]:
                lp = logits[b, i].double() - torch.logsumexp(logits[b, i].double(), 0)
                ref += -float(lp[x0[b, i]]) / float(p[b]) / 5
    assert float(llada_loss(logits, x0, masked, p, 5.0)) == pytest.approx(ref / 3, rel=1e-5)


def test_forward_mask_keeps_the_prompt() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 5, (4, 10), generator=g)
    maskable = torch.zeros(10, dtype=torch.bool)
    maskable[6:] = True
    xt, masked = forward_mask(x0, torch.ones(4), 9, g, maskable)
    assert torch.equal(xt[:, :6], x0[:, :6]) and bool((xt[:, 6:] == 9).all()) and bool(masked[:, 6:].all())
    xt, masked = forward_mask(x0, torch.zeros(4), 9, g)
    assert torch.equal(xt, x0) and not masked.any()


# ------------------------------------------------------------------------------ unmask rules


def test_schedule_spreads_masks_like_llada() -> None:
    sched = num_transfer_schedule(torch.tensor([32, 7, 5]), 4)
    assert sched.tolist() == [[8, 8, 8, 8], [2, 2, 2, 1], [2, 1, 1, 1]]


def test_threshold_rule_takes_all_over_tau_and_always_the_top1() -> None:
    logits = torch.log(torch.tensor([[[0.95, 0.05], [0.6, 0.4], [0.99, 0.01], [0.7, 0.3]]]))
    selectable = torch.tensor([[True, True, False, True]])
    _, take = select_transfer(logits, selectable, threshold=0.9)
    assert take.tolist() == [[True, False, False, False]]  # position 2 is confident but not selectable
    _, take = select_transfer(logits, selectable, threshold=0.99)
    assert take.tolist() == [[True, False, False, False]]  # nothing over tau: still the top-1
    _, take = select_transfer(logits, selectable, threshold=0.5)
    assert take.tolist() == [[True, True, False, True]]
    _, fixed = select_transfer(logits, selectable, count_B=torch.tensor([1]))
    _, tau1 = select_transfer(logits, selectable, threshold=1.0)
    assert torch.equal(fixed, tau1)


def test_theorem1_parallel_equals_joint_greedy_under_its_premise() -> None:
    counts = theorem1_sweep(3, 3, 300, torch.Generator().manual_seed(0))
    assert counts["premise_held"] > 0 and counts["premise_held_mismatch"] == 0
    assert counts["premise_failed_mismatch"] > 0  # without the premise the product of marginals can fail


# ------------------------------------------------------------------------------ caches and generation


@pytest.fixture(scope="module")
def model() -> MaskedTransformer:
    return build_transformer(TransformerSpec(vocab_size=12, dim=32, n_layers=2, n_heads=4), seed=3).eval()


def _prompt(n: int = 1) -> torch.Tensor:
    return torch.randint(0, 10, (n, 8), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
@pytest.mark.parametrize("shift", [False, True])
def test_caches_are_exact_when_nothing_changed(shift: bool) -> None:
    m = build_transformer(TransformerSpec(vocab_size=12, dim=32, n_layers=2, n_heads=4, logit_shift=shift), 0)
    x = torch.randint(0, 12, (2, 24), generator=torch.Generator().manual_seed(0))
    full = m(x, use_cache=True)
    s, e = 12, 16
    ws = s - int(shift)
    prefix = [(k[:, :, :ws].clone(), v[:, :, :ws].clone()) for k, v in full.kv]
    got = m(x[:, ws:], q_start=ws, past=prefix).logits[:, int(shift):int(shift) + e - s]
    torch.testing.assert_close(got, full.logits[:, s:e], atol=1e-5, rtol=1e-5)
    dual = [(k.clone(), v.clone()) for k, v in full.kv]
    got = m(x[:, ws:e], q_start=ws, past=dual, replace=True).logits[:, int(shift):]
    torch.testing.assert_close(got, full.logits[:, s:e], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_dual_cache_writes_block_kv_in_place_and_queries_only_the_block(model: MaskedTransformer) -> None:
    x = torch.randint(0, 12, (1, 24), generator=torch.Generator().manual_seed(0))
    full = model(x, use_cache=True)
    cache = [(k.clone(), v.clone()) for k, v in full.kv]
    x2 = x.clone()
    x2[:, 12:16] = 11  # the block changed since the cache was filled
    before = model.counter.query_tokens
    out = model(x2[:, 12:16], q_start=12, past=cache, replace=True, use_cache=True)
    assert model.counter.query_tokens - before == 4  # queries cover the block only
    for (ck, cv), (fk, fv), (nk, nv) in zip(cache, full.kv, out.kv, strict=True):
        assert torch.equal(ck[:, :, 12:16], nk) and torch.equal(cv[:, :, 12:16], nv)  # written in place
        assert torch.equal(ck[:, :, :12], fk[:, :, :12]) and torch.equal(ck[:, :, 16:], fk[:, :, 16:])  # stale
        assert torch.equal(cv[:, :, :12], fv[:, :, :12]) and torch.equal(cv[:, :, 16:], fv[:, :, 16:])
    exact = model(x2).logits[:, 12:16]
    assert not torch.allclose(out.logits, exact)  # an approximation: stale prefix/suffix K/V of layer 2


@torch.no_grad()
def test_tau_one_reproduces_the_baseline_bit_for_bit(model: MaskedTransformer) -> None:
    prompt = _prompt(2)
    base = generate(model, prompt, DecodeSpec(gen_length=16, block_length=8), 11)
    tau1 = generate(model, prompt, DecodeSpec(gen_length=16, block_length=8, threshold=1.0), 11)
    assert torch.equal(base.sequences, tau1.sequences) and base.nfe == tau1.nfe == 16
    fast = generate(model, prompt, DecodeSpec(gen_length=16, block_length=8, threshold=0.05), 11)
    assert fast.nfe < base.nfe  # a low tau unmasks several tokens per step


@torch.no_grad()
def test_cache_modes_cut_query_work_and_fill_every_position(model: MaskedTransformer) -> None:
    prompt = _prompt()
    costs = {}
    for cache in ("none", "prefix", "dual"):
        gen = generate(model, prompt, DecodeSpec(gen_length=16, block_length=8, cache=cache), 11)
        assert not (gen.sequences == 11).any() and gen.nfe == 16
        assert torch.equal(gen.sequences[:, :8], prompt)
        costs[cache] = gen.qk_pairs
    assert costs["dual"] < costs["prefix"] < costs["none"]
    # none: 16 calls x 24 queries x 24 keys
    assert costs["none"] == 16 * 24 * 24


def test_decode_spec_errors() -> None:
    with pytest.raises(ValueError, match="multiple of block_length"):
        DecodeSpec(gen_length=20, block_length=8)
    with pytest.raises(ValueError, match="cache must be"):
        DecodeSpec(cache="full")


# ------------------------------------------------------------------------------ task and config


def test_reverse_task() -> None:
    task = AdditionTask(digits=4, shots=1, prompt_len=24, gen_len=8, kind="reverse")
    prompts, resp, answers = task.sample(3, torch.Generator().manual_seed(0), split="test")
    for row, ans in zip(prompts, answers, strict=True):
        query = task.tokenizer.decode(row).split(";")[-1].rstrip("=")
        assert ans == query[::-1] and task.is_test_pair(int(query), 0)


def test_eval_queries_are_held_out_and_training_never_sees_them() -> None:
    task = AdditionTask(digits=2, shots=2, prompt_len=32, gen_len=16)
    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        prompts, resp, answers = task.sample(50, g, split=split)
        for row in prompts:
            text = task.tokenizer.decode(row)
            a, b = (int(v) for v in text.split(";")[-1].rstrip("=").split("+"))
            assert task.is_test_pair(a, b) == (split == "test")
            if split == "train":
                for line in text.split(";")[:-1]:
                    x, y = (int(v) for v in line.split("=")[0].split("+"))
                    assert not task.is_test_pair(x, y)
        assert resp.shape == (50, 16) and all(len(a) == 3 for a in answers)
    assert task.exact_match(resp[:2], answers[:2]) == [True, True]


def test_config_presets_and_errors() -> None:
    quick = FastDllmConfig()
    assert quick == FastDllmConfig(preset="quick")
    assert FastDllmConfig(preset="full").eval.gen_length >= 256
    with pytest.raises(ValidationError, match="eval.gen_length=100 must be a multiple"):
        FastDllmConfig(eval={"gen_length": 100})
    with pytest.raises(ValidationError, match="model.n_heads=3 must divide"):
        FastDllmConfig(model={"n_heads": 3})
    with pytest.raises(ValidationError, match="eval.fixed_k"):
        FastDllmConfig(eval={"fixed_k": [3]})
    with pytest.raises(ValidationError, match="task.prompt_len=16 is too short"):
        FastDllmConfig(task={"prompt_len": 16, "kind": "addition", "digits": 2})
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        FastDllmConfig(eval={"threshold": 1.5})
    with pytest.raises(ValidationError, match="Extra inputs"):
        FastDllmConfig(eval={"tau": 0.9})
    with pytest.raises(ValidationError, match="'addition' or 'reverse'"):
        FastDllmConfig(task={"kind": "sort"})
