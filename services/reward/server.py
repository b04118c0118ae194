"""The reward server: a Ray Serve deployment that wraps ``workers.rewards`` and batches requests.

Shape legend:
    B: images in one request
    N: images in one reward call (the requests of a batch, concatenated)
    H, W: image height and width in pixels

Two ways in, one batch queue:
- Python, for the training driver: ``handle.score.remote(images_B3HW, prompts)`` through a DeploymentHandle;
  tensors travel through Ray's object store and scores come back as float32 tensors.
- HTTP (a FastAPI ingress inside Serve): ``POST /score`` with base64 PNG/JPEG images, ``GET /rewards``,
  ``GET /healthz``. See ``services/reward/README.md`` for the contract.
Both end in ``_score_batch``, a ``@serve.batch`` method: requests that arrive within ``batch_wait_timeout_s``
of each other are concatenated (up to ``max_batch_size`` *images*) and scored by one call of the
``MultiReward`` from ``combine_rewards(weights, **reward_kwargs)``, then split back per request. The server
never computes a reward itself; a request that selects a subset of the configured rewards gets the same
weighted sum sum_k w_k R_k over its subset, from the components of the one call.

Image size: by default the server accepts any size, as long as all images of one request share it (one
request is one tensor); requests of different sizes that meet in a batch are scored in one call per size.
With ``image_size=(H, W)`` every image must be exactly that size, and anything else is refused with 422.

Every malformed request is refused before it joins a batch (422, or 413 for a body over ``max_body_bytes``),
so one bad request never fails the others it would have been batched with.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run time, and inside
# Serve's ingress wrapper string annotations would not resolve (``request: Request`` became a query param).

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle
from torch import Tensor

from services.reward.codec import check_image_size, decode_images
from services.reward.errors import RewardComputeError, RewardInputError
from workers.rewards import REWARDS, RewardBreakdown, check_images, combine_rewards, known_rewards

__all__ = [
    "DEFAULT_BATCH_WAIT_TIMEOUT_S",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "RewardServer",
    "ScoreRequest",
    "build_reward_app",
    "start_reward_server",
]

logger = logging.getLogger(__name__)

# Images per reward call. A rollout step sends tens of images per worker; 64 keeps one call's memory small
# on CPU while still merging several workers' requests.
DEFAULT_MAX_BATCH_SIZE = 64
# Added latency a request may wait for others to join its batch; small next to a reward call's own time.
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.05
# 64 MiB holds about a hundred 512x512 PNGs; beyond that the driver should use the handle API (no base64).
DEFAULT_MAX_BODY_BYTES = 64 * 2**20

RewardFn = Callable[[Tensor, list[str]], Tensor]


class ScoreRequest(BaseModel):
    """Body of ``POST /score``. Unknown keys are refused, so a misspelled key fails instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: list[str] = Field(description="One prompt per image; at least one.")
    images: list[str] = Field(description="One base64-encoded PNG or JPEG (8-bit RGB) per prompt.")
    rewards: list[str] | None = Field(
        None, description="Subset of the configured rewards to return; all of them when omitted."
    )


@dataclass(frozen=True)
class _Chunk:
    """One request (or a piece of a request larger than a batch) waiting in the batch queue."""

    images_B3HW: Tensor
    prompts: list[str]
    rewards: tuple[str, ...] | None  # None: all configured rewards


@dataclass(frozen=True)
class _Scores:
    """Scores of one chunk or request: totals [B], unweighted components [B] each, and the reward-call size."""

    total_B: Tensor
    components: dict[str, Tensor]
    batch_size: int


def _count_images(chunks: list[_Chunk]) -> int:
    """Batch size in images rather than requests, so ``max_batch_size`` bounds one reward call's memory."""
    return sum(len(chunk.prompts) for chunk in chunks)


def _register_extra_rewards(extra_rewards: Mapping[str, RewardFn]) -> None:
    """Add rewards defined outside workers/rewards to this process's ``REWARDS`` table, never shadowing one."""
    for name, fn in extra_rewards.items():
        if name in known_rewards() and REWARDS.get(name) is not fn:
            raise ValueError(
                f"extra reward {name!r} is already registered in workers.rewards; pick another name"
            )
        if not callable(fn):
            raise ValueError(
                f"extra reward {name!r} must be callable (images_B3HW, prompts) -> [B], got {fn!r}"
            )
        REWARDS[name] = fn


def _field_of(location: tuple[int | str, ...]) -> str:
    """pydantic's error location as a field path: ('images', 3) -> 'images[3]'; () -> 'body'."""
    field = ""
    for part in location:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    return field or "body"


def _error_response(err: RewardInputError) -> JSONResponse:
    return JSONResponse(status_code=err.status_code, content={"detail": str(err), "field": err.field})


async def _read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``max_body_bytes``."""
    too_large = (
        f"is larger than this server's max_body_bytes ({max_body_bytes}); send fewer images per request"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise RewardInputError("body", f"of {declared} bytes {too_large}", status_code=413)
    parts: list[bytes] = []
    received = 0
    async for part in request.stream():  # a chunked body has no Content-Length: count while reading
        received += len(part)
        if received > max_body_bytes:
            raise RewardInputError("body", too_large, status_code=413)
        parts.append(part)
    return b"".join(parts)


def _parse_score_request(body: bytes) -> ScoreRequest:
    """Validate the JSON body, turning pydantic's first error into a ``RewardInputError`` naming the field."""
    try:
        parsed = ScoreRequest.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        more = f" (and {err.error_count() - 1} more error(s))" if err.error_count() > 1 else ""
        raise RewardInputError(_field_of(tuple(first["loc"])), f"{first['msg']}{more}") from err
    if not parsed.prompts:
        raise RewardInputError("prompts", "is empty; send at least one prompt, with one image per prompt")
    if len(parsed.images) != len(parsed.prompts):
        raise RewardInputError(
            "images",
            f"has {len(parsed.images)} entries but prompts has {len(parsed.prompts)}; send one image per prompt",
        )
    return parsed


app = FastAPI(title="solrl reward server", description="Scores images with the configured workers.rewards.")


@serve.deployment
@serve.ingress(app)
class RewardServer:
    """Serve replica: one ``MultiReward`` behind a batch queue, reachable by handle and over HTTP.

    Args:
        weights: reward name -> weight, as for ``workers.rewards.combine_rewards``.
        image_size: (H, W) every image must have, or None to accept any size consistent within a request.
        max_batch_size: most images per reward call; a larger request is split into several calls.
        batch_wait_timeout_s: how long the first request of a batch waits for others to join it.
        max_body_bytes: largest HTTP body accepted (413 above it).
        device: where the images are moved for the reward call ("cpu", "cuda", "cuda:1").
        extra_rewards: reward functions defined outside workers/rewards (an experiment's own reward, a test's
            fault injection), registered in this replica's ``REWARDS`` under the given names before the
            weights are combined. They are pickled with the deployment, so they must be importable or
            picklable by value.
        **reward_kwargs: passed through unchanged, as ``combine_rewards(weights, **reward_kwargs)``.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        image_size: tuple[int, int] | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        device: str = "cpu",
        extra_rewards: Mapping[str, RewardFn] | None = None,
        **reward_kwargs: Any,
    ) -> None:
        _register_extra_rewards(extra_rewards or {})
        self._reward = combine_rewards(weights, **reward_kwargs)
        self._weights = {name: float(weight) for name, weight in weights.items()}
        self._image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self._max_batch_size = max_batch_size
        self._batch_wait_timeout_s = batch_wait_timeout_s
        self._max_body_bytes = max_body_bytes
        self._device = torch.device(device)
        # The decorator's values are class-level defaults; each server applies its own configuration.
        self._score_batch.set_max_batch_size(max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        logger.info("reward server ready: %s, image_size=%s, device=%s", self._reward, image_size, device)

    # ---- Python API (DeploymentHandle) ---------------------------------------------------------------

    async def score(
        self, images_B3HW: Tensor, prompts: list[str], rewards: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Score one request: {"total": float32 [B], "components": {name: float32 [B]}, "batch_size": int}.

        ``images_B3HW`` is float in [0, 1] on any device (scored on the server's ``device``); ``rewards``
        optionally selects a subset of the configured rewards. ``batch_size`` is the number of images in the
        reward call that scored this request (the largest one if the request was split). Raises
        ``RewardInputError`` (a ValueError) for a malformed request and ``RewardComputeError`` when a reward
        function fails.
        """
        selection = self._check_selection(rewards)
        self._check_tensor_request(images_B3HW, prompts)
        scores = await self._score(images_B3HW.detach().cpu(), prompts, selection)
        return {"total": scores.total_B, "components": scores.components, "batch_size": scores.batch_size}

    def describe(self) -> dict[str, Any]:
        """The configuration a caller may depend on: rewards and weights, image size, batch limits."""
        return {
            "rewards": dict(self._weights),
            "image_size": None if self._image_size is None else list(self._image_size),
            "max_batch_size": self._max_batch_size,
            "batch_wait_timeout_s": self._batch_wait_timeout_s,
            "max_body_bytes": self._max_body_bytes,
            "device": str(self._device),
        }

    # ---- HTTP API ------------------------------------------------------------------------------------

    @app.post("/score")
    async def http_score(self, request: Request) -> JSONResponse:
        """``POST /score``: {"prompts", "images", "rewards"?} -> {"scores", "components", "weights", "batch_size"}."""
        try:
            parsed = _parse_score_request(await _read_body(request, self._max_body_bytes))
            selection = self._check_selection(parsed.rewards)
            # Decoding is CPU work; off the event loop so the replica keeps accepting requests meanwhile.
            images_B3HW = await asyncio.to_thread(decode_images, parsed.images, self._image_size)
            scores = await self._score(images_B3HW, parsed.prompts, selection)
        except RewardInputError as err:
            return _error_response(err)
        except RewardComputeError as err:
            logger.warning("reward call failed: %s", err)
            return JSONResponse(status_code=500, content={"detail": str(err), "rewards": list(err.rewards)})
        names = list(selection) if selection is not None else list(self._weights)
        return JSONResponse(
            {
                "scores": scores.total_B.tolist(),
                "components": {name: values.tolist() for name, values in scores.components.items()},
                "weights": {name: self._weights[name] for name in names},
                "batch_size": scores.batch_size,
            }
        )

    @app.get("/rewards")
    def http_rewards(self) -> dict[str, Any]:
        """``GET /rewards``: the configured rewards and weights, and the server's limits."""
        return self.describe()

    @app.get("/healthz")
    def http_healthz(self) -> dict[str, str]:
        """``GET /healthz``: 200 once the replica has built its rewards."""
        return {"status": "ok"}

    # ---- validation ----------------------------------------------------------------------------------

    def _check_selection(self, rewards: Sequence[str] | None) -> tuple[str, ...] | None:
        """A per-request subset of the configured rewards, or None for all of them."""
        if rewards is None:
            return None
        if isinstance(rewards, str) or len(rewards) == 0:
            raise RewardInputError("rewards", "must be a non-empty list of reward names, or omitted for all")
        configured = ", ".join(self._weights)
        for name in rewards:
            if name not in self._weights:
                raise RewardInputError(
                    "rewards",
                    f"unknown reward {name!r}: not configured on this server, which computes: {configured}",
                )
        if len(set(rewards)) != len(rewards):
            raise RewardInputError("rewards", f"lists a reward twice: {list(rewards)}")
        return None if list(rewards) == list(self._weights) else tuple(rewards)

    def _check_tensor_request(self, images_B3HW: Tensor, prompts: list[str]) -> None:
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise RewardInputError("prompts", f"must be a list[str], got {type(prompts).__name__}")
        if not prompts:
            raise RewardInputError("prompts", "is empty; send at least one prompt, with one image per prompt")
        try:
            check_images(images_B3HW, prompts)
        except ValueError as err:
            raise RewardInputError("images_B3HW", str(err)) from err
        check_image_size(images_B3HW.shape[2], images_B3HW.shape[3], self._image_size, "images_B3HW")

    # ---- scoring -------------------------------------------------------------------------------------

    async def _score(
        self, images_B3HW: Tensor, prompts: list[str], selection: tuple[str, ...] | None
    ) -> _Scores:
        """Queue a validated request, split into pieces of at most ``max_batch_size`` images, and join them."""
        step = self._max_batch_size
        pieces = await asyncio.gather(
            *(
                self._score_batch(_Chunk(images_B3HW[i : i + step], prompts[i : i + step], selection))
                for i in range(0, len(prompts), step)
            )
        )
        if len(pieces) == 1:
            return pieces[0]
        return _Scores(
            total_B=torch.cat([p.total_B for p in pieces]),
            components={
                name: torch.cat([p.components[name] for p in pieces]) for name in pieces[0].components
            },
            batch_size=max(p.batch_size for p in pieces),
        )

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_size_fn=_count_images)
    async def _score_batch(self, chunks: list[_Chunk]) -> list[_Scores]:
        # The reward call runs in a worker thread: the event loop stays free to queue the next batch and to
        # answer /healthz while a slow (model-based) reward computes.
        return await asyncio.to_thread(self._score_chunks, chunks)

    def _score_chunks(self, chunks: list[_Chunk]) -> list[_Scores]:
        """One reward call per image size/dtype among ``chunks``, split back into one ``_Scores`` per chunk."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, chunk in enumerate(chunks):
            key = (*chunk.images_B3HW.shape[2:], chunk.images_B3HW.dtype)
            groups.setdefault(key, []).append(index)
        results: list[_Scores | None] = [None] * len(chunks)
        for indices in groups.values():
            images_N3HW = torch.cat([chunks[i].images_B3HW for i in indices])
            prompts = [prompt for i in indices for prompt in chunks[i].prompts]
            breakdown = self._call_reward(images_N3HW, prompts)
            start = 0
            for i in indices:
                stop = start + len(chunks[i].prompts)
                results[i] = self._select(breakdown, start, stop, chunks[i].rewards, len(prompts))
                start = stop
        return results  # type: ignore[return-value]  # every index belongs to exactly one group

    def _call_reward(self, images_N3HW: Tensor, prompts: list[str]) -> RewardBreakdown:
        """The one call into workers.rewards; a failure becomes ``RewardComputeError`` naming the rewards."""
        try:
            breakdown = self._reward(images_N3HW.to(self._device), prompts)
        except Exception as err:
            raise RewardComputeError(
                list(self._weights), f"{type(err).__name__}: {err} (reward call on {len(prompts)} image(s))"
            ) from err
        return RewardBreakdown(
            total=breakdown.total.detach().cpu(),
            components={name: values.detach().cpu() for name, values in breakdown.components.items()},
        )

    def _select(
        self,
        breakdown: RewardBreakdown,
        start: int,
        stop: int,
        selection: tuple[str, ...] | None,
        batch_size: int,
    ) -> _Scores:
        """Rows [start, stop) of the call's scores; for a reward subset, the weighted sum over that subset."""
        if selection is None:
            components = {name: values[start:stop] for name, values in breakdown.components.items()}
            return _Scores(breakdown.total[start:stop], components, batch_size)
        components = {name: breakdown.components[name][start:stop] for name in selection}
        total_B = torch.zeros(stop - start, dtype=torch.float32)
        for name in selection:
            total_B = total_B + self._weights[name] * components[name]
        return _Scores(total_B, components, batch_size)


def build_reward_app(
    weights: Mapping[str, float],
    *,
    num_replicas: int = 1,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
    max_ongoing_requests: int | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    resources: Mapping[str, float] | None = None,
    image_size: tuple[int, int] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    device: str = "cpu",
    extra_rewards: Mapping[str, RewardFn] | None = None,
    **reward_kwargs: Any,
) -> Application:
    """The reward server as a Serve application, ready for ``serve.run``.

    Replica resources are ``num_cpus``, ``num_gpus`` and custom ``resources`` (e.g. {"reward": 1} to pin
    replicas to a reward worker group); use fractions or 0 to share a small machine. ``max_ongoing_requests``
    (requests a replica admits at once) defaults to 2 x ``max_batch_size``, so a full batch can fill while
    the previous one computes. The other arguments are documented on :class:`RewardServer`; unknown keyword
    arguments are passed to ``combine_rewards``. Reward names are checked here, before any replica starts.
    """
    extra = dict(extra_rewards or {})
    known = known_rewards()
    unknown = sorted(name for name in weights if name not in known and name not in extra)
    if not weights or unknown:
        raise ValueError(
            f"reward weights {dict(weights)} name unknown reward(s) {unknown or '(none given)'}; "
            f"valid rewards: {', '.join(sorted(known | set(extra)))}"
        )
    shadowed = sorted(name for name in extra if name in known)
    if shadowed:
        raise ValueError(
            f"extra_rewards {shadowed} are already registered in workers.rewards; pick other names"
        )
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError(
            f"image_size must be (height, width) with positive sizes, or None; got {image_size!r}"
        )
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(
            f"max_batch_size must be an int >= 1 (images per reward call), got {max_batch_size!r}"
        )
    if batch_wait_timeout_s < 0:
        raise ValueError(f"batch_wait_timeout_s must be >= 0, got {batch_wait_timeout_s}")
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    actor_options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if resources:
        actor_options["resources"] = dict(resources)
    deployment = RewardServer.options(
        num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests or 2 * max_batch_size,
        ray_actor_options=actor_options,
    )
    return deployment.bind(
        dict(weights),
        image_size=None if image_size is None else tuple(image_size),
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        max_body_bytes=max_body_bytes,
        device=device,
        extra_rewards=extra or None,
        **reward_kwargs,
    )


def start_reward_server(
    weights: Mapping[str, float],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "reward",
    route_prefix: str = "/",
    **app_options: Any,
) -> tuple[DeploymentHandle, str]:
    """Run the reward server on the connected Ray cluster; return its handle and its HTTP base URL.

    Starts Serve's HTTP proxy on ``host:port`` if Serve is not running yet. Serve fixes its HTTP options
    when it first starts on a cluster, so a second server on the same cluster shares that proxy: give it
    the same host and port and its own ``name`` and ``route_prefix``. ``app_options`` go to
    :func:`build_reward_app`. Blocks until the replicas are ready.
    """
    if not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix must start with '/', got {route_prefix!r}")
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(build_reward_app(weights, **app_options), name=name, route_prefix=route_prefix)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # a wildcard bind is reached via loopback
    return handle, f"http://{url_host}:{port}{route_prefix.rstrip('/')}"
