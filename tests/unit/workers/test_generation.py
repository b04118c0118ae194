"""Regenerability: a candidate is a pure function of (policy version, prompt, seed, settings)."""

from __future__ import annotations

import pytest
import torch

from workers.generation import PolicyCopy, PolicyWeights, SamplingSettings, StalePolicyError
from workers.models.loading import load_model
from workers.models.lora import OLD_ADAPTER, adapter_parameters, add_policy_lora, lora_layer_deltas
from workers.sampling import candidate_seed

SETTINGS = SamplingSettings(num_steps=6, solver="dpm2")


@pytest.fixture(scope="module")
def adapter(tiny_paths):
    return load_model(tiny_paths["sd3"], height=32, width=32, max_sequence_length=8, dtype=torch.bfloat16)


def _candidates(adapter, n_per_prompt=4):
    cond = adapter.encode_prompts(["a red cube", "two blue balls"])
    cond = cond.index(torch.arange(2).repeat_interleave(n_per_prompt))
    seeds = [candidate_seed(7, 3, p, k) for p in range(2) for k in range(n_per_prompt)]
    return cond, seeds


def _psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    return float(10 * torch.log10(peak**2 / ((a.float() - b.float()) ** 2).mean()))


def test_bf16_regeneration_is_bit_exact(adapter):
    cond, seeds = _candidates(adapter)
    rollout = PolicyCopy(adapter, "bf16", batch_size=8)
    pool = rollout.generate(cond, seeds, SETTINGS, version=0)
    selected = [6, 1, 4]  # another order, another batch composition
    regen = PolicyCopy(adapter, "bf16", batch_size=8)
    again = regen.generate(cond.index(selected), [seeds[i] for i in selected], SETTINGS, version=0)
    assert torch.equal(pool.latents_BCHW[selected], again.latents_BCHW)
    assert torch.equal(pool.images_B3HW[selected], again.images_B3HW)
    # Seeds really matter: different candidates differ.
    assert not torch.equal(pool.latents_BCHW[0], pool.latents_BCHW[1])


@pytest.mark.parametrize("precision", ["nvfp4", "fp8"])
def test_low_precision_candidate_differs_but_stays_close(adapter, precision):
    cond, seeds = _candidates(adapter)
    bf16 = PolicyCopy(adapter, "bf16", batch_size=8).generate(cond, seeds, SETTINGS, version=0)
    lowp_copy = PolicyCopy(adapter, precision, batch_size=8, min_dim=0)
    assert lowp_copy.report.swapped, "the tiny model must have quantized layers"
    lowp = lowp_copy.generate(cond, seeds, SETTINGS, version=0)
    assert not torch.equal(bf16.latents_BCHW, lowp.latents_BCHW)
    latent_psnr = _psnr(lowp.latents_BCHW, bf16.latents_BCHW, float(bf16.latents_BCHW.abs().max()))
    image_psnr = _psnr(lowp.images_B3HW, bf16.images_B3HW, 1.0)
    print(f"{precision} vs bf16, same seeds: latent PSNR {latent_psnr:.1f} dB, image PSNR {image_psnr:.1f} dB")
    assert latent_psnr > 20 and image_psnr > 25


def test_stale_version_is_refused_and_sync_changes_policy(adapter):
    cond, seeds = _candidates(adapter, 2)
    copy_ = PolicyCopy(adapter, "nvfp4", batch_size=4, min_dim=0)
    before = copy_.generate(cond, seeds, SETTINGS, version=0)
    with pytest.raises(StalePolicyError, match="version 0"):
        copy_.generate(cond, seeds, SETTINGS, version=1)
    import copy as copy_module

    policy = copy_module.deepcopy(adapter.transformer)
    add_policy_lora(policy, adapter.lora_target_modules, rank=4, alpha=8)
    with torch.no_grad():
        for p in adapter_parameters(policy, OLD_ADAPTER).values():
            p.add_(0.2 * torch.randn_like(p))
    seconds = copy_.set_policy(PolicyWeights(1, lora=lora_layer_deltas(policy, OLD_ADAPTER)))
    assert seconds >= 0 and copy_.version == 1
    after = copy_.generate(cond, seeds, SETTINGS, version=1)
    assert not torch.equal(before.latents_BCHW, after.latents_BCHW)


def test_copies_share_the_adapters_own_base_weights_which_training_leaves_alone(adapter):
    from workers.learner import Learner, LearnerSettings, TrainBatch

    a = PolicyCopy(adapter, "bf16", batch_size=4)
    b = PolicyCopy(adapter, "fp8", batch_size=4, min_dim=0)
    modules = dict(adapter.transformer.named_modules())
    assert a._base_weights.keys() == b._base_weights.keys() and a._base_weights
    for name, weight in a._base_weights.items():  # no copy: both merge into the adapter's own storage
        assert weight.data_ptr() == b._base_weights[name].data_ptr() == modules[name].weight.data_ptr()
    before = {k: v.clone() for k, v in adapter.transformer.state_dict().items()}
    learner = Learner(adapter, LearnerSettings(lora_rank=4, lora_alpha=8.0, lr=1e-2), seed=0)
    cond, seeds = _candidates(adapter, 2)
    gen = a.generate(cond, seeds, SETTINGS, version=0, decode=False)
    learner.train_step(TrainBatch(cond, gen.latents_BCHW, torch.linspace(-1, 1, len(seeds)), gen.sigmas), 0)
    weights = learner.policy_weights()
    a.set_policy(weights)
    b.set_policy(weights)
    target = next(iter(weights.lora))
    assert not torch.equal(a.transformer.state_dict()[f"{target}.weight"], before[f"{target}.weight"])  # trained
    for key, value in adapter.transformer.state_dict().items():
        assert torch.equal(value, before[key]), key  # the base is untouched


def test_batch_size_override_matches_a_copy_of_that_batch_size(adapter):
    cond, seeds = _candidates(adapter)
    wide = PolicyCopy(adapter, "bf16", batch_size=8)
    narrow = PolicyCopy(adapter, "bf16", batch_size=3)
    via_override = wide.generate(cond, seeds, SETTINGS, version=0, batch_size=3)
    assert torch.equal(via_override.latents_BCHW, narrow.generate(cond, seeds, SETTINGS, version=0).latents_BCHW)
    assert wide.batch_size == 8
