"""The learner's attention-kernel choice (``train.attention_backend``): which SDPA kernels each name leaves on."""

from __future__ import annotations

import pytest
import torch

from orchestration.config import ConfigError, parse_config
from orchestration.roles import learner_settings
from workers.learner import Learner, LearnerSettings, attention_backend
from workers.models.loading import load_model
from workers.models.tiny import ensure_tiny_model


def _enabled() -> dict[str, bool]:
    b = torch.backends.cuda
    return {"flash": b.flash_sdp_enabled(), "efficient": b.mem_efficient_sdp_enabled(),
            "cudnn": b.cudnn_sdp_enabled(), "math": b.math_sdp_enabled()}


def test_auto_leaves_every_kernel_but_cudnn():
    before = _enabled()
    with attention_backend("auto"):
        assert _enabled() == {"flash": True, "efficient": True, "cudnn": False, "math": True}
    assert _enabled() == before  # restored on exit


@pytest.mark.parametrize("name", ["flash", "efficient", "cudnn", "math"])
def test_a_named_kernel_is_the_only_one_on(name):
    with attention_backend(name):
        assert [k for k, on in _enabled().items() if on] == [name]


def test_attention_under_auto_matches_plain_attention():
    q, k, v = (torch.randn(1, 2, 16, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with attention_backend("auto"):
        restricted = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(restricted, plain)


def test_unknown_kernel_names_the_field():
    with pytest.raises(ValueError, match="train.attention_backend"):
        attention_backend("xformers")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="attention_backend"):
        parse_config({"method": "solrl"}, ["train.attention_backend=xformers"])


def test_learner_refuses_an_unknown_kernel_before_building(tiny_root):
    adapter = load_model(ensure_tiny_model("sd3", tiny_root), height=32, width=32, max_sequence_length=8,
                         dtype=torch.float32)
    with pytest.raises(ValueError, match="train.attention_backend"):
        Learner(adapter, LearnerSettings(lora_rank=4, lora_alpha=8, attention_backend="xformers"), seed=0)  # type: ignore[arg-type]


def test_config_reaches_the_learner_settings():
    cfg = parse_config({"method": "solrl"}, ["train.attention_backend=flash", "train.gradient_checkpointing=true"])
    settings = learner_settings(cfg)
    assert settings.attention_backend == "flash" and settings.gradient_checkpointing is True
