"""ImageReward on a tiny BLIP: the reward against transformers' own retrieval forward, and the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from tests.unit.workers.rewards.conftest import PROMPTS
from workers.rewards import RewardOptions, get_reward
from workers.rewards.hpsv2 import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from workers.rewards.imagereward import IMAGEREWARD_HEAD_FILE, IMAGEREWARD_MEAN, IMAGEREWARD_STD


def test_matches_blip_retrieval_forward(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    """Reference: BlipForImageTextRetrieval.forward(use_itm_head=True) computes the same image-grounded [CLS]
    state ImageReward feeds its MLP; the head and normalisation are then applied in float64."""
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    path = tiny_reward_dirs["imagereward"]
    got = get_reward("imagereward", RewardOptions(path=str(path)))(images, PROMPTS)

    model = BlipForImageTextRetrieval.from_pretrained(str(path), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=35, truncation=True, return_tensors="pt")
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
            pixel_values=(images - mean) / std, use_itm_head=True,
        )
    x = out.question_embeds[:, 0].double().numpy()
    head = load_file(str(path / IMAGEREWARD_HEAD_FILE))
    for i in (0, 2, 4, 6, 7):
        x = x @ head[f"layers.{i}.weight"].double().numpy().T + head[f"layers.{i}.bias"].double().numpy()
    expected = (x[:, 0] - IMAGEREWARD_MEAN) / IMAGEREWARD_STD
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_contract(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    path = str(tiny_reward_dirs["imagereward"])
    reward = get_reward("imagereward", RewardOptions(path=path, batch_size=3))
    scores = reward(images, PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    torch.testing.assert_close(reward(images, PROMPTS), scores, rtol=0, atol=0)
    singles = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(singles, scores, atol=1e-5, rtol=1e-5)


def test_responds_to_prompt_and_image(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    reward = get_reward("imagereward", RewardOptions(path=str(tiny_reward_dirs["imagereward"])))
    by_prompt = reward(images[:1].expand(4, -1, -1, -1), PROMPTS)
    # Random tiny weights give small spreads, still far above float32 noise (~1e-7).
    assert by_prompt.max() - by_prompt.min() > 1e-5, by_prompt
    by_image = reward(images, [PROMPTS[0]] * 4)
    assert by_image.max() - by_image.min() > 1e-5, by_image
