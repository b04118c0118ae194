"""The adapters over the real diffusers classes, on the tiny family."""

from __future__ import annotations

import json

import pytest
import torch

from workers.models.loading import ModelLoadError, load_model
from workers.models.lora import (
    OLD_ADAPTER,
    TRAIN_ADAPTER,
    active_adapter,
    adapter_parameters,
    add_policy_lora,
    lora_layer_deltas,
    merged_weights,
)

FAMILIES = ("sd3", "flux", "sana")


def _load(path, dtype=torch.float32):
    return load_model(path, height=32, width=32, max_sequence_length=8, dtype=dtype)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_encode_velocity_decode(tiny_paths, family):
    adapter = _load(tiny_paths[family])
    assert adapter.family == family
    cond = adapter.encode_prompts(["a red cube", "two blue balls", "a star"])
    assert len(cond) == 3
    c, h, w = adapter.latent_shape()
    assert (h, w) == (8, 8)
    x = torch.randn(3, c, h, w)
    v = adapter.velocity(x, torch.tensor([0.9, 0.5, 0.1]), cond)
    assert v.shape == x.shape and torch.isfinite(v).all()
    # Different prompts condition the velocity differently.
    v_same_x = adapter.velocity(x[:1].expand(3, -1, -1, -1), torch.full((3,), 0.5), cond)
    assert not torch.allclose(v_same_x[0], v_same_x[1])
    images = adapter.decode(x)
    assert images.shape == (3, 3, 32, 32) and images.min() >= 0 and images.max() <= 1


def test_tiny_pipeline_is_real_diffusers_layout(tiny_paths):
    index = json.loads((tiny_paths["sd3"] / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]
    sizes = sum(f.stat().st_size for p in tiny_paths.values() for f in p.rglob("*") if f.is_file())
    assert sizes < 10 * 2**20  # "a few MB"


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        _load(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        _load(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelLoadError, match="supported"):
        _load(tmp_path)


def test_bad_resolution_names_field_and_fix(tiny_paths):
    with pytest.raises(ValueError, match=r"model.height = 30 .* use 32"):
        load_model(tiny_paths["sd3"], height=30, width=32, max_sequence_length=8)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_exist_and_merge_matches_peft(tiny_paths, family):
    import copy

    adapter = _load(tiny_paths[family])
    plain = copy.deepcopy(adapter.transformer)
    model = adapter.transformer
    add_policy_lora(model, adapter.lora_target_modules, rank=4, alpha=8)
    assert adapter_parameters(model, TRAIN_ADAPTER) and adapter_parameters(model, OLD_ADAPTER)
    assert all(p.requires_grad for p in adapter_parameters(model, TRAIN_ADAPTER).values())
    assert not any(p.requires_grad for p in adapter_parameters(model, OLD_ADAPTER).values())
    # Perturb the old adapter so the delta is non-zero, then check merged plain weights == peft forward.
    with torch.no_grad():
        for p in adapter_parameters(model, OLD_ADAPTER).values():
            p.add_(0.05 * torch.randn_like(p))
    deltas = lora_layer_deltas(model, OLD_ADAPTER)
    base = {n: m.weight for n, m in plain.named_modules() if isinstance(m, torch.nn.Linear)}
    merged = merged_weights(base, deltas)
    state = plain.state_dict()
    state.update({f"{n}.weight": w for n, w in merged.items()})
    plain.load_state_dict(state)
    cond = adapter.encode_prompts(["a red cube", "two blue balls"])
    x = torch.randn(2, *adapter.latent_shape())
    t = torch.tensor([0.7, 0.3])
    with active_adapter(model, OLD_ADAPTER):
        v_peft = adapter.velocity(x, t, cond, transformer=model)
    v_plain = adapter.velocity(x, t, cond, transformer=plain)
    torch.testing.assert_close(v_plain, v_peft, rtol=1e-4, atol=1e-5)
    # Disabled adapters give the base model (B = 0 initially for default, but old was perturbed).
    with active_adapter(model, None):
        v_base = adapter.velocity(x, t, cond, transformer=model)
    assert not torch.allclose(v_base, v_peft)
    # After the context the train adapter is active and trainable again.
    assert all(p.requires_grad for p in adapter_parameters(model, TRAIN_ADAPTER).values())
