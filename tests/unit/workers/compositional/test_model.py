"""The base model's pieces: the identity VAE, the training conditioning, the loss, EMA, schedule, sampling."""

from __future__ import annotations

import pytest
import torch

from workers.compositional.model import (
    ModelSpec,
    ParameterEma,
    build_identity_vae,
    build_pipeline,
    build_tokenizer,
    encode_images,
    encode_prompts_for_training,
    flow_matching_loss,
    generate_images,
    longest_caption_tokens,
    lr_multiplier,
    set_latent_scaling,
    world_captions,
)
from workers.compositional.scenes import render_scenes, scenes_for
from workers.compositional.validation import balanced_captions
from workers.models.sd3 import SD3Adapter

TINY = ModelSpec(image_size=16, patch_size=4, num_layers=1, num_heads=2, head_dim=8, text_hidden=16, text_layers=1,
                 text_hidden_2=16, text_layers_2=1)


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(TINY, seed=0)


def test_identity_vae_round_trips_and_survives_save_load(tmp_path):
    from diffusers import AutoencoderKL

    vae = build_identity_vae(32)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        torch.testing.assert_close(posterior.mode(), x, atol=1e-5, rtol=0)
        assert float(posterior.std.max()) < 1e-6
        torch.testing.assert_close(vae.decode(posterior.mode()).sample, x, atol=1e-5, rtol=0)
    vae.save_pretrained(tmp_path)
    loaded = AutoencoderKL.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x).latent_dist.mode()).sample, x, atol=1e-5, rtol=0)
        bf16 = AutoencoderKL.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
        out = bf16.decode(bf16.encode(x.bfloat16()).latent_dist.mode()).sample.float()
        assert float((out - x).abs().max()) < 0.02  # bf16 rounding only


def test_latent_scaling_and_decode_invert_encode(pipeline):
    images = render_scenes(scenes_for(balanced_captions(12, 0), 0), 16)
    set_latent_scaling(pipeline.vae, images)
    latents = encode_images(pipeline.vae, images)
    assert float(latents.mean()) == pytest.approx(0.0, abs=1e-4) and float(latents.std()) == pytest.approx(1.0, abs=1e-3)
    adapter = SD3Adapter(pipeline, height=16, width=16, max_sequence_length=4)
    torch.testing.assert_close(adapter.decode(latents), images, atol=1e-5, rtol=0)


def test_training_conditioning_matches_the_adapter(pipeline):
    adapter = SD3Adapter(pipeline, height=16, width=16, max_sequence_length=4)
    prompts = ["a red circle", "three crosses"]
    train_cond = encode_prompts_for_training(pipeline, prompts, 4)
    assert train_cond.tensors["prompt_embeds"].requires_grad
    eval_cond = adapter.encode_prompts(prompts)
    for key, value in eval_cond.tensors.items():
        torch.testing.assert_close(train_cond.tensors[key].detach(), value)


def test_flow_matching_loss_trains_the_transformer(pipeline):
    adapter = SD3Adapter(pipeline, height=16, width=16, max_sequence_length=4)
    latents = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = encode_prompts_for_training(pipeline, ["a circle", "a square"], 4)
    pipeline.transformer.requires_grad_(True)
    loss = flow_matching_loss(adapter, latents, cond, torch.tensor([0.3, 0.8]), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and pipeline.transformer.proj_out.weight.grad is not None
    pipeline.transformer.zero_grad(set_to_none=True)
    pipeline.transformer.requires_grad_(False)


def test_ema_follows_with_warmup(pipeline):
    ema = ParameterEma(pipeline, decay=0.99)
    param = pipeline.transformer.proj_out.bias
    shadow = ema.pipeline.transformer.proj_out.bias
    with torch.no_grad():
        start = shadow.clone()
        param.add_(1.0)
        ema.update()  # first decay is min(0.99, 1 / 10): the average moves 90% of the way
        torch.testing.assert_close(shadow, start + 0.9)
        param.sub_(1.0)
    assert not shadow.requires_grad


def test_lr_schedule():
    assert lr_multiplier(0, 0.0, warmup=10) == pytest.approx(0.1)
    assert lr_multiplier(10, 0.0, warmup=10) == pytest.approx(1.0)
    assert lr_multiplier(50, 0.5, warmup=10) == pytest.approx(0.55)
    assert lr_multiplier(99, 1.0, warmup=10) == pytest.approx(0.1)
    assert lr_multiplier(99, 2.0, warmup=10) == pytest.approx(0.1)


def test_generate_images_is_seeded(pipeline):
    adapter = SD3Adapter(pipeline, height=16, width=16, max_sequence_length=4)
    a = generate_images(adapter, ["a circle", "a square"], [1, 2], num_steps=2, batch_size=1)
    b = generate_images(adapter, ["a circle", "a square"], [1, 2], num_steps=2, batch_size=2)
    assert a.shape == (2, 3, 16, 16) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_tokenizer_fits_every_caption():
    assert longest_caption_tokens() <= ModelSpec().tokenizer_length
    assert longest_caption_tokens("char") > longest_caption_tokens("word")
    with pytest.raises(ValueError, match="tokenizer_length"):
        build_pipeline(ModelSpec(image_size=16, tokenizer_length=8, tokenizer="char"), seed=0)
    with pytest.raises(ValueError, match="valid: word, char"):
        build_tokenizer("bpe", 16)


def test_word_tokenizer_gives_each_word_of_the_world_one_token():
    words = sorted({w for text in world_captions() for w in text.split()})
    tokenizer = build_tokenizer("word", 16)
    ids = [tokenizer(w).input_ids for w in words]
    assert all(len(i) == 3 for i in ids)  # BOS, the word, EOS
    assert len({i[1] for i in ids}) == len(words) and tokenizer.unk_token_id not in {i[1] for i in ids}
    assert tokenizer("a Red  circle").input_ids == tokenizer("a red circle").input_ids
    assert tokenizer.unk_token_id in tokenizer("a magenta circle").input_ids


def test_word_tokenizer_survives_save_load(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = build_tokenizer("word", 16)
    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "two red circles left of a blue square"
    assert loaded(text, padding="max_length", max_length=16).input_ids == tokenizer(
        text, padding="max_length", max_length=16).input_ids
