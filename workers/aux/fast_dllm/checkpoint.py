"""Load published LLaDA / Dream checkpoints (and this project's own models) from a local directory.

Both families ship in transformers layout: ``config.json`` plus ``*.safetensors`` (possibly sharded), with
custom modeling code (``trust_remote_code``), so they load here into ``MaskedTransformer`` by renaming
tensors, which gives them the cache API Fast-dLLM needs. Nothing is downloaded.

- LLaDA (``model_type: llada``, GSAI-ML/LLaDA-8B-*): OLMo-style names under ``model.transformer.``:
  ``wte``, ``blocks.N.{attn_norm,q_proj,k_proj,v_proj,attn_out,ff_norm,ff_proj,up_proj,ff_out}``, ``ln_f``,
  ``ff_out`` (the LM head; absent with weight tying). Our module uses the same names without the prefix.
- Dream (``model_type: Dream``, Dream-org/Dream-v0-*-7B): Qwen2 names (``model.layers.N.self_attn.q_proj``
  with q/k/v bias, grouped-query attention, ``mlp.gate_proj``...), and the logit shift (position i is read
  from hidden state i - 1), which ``TransformerSpec.logit_shift`` applies.
This project's trained models are saved in the LLaDA layout (``save_llada_layout``), with the tokenizer's
alphabet under the ``solrl`` key of config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from workers.aux.common.masked_diffusion import MaskedTransformer, TransformerSpec

LLADA_PREFIX = "model.transformer."
_LLADA_BLOCK = ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out")
_DREAM_BLOCK = {  # Qwen2 name -> ours
    "input_layernorm": "attn_norm", "self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj",
    "self_attn.v_proj": "v_proj", "self_attn.o_proj": "attn_out", "post_attention_layernorm": "ff_norm",
    "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out",
}
_FIX = ("expected a LLaDA or Dream checkpoint directory in transformers layout (config.json + *.safetensors), "
        "e.g. `huggingface-cli download GSAI-ML/LLaDA-8B-Instruct --local-dir DIR` on a machine with internet, "
        "or a directory written by workers.aux.fast_dllm.checkpoint.save_llada_layout")


class CheckpointError(ValueError):
    """A directory that is not a loadable LLaDA/Dream checkpoint; the message names the path and the fix."""


def _llada_spec(cfg: dict[str, Any]) -> TransformerSpec:
    return TransformerSpec(
        vocab_size=int(cfg.get("embedding_size") or cfg["vocab_size"]), dim=int(cfg["d_model"]),
        n_layers=int(cfg["n_layers"]), n_heads=int(cfg["n_heads"]), n_kv_heads=cfg.get("n_kv_heads"),
        mlp_hidden=int(cfg["mlp_hidden_size"]), rope_theta=float(cfg.get("rope_theta", 10_000.0)),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)), qkv_bias=bool(cfg.get("include_bias", False)),
        extra={"mask_token_id": cfg.get("mask_token_id", 126336), "eos_token_id": cfg.get("eos_token_id", 126081),
               "solrl": cfg.get("solrl", {})})


def _dream_spec(cfg: dict[str, Any]) -> TransformerSpec:
    return TransformerSpec(
        vocab_size=int(cfg["vocab_size"]), dim=int(cfg["hidden_size"]), n_layers=int(cfg["num_hidden_layers"]),
        n_heads=int(cfg["num_attention_heads"]), n_kv_heads=int(cfg.get("num_key_value_heads")
                                                                 or cfg["num_attention_heads"]),
        mlp_hidden=int(cfg["intermediate_size"]), rope_theta=float(cfg.get("rope_theta", 10_000.0)),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), qkv_bias=True, logit_shift=True,
        extra={"mask_token_id": cfg.get("mask_token_id", 151666), "eos_token_id": cfg.get("eos_token_id", 151643)})


def _rename_llada(state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        if not name.startswith(LLADA_PREFIX):
            raise CheckpointError(f"unexpected tensor {name!r}: LLaDA tensors start with {LLADA_PREFIX!r}")
        out[name.removeprefix(LLADA_PREFIX)] = tensor
    if tied and "ff_out.weight" not in out:
        out["ff_out.weight"] = out["wte.weight"]
    return out


def _rename_dream(state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        if name == "model.embed_tokens.weight":
            out["wte.weight"] = tensor
        elif name == "model.norm.weight":
            out["ln_f.weight"] = tensor
        elif name == "lm_head.weight":
            out["ff_out.weight"] = tensor
        elif name.startswith("model.layers."):
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            module, kind = rest.rsplit(".", 1)
            if module not in _DREAM_BLOCK:
                raise CheckpointError(f"unexpected Dream tensor {name!r}")
            out[f"blocks.{layer}.{_DREAM_BLOCK[module]}.{kind}"] = tensor
        elif not name.endswith("rotary_emb.inv_freq"):
            raise CheckpointError(f"unexpected Dream tensor {name!r}")
    if tied and "ff_out.weight" not in out:
        out["ff_out.weight"] = out["wte.weight"]
    return out


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32) -> MaskedTransformer:
    """A LLaDA or Dream checkpoint directory as a ``MaskedTransformer`` (eval mode) with Fast-dLLM caches.

    ``model.spec.extra`` holds ``mask_token_id`` and ``eos_token_id`` from config.json.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; {_FIX}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json; {_FIX}")
    cfg = json.loads(config_file.read_text())
    kind = str(cfg.get("model_type", "")).lower()
    if kind not in ("llada", "dream"):
        raise CheckpointError(f"{config_file} has model_type={cfg.get('model_type')!r}, not 'llada' or 'Dream'; "
                              f"{_FIX}")
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{path} has config.json but no *.safetensors weights; {_FIX}")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    if kind == "llada":
        spec, state = _llada_spec(cfg), _rename_llada(state, bool(cfg.get("weight_tying", False)))
    else:
        spec, state = _dream_spec(cfg), _rename_dream(state, bool(cfg.get("tie_word_embeddings", False)))
    with torch.device("meta"):
        model = MaskedTransformer(spec)
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match config.json (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}); is the directory complete?")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    return model.eval()


def save_llada_layout(model: MaskedTransformer, path: str | Path, *, mask_token_id: int, eos_token_id: int,
                      extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a LLaDA-layout directory (config.json + model.safetensors) ``load_checkpoint`` reads."""
    from safetensors.torch import save_file

    spec = model.spec
    if spec.cond_dim or spec.logit_shift:
        raise ValueError("only unconditioned models without logit shift have a LLaDA layout")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": spec.dim,
           "n_heads": spec.n_heads, "n_kv_heads": spec.kv_heads, "n_layers": spec.n_layers,
           "mlp_hidden_size": spec.hidden, "vocab_size": spec.vocab_size, "embedding_size": spec.vocab_size,
           "rope_theta": spec.rope_theta, "rms_norm_eps": spec.norm_eps, "include_bias": spec.qkv_bias,
           "weight_tying": False, "block_type": "llama", "mask_token_id": mask_token_id,
           "eos_token_id": eos_token_id, "solrl": extra or {}}
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    state = {LLADA_PREFIX + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    return path
