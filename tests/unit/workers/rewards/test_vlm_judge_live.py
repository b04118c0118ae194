"""VLM judge against a real OpenAI-compatible server (e.g. vLLM), opt-in.

Skipped unless SOLRL_VLM_JUDGE_URL (base URL with /v1) and SOLRL_VLM_JUDGE_MODEL (served model name) are set;
no stub is involved. Any vision chat model works, including a tiny random-init one: the checks are about the
protocol (image upload, logprobs parsing, determinism at temperature 0, timeouts), not answer quality.
"""

from __future__ import annotations

import json
import math
import os
import urllib.request

import pytest
import torch

from workers.rewards import RewardError, RewardOptions, get_reward
from workers.rewards.vlm_judge import DEFAULT_QUESTION, encode_png_data_url

URL = os.environ.get("SOLRL_VLM_JUDGE_URL")
MODEL = os.environ.get("SOLRL_VLM_JUDGE_MODEL")
pytestmark = pytest.mark.skipif(not (URL and MODEL), reason="set SOLRL_VLM_JUDGE_URL and SOLRL_VLM_JUDGE_MODEL")


def _options(**extra: object) -> RewardOptions:
    return RewardOptions(extra={"base_url": URL, "model": MODEL, "timeout_seconds": 120, **extra})


def test_scores_are_probabilities_and_deterministic() -> None:
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", "a dog", "a red car", "a cat"]
    judge = get_reward("vlm_judge", _options(max_concurrency=4))
    first = judge(images, prompts)
    assert first.shape == (4,) and ((first >= 0) & (first <= 1)).all()
    torch.testing.assert_close(judge(images, prompts), first, atol=1e-4, rtol=0)


def test_score_equals_raw_logprob_of_yes() -> None:
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": encode_png_data_url(image)}},
            {"type": "text", "text": DEFAULT_QUESTION.format(prompt="a cat")},
        ]}],
        "max_tokens": 4, "temperature": 0.0, "logprobs": True, "top_logprobs": 20,
    }
    request = urllib.request.Request(
        URL.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        raw = json.loads(response.read())
    first = next(p for p in raw["choices"][0]["logprobs"]["content"] if p["token"].strip())
    expected = sum(math.exp(t["logprob"]) for t in first["top_logprobs"] if t["token"].strip().lower() == "yes")
    got = get_reward("vlm_judge", _options())(image[None], ["a cat"])
    assert got.item() == pytest.approx(expected, abs=1e-4)


def test_timeout_against_real_server() -> None:
    judge = get_reward("vlm_judge", _options(timeout_seconds=1e-4))
    with pytest.raises(RewardError, match="timed out"):
        judge(torch.rand(1, 3, 32, 32), ["a cat"])
