"""Aesthetic predictor: the MLP head against float64 arithmetic, the full reward, and the .pth converter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.unit.workers.rewards.conftest import PROMPTS
from workers.rewards import RewardOptions, get_reward
from workers.rewards.aesthetic import AESTHETIC_HEAD_FILE, convert_aesthetic_checkpoint
from workers.rewards.heads import LinearMLPHead

LINEAR_INDICES = (0, 2, 4, 6, 7)  # the published nn.Sequential layout


def _float64_head(state: dict[str, torch.Tensor], features: np.ndarray) -> np.ndarray:
    """The published head by hand in float64: five affine maps, no activations, dropout off."""
    x = features.astype(np.float64)
    for i in LINEAR_INDICES:
        x = x @ state[f"layers.{i}.weight"].double().numpy().T + state[f"layers.{i}.bias"].double().numpy()
    return x[:, 0]


def test_head_structure_is_the_published_one() -> None:
    head = LinearMLPHead(768)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "layers.0.weight": (1024, 768), "layers.2.weight": (128, 1024), "layers.4.weight": (64, 128),
        "layers.6.weight": (16, 64), "layers.7.weight": (1, 16),
    }
    assert [type(m).__name__ for m in head.layers] == [
        "Linear", "Dropout", "Linear", "Dropout", "Linear", "Dropout", "Linear", "Linear"
    ]
    assert [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2, 0.1]


def test_head_forward_equals_float64_reference() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = LinearMLPHead(768).eval()
    features = F.normalize(torch.randn(5, 768, generator=torch.Generator().manual_seed(1)), dim=-1)
    expected = _float64_head(head.state_dict(), features.numpy())
    with torch.no_grad():
        got = head(features).squeeze(-1)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_reward_is_head_of_normalised_clip_embedding(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    path = tiny_reward_dirs["aesthetic"]
    reward = get_reward("aesthetic", RewardOptions(path=str(path)))
    got = reward(images, PROMPTS)
    # Embeddings from the reward's own CLIP tower, the head in float64 from the file on disk.
    embeddings = reward.encoder.embed_images(images)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(4))
    expected = _float64_head(load_file(str(path / AESTHETIC_HEAD_FILE)), embeddings.numpy())
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_contract(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    path = str(tiny_reward_dirs["aesthetic"])
    reward = get_reward("aesthetic", RewardOptions(path=path, batch_size=3))
    scores = reward(images, PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    torch.testing.assert_close(reward(images, PROMPTS), scores, rtol=0, atol=0)
    torch.testing.assert_close(reward(images, ["other"] * 4), scores)  # prompt-independent by design
    singles = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(singles, scores, atol=1e-6, rtol=1e-5)
    assert scores.max() - scores.min() > 1e-6  # depends on the image


def test_converter_round_trip_and_rejects_wrong_files(tmp_path: Path) -> None:
    head = LinearMLPHead(12)
    torch.save(head.state_dict(), str(tmp_path / "head.pth"))
    out = convert_aesthetic_checkpoint(tmp_path / "head.pth", tmp_path / "dir")
    assert out == tmp_path / "dir" / AESTHETIC_HEAD_FILE
    for key, value in head.state_dict().items():
        torch.testing.assert_close(load_file(str(out))[key], value)
    torch.save({"weight": torch.zeros(3)}, str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="not an aesthetic MLP state dict"):
        convert_aesthetic_checkpoint(tmp_path / "bad.pth", tmp_path / "dir2")
    truncated = {k: v for k, v in head.state_dict().items() if not k.startswith("layers.7")}
    torch.save(truncated, str(tmp_path / "short.pth"))
    with pytest.raises(RuntimeError, match="layers.7"):
        convert_aesthetic_checkpoint(tmp_path / "short.pth", tmp_path / "dir3")
