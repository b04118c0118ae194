"""VLM-as-judge reward over an OpenAI-compatible chat-completions endpoint (e.g. a vLLM server).

Shape legend:
    B: images (and prompts) in the batch

Each image is sent as a base64 PNG data URL together with a yes/no question built from its prompt (default
``"Does this image show: {prompt}? Answer yes or no."``). The score is:

* with logprobs (vLLM returns them when asked): P("yes") of the first non-whitespace generated token, i.e.
  the summed probability of the ``top_logprobs`` entries whose text is "yes" in any case or spacing. Tokens
  outside the top ``TOP_LOGPROBS`` count as 0, so this is a lower bound, tight in practice when the model
  answers yes/no at all. This is the VQAScore-style soft judgement.
* without logprobs: 1.0 if the answer starts with "yes", 0.0 if it starts with "no"; any other answer raises
  :class:`RewardError` rather than guessing.

Requests run in a thread pool of ``max_concurrency`` (threads, not asyncio: the reward may be called from
inside an event loop, e.g. a Ray Serve replica). HTTP goes through the standard library (``urllib``): the
project's CI installs only the ``dev`` and ``ray`` extras, neither of which brings httpx, and a connection per
request costs milliseconds next to a VLM forward pass. Proxy environment variables are honoured, as by httpx
and the openai client. Any failure (timeout, refused connection, HTTP error,
malformed or unparseable answer) raises :class:`RewardError` naming ``vlm_judge`` and the URL, so a dead judge
server fails the step instead of hanging it (flow_grpo issue #232 is an eval that hung on a refused
connection).

Options (``RewardOptions.extra``): ``base_url`` (required, the OpenAI-style base including ``/v1``, e.g.
``http://127.0.0.1:8000/v1``), ``model`` (required, the served model name), ``timeout_seconds`` (per
request, default 60), ``max_concurrency`` (default 8), ``api_key`` (sent as a Bearer token if set),
``question`` (a template containing ``{prompt}``).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from workers.rewards.errors import RewardError
from workers.rewards.options import RewardOptions
from workers.rewards.validation import check_images

__all__ = [
    "DEFAULT_QUESTION",
    "TOP_LOGPROBS",
    "VLMJudgeConfig",
    "VLMJudgeReward",
    "build_vlm_judge",
    "encode_png_data_url",
    "parse_yes_score",
]

NAME = "vlm_judge"
DEFAULT_QUESTION = "Does this image show: {prompt}? Answer yes or no."
TOP_LOGPROBS = 20  # vLLM's default cap on logprobs per token (--max-logprobs 20)
MAX_ANSWER_TOKENS = 4  # room for "Yes." or a leading space token; only the first word is read
EXTRA_KEYS = ("base_url", "model", "timeout_seconds", "max_concurrency", "api_key", "question")
_ANSWER = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class VLMJudgeConfig:
    """Validated ``RewardOptions.extra`` of the judge; see the module docstring for each key."""

    base_url: str
    model: str
    timeout_seconds: float = 60.0
    max_concurrency: int = 8
    api_key: str | None = None
    question: str = DEFAULT_QUESTION

    @classmethod
    def from_options(cls, options: RewardOptions) -> VLMJudgeConfig:
        options.check_extra(NAME, EXTRA_KEYS)
        if options.path is not None:
            raise ValueError(f"reward {NAME!r} loads no files; leave RewardOptions.path unset (got {options.path!r})")
        extra = dict(options.extra)
        for key in ("base_url", "model"):
            if not isinstance(extra.get(key), str) or not extra[key]:
                raise ValueError(
                    f"reward {NAME!r} needs RewardOptions.extra[{key!r}] (a non-empty string), got {extra.get(key)!r}; "
                    "e.g. extra={'base_url': 'http://127.0.0.1:8000/v1', 'model': 'Qwen/Qwen2.5-VL-7B-Instruct'}"
                )
        config = cls(**extra)
        if not config.base_url.startswith(("http://", "https://")):
            raise ValueError(f"reward {NAME!r}: base_url must start with http:// or https://, got {config.base_url!r}")
        timeout = config.timeout_seconds
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (0 < timeout < math.inf):
            raise ValueError(f"reward {NAME!r}: timeout_seconds must be a positive number, got {timeout!r}")
        if isinstance(config.max_concurrency, bool) or not isinstance(config.max_concurrency, int) or config.max_concurrency < 1:
            raise ValueError(f"reward {NAME!r}: max_concurrency must be an int >= 1, got {config.max_concurrency!r}")
        if not isinstance(config.question, str) or "{prompt}" not in config.question:
            raise ValueError(f"reward {NAME!r}: question must contain '{{prompt}}', got {config.question!r}")
        return config


def encode_png_data_url(image_3HW: Tensor) -> str:
    """A ``data:image/png;base64,...`` URL of one image [3, H, W] in [0, 1], quantised by round(255 x)."""
    pixels_HW3 = (image_3HW.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels_HW3.numpy())).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def parse_yes_score(response: Any) -> float:
    """Score in [0, 1] from a chat-completions response body (parsed JSON); see the module docstring.

    Raises ValueError (wrapped into RewardError by the caller) if the body is malformed or the answer is not
    yes/no.
    """
    try:
        choice = response["choices"][0]
    except (KeyError, IndexError, TypeError) as err:
        raise ValueError(f"response has no choices[0]: {str(response)[:300]}") from err
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if content:
        for position in content:
            if not str(position.get("token", "")).strip():
                continue  # a leading space/newline token carries no answer
            candidates = position.get("top_logprobs") or [position]
            p_yes = sum(
                math.exp(float(c["logprob"])) for c in candidates if str(c.get("token", "")).strip().lower() == "yes"
            )
            return min(1.0, p_yes)
    try:
        text = choice["message"]["content"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"response choice has neither logprobs nor message.content: {str(choice)[:300]}") from err
    match = _ANSWER.match(text or "")
    if match is None:
        raise ValueError(f"answer {text!r} does not start with yes or no")
    return 1.0 if match.group(1).lower() == "yes" else 0.0


class VLMJudgeReward:
    """Reward = judged P(image shows its prompt) in [0, 1], float32 [B]; one HTTP request per image."""

    def __init__(self, config: VLMJudgeConfig) -> None:
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    def _request_body(self, image_url: str, prompt: str) -> dict[str, Any]:
        question = self.config.question.replace("{prompt}", prompt)
        return {
            "model": self.config.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_url}},
                        {"type": "text", "text": question},
                    ],
                }
            ],
            "max_tokens": MAX_ANSWER_TOKENS,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }

    def _post(self, body: dict[str, Any]) -> bytes:
        """POST ``body`` as JSON; the response bytes of a 200, RewardError for anything else."""
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=self._headers, method="POST")
        timed_out = RewardError(NAME, f"request to {self.url} timed out after {self.config.timeout_seconds} s")
        try:
            # The timeout bounds each blocking socket operation (connect, each read), as httpx's does.
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                return response.read()
        except urllib.error.HTTPError as err:  # a non-2xx answer; before URLError, which it subclasses
            detail = err.read()[:300].decode("utf-8", errors="replace")
            raise RewardError(NAME, f"{self.url} answered HTTP {err.code}: {detail}") from err
        except urllib.error.URLError as err:  # connect failures arrive wrapped
            if isinstance(err.reason, TimeoutError):
                raise timed_out from err
            raise RewardError(NAME, f"request to {self.url} failed: {err.reason}") from err
        except TimeoutError as err:  # read timeout (socket.timeout is TimeoutError since Python 3.10)
            raise timed_out from err
        except (OSError, http.client.HTTPException) as err:  # reset connection, truncated response
            raise RewardError(NAME, f"request to {self.url} failed: {type(err).__name__}: {err}") from err

    def _judge_one(self, image_url: str, prompt: str) -> float:
        payload = self._post(self._request_body(image_url, prompt))
        try:
            return parse_yes_score(json.loads(payload))
        # ValueError covers JSONDecodeError/UnicodeDecodeError; the others come from oddly shaped JSON.
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise RewardError(NAME, f"cannot read the answer from {self.url}: {err}") from err

    def __call__(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        check_images(images_B3HW, prompts)
        urls = [encode_png_data_url(image) for image in images_B3HW]
        if not urls:
            return torch.zeros(0, dtype=torch.float32, device=images_B3HW.device)
        with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(urls))) as pool:
            futures = [pool.submit(self._judge_one, url, prompt) for url, prompt in zip(urls, prompts, strict=True)]
            try:
                scores = [future.result() for future in futures]
            except BaseException:
                for future in futures:  # fail fast: do not send requests that were still queued
                    future.cancel()
                raise
        return torch.tensor(scores, dtype=torch.float32, device=images_B3HW.device)

    def __repr__(self) -> str:
        return f"VLMJudgeReward(url={self.url!r}, model={self.config.model!r})"


def build_vlm_judge(options: RewardOptions) -> VLMJudgeReward:
    """The VLM judge reward; ``options.extra`` needs ``base_url`` and ``model`` (see the module docstring)."""
    return VLMJudgeReward(VLMJudgeConfig.from_options(options))
