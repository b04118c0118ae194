"""Client of the reward server with retries: what the training driver calls.

Shape legend:
    B: images in a request
    H, W: image height and width in pixels

``RewardClient(target)`` talks to a server through a Serve ``DeploymentHandle`` (in-cluster: tensors go
through Ray's object store, no encoding) or an HTTP base URL (images are sent as PNG, i.e. quantised to
8 bits, which is what the JPEG rewards do anyway). Either way ``score`` returns the same
``RewardBreakdown`` a local ``combine_rewards(weights)(images, prompts)`` would, so the driver can swap one
for the other.

Retry policy: a call that fails (reward error, replica or connection lost, HTTP 5xx/408/429) or does not
answer within ``timeout_s`` is retried after base_delay_s x 2^(attempt - 1) seconds (capped, with jitter so
many workers do not retry in lockstep), up to ``attempts`` calls in all; then ``RewardServerError`` names
the reward(s) and the last error. A malformed request (HTTP 4xx, ``RewardInputError``) would fail again
the same way, so it raises ``RewardRequestError`` at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
import torch
from ray.serve.handle import DeploymentHandle
from torch import Tensor

from services.reward.codec import encode_images
from services.reward.errors import RewardInputError, RewardRequestError, RewardServerError
from workers.rewards import RewardBreakdown

__all__ = ["RewardClient"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# HTTP statuses that say "try again later" rather than "this request is wrong".
_RETRYABLE_4XX = frozenset({408, 429})


class _Refused(Exception):
    """Internal: the server refused the request as malformed; retrying cannot help."""


class RewardClient:
    """Scores images on a reward server, retrying failed or slow calls with exponential backoff.

    Args:
        target: a Serve ``DeploymentHandle`` of ``RewardServer`` or the server's HTTP base URL
            (e.g. "http://127.0.0.1:8001", the URL ``start_reward_server`` returns).
        attempts: calls in all, including the first (>= 1).
        base_delay_s: wait before the first retry; doubles on each further retry.
        max_delay_s: cap on one wait.
        timeout_s: limit on one call; a call over it counts as failed (and is cancelled).
    """

    def __init__(
        self,
        target: DeploymentHandle | str,
        *,
        attempts: int = 3,
        base_delay_s: float = 0.5,
        max_delay_s: float = 10.0,
        timeout_s: float = 120.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1 (calls in all, including the first), got {attempts}")
        if base_delay_s < 0 or max_delay_s < 0 or timeout_s <= 0:
            raise ValueError(
                f"need base_delay_s >= 0, max_delay_s >= 0 and timeout_s > 0; got {base_delay_s}, "
                f"{max_delay_s}, {timeout_s}"
            )
        if isinstance(target, str):
            self._url: str | None = target.rstrip("/")
            self._handle: DeploymentHandle | None = None
            self._http: httpx.Client | None = httpx.Client(timeout=timeout_s)
        elif isinstance(target, DeploymentHandle):
            self._url, self._handle, self._http = None, target, None
        else:
            raise TypeError(
                f"target must be a DeploymentHandle or an http(s) URL, got {type(target).__name__}"
            )
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self._rng = random.Random()  # jitter only; never touches the global RNG the training seeds
        self._weights: dict[str, float] | None = None

    def __repr__(self) -> str:
        return f"RewardClient({self._where()}, attempts={self.attempts}, timeout_s={self.timeout_s})"

    def close(self) -> None:
        """Release the HTTP connection pool (nothing to do for a handle)."""
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- public API ----------------------------------------------------------------------------------

    def score(
        self, images_B3HW: Tensor, prompts: list[str], *, rewards: Sequence[str] | None = None
    ) -> RewardBreakdown:
        """Scores of ``images_B3HW`` (float [B, 3, H, W] in [0, 1]) with one prompt each, as float32 [B] on CPU.

        ``rewards`` selects a subset of the server's configured rewards (all by default). Raises
        ``RewardRequestError`` at once for a request the server refuses, ``RewardServerError`` when every
        attempt failed.
        """
        selection = None if rewards is None else list(rewards)
        if self._handle is not None:
            images_cpu = images_B3HW.detach().cpu()  # the server moves images to its own device
            handle = self._handle
            return self._with_retries(
                lambda: _score_by_handle(handle, images_cpu, prompts, selection, self.timeout_s), selection
            )
        encoded = encode_images(images_B3HW)  # encode once, not on every attempt
        return self._with_retries(lambda: self._score_by_http(encoded, prompts, selection), selection)

    def weights(self) -> dict[str, float]:
        """The server's configured rewards and weights (fetched once, with the same retries)."""
        if self._weights is None:
            description = self._with_retries(self._describe, None)
            self._weights = {name: float(w) for name, w in description["rewards"].items()}
        return dict(self._weights)

    # ---- retries -------------------------------------------------------------------------------------

    def _with_retries(self, call: Callable[[], _T], selection: list[str] | None) -> _T:
        """``call()`` with the retry policy of the module docstring; ``selection`` names the rewards in errors."""
        last_error: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except _Refused as err:
                raise RewardRequestError(
                    f"reward server {self._where()} refused the request: {err}"
                ) from None
            except Exception as err:  # any other failure may be transient: a lost replica, a timeout, a 5xx
                last_error = err
                if attempt == self.attempts:
                    break
                delay_s = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
                delay_s *= 0.5 + 0.5 * self._rng.random()
                logger.warning(
                    "reward call %d/%d to %s failed (%s: %s); retrying in %.2fs",
                    attempt,
                    self.attempts,
                    self._where(),
                    type(err).__name__,
                    _first_line(err),
                    delay_s,
                )
                time.sleep(delay_s)
        raise RewardServerError(
            f"reward server {self._where()} failed for reward(s) {self._reward_names(selection)} after "
            f"{self.attempts} attempt(s) (timeout {self.timeout_s}s each); last error: "
            f"{type(last_error).__name__}: {_first_line(last_error)}"
        ) from last_error

    def _reward_names(self, selection: list[str] | None) -> str:
        """Names for the final error; asks the server once if they are not known yet (it may be down)."""
        if selection is not None:
            return str(selection)
        if self._weights is None:
            try:
                self._weights = {name: float(w) for name, w in self._describe()["rewards"].items()}
            except Exception:  # the server is failing; the error should still be raised, without names
                return "(unknown: the server did not say which)"
        return str(list(self._weights))

    def _where(self) -> str:
        if self._handle is not None:
            return f"handle {self._handle.app_name}/{self._handle.deployment_name}"
        return str(self._url)

    # ---- transports ----------------------------------------------------------------------------------

    def _score_by_http(
        self, images_b64: list[str], prompts: list[str], selection: list[str] | None
    ) -> RewardBreakdown:
        if self._http is None or self._url is None:
            raise RuntimeError("this RewardClient was built for a handle, not a URL")
        body: dict[str, Any] = {"prompts": prompts, "images": images_b64}
        if selection is not None:
            body["rewards"] = selection
        response = self._http.post(f"{self._url}/score", json=body)
        payload = _json_or_text(response)
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_4XX:
            raise _Refused(f"HTTP {response.status_code}: {payload}")
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {payload}")
        return RewardBreakdown(
            total=torch.tensor(payload["scores"], dtype=torch.float32),
            components={
                name: torch.tensor(values, dtype=torch.float32)
                for name, values in payload["components"].items()
            },
        )

    def _describe(self) -> dict[str, Any]:
        if self._handle is not None:
            return self._handle.describe.remote().result(timeout_s=self.timeout_s)
        if self._http is None:
            raise RuntimeError("this RewardClient has neither a handle nor a URL")
        response = self._http.get(f"{self._url}/rewards")
        response.raise_for_status()
        return response.json()


def _score_by_handle(
    handle: DeploymentHandle,
    images_B3HW: Tensor,
    prompts: list[str],
    selection: list[str] | None,
    timeout_s: float,
) -> RewardBreakdown:
    """One call through a DeploymentHandle; a refused request becomes ``_Refused``, a slow one is cancelled."""
    response = handle.score.remote(images_B3HW, prompts, selection)
    try:
        result = response.result(timeout_s=timeout_s)
    except TimeoutError:
        response.cancel()  # best effort: frees the replica if the call has not started yet
        raise
    except RewardInputError as err:  # Ray re-raises the server's exception as an instance of its type
        raise _Refused(_first_line(err)) from err
    return RewardBreakdown(total=result["total"], components=dict(result["components"]))


def _json_or_text(response: httpx.Response) -> Any:
    """The error detail of a response: its JSON body, or its text when a proxy answered with plain text."""
    try:
        return response.json()
    except ValueError:
        return response.text


def _first_line(err: BaseException | None) -> str:
    """Ray prefixes remote errors with a traceback; the last line of it carries the message."""
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else repr(err)
