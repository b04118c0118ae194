"""The reward server on a real local Ray cluster: batching, the handle and HTTP APIs, and 4xx for bad input.

Every score is compared with calling ``workers.rewards`` directly in this process: the server must add
batching and transport, never change a number.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from ray import serve
from ray.serve.handle import DeploymentHandle
from torch import Tensor

from services.reward import RewardClient, RewardInputError, build_reward_app, start_reward_server
from tests.integration.reward.conftest import (
    IMAGE_SIZE,
    JPEG_WEIGHTS,
    MAX_BATCH_SIZE,
    MAX_BODY_BYTES,
)
from workers.rewards import RewardBreakdown, RewardOptions, combine_rewards
from workers.rewards.tiny import ensure_tiny_reward_model

pytestmark = pytest.mark.timeout(120)


def _noise_uint8(seed: int, count: int, size: tuple[int, int] = IMAGE_SIZE) -> Tensor:
    """Seeded uint8 images [count, 3, H, W]: a smooth gradient plus noise, so JPEG sizes differ per image."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    ramp_HW = torch.linspace(0, 200, width).expand(height, width)
    noise_B3HW = torch.randint(0, 56, (count, 3, height, width), generator=generator)
    return (ramp_HW + noise_B3HW).to(torch.uint8)


def _png_b64(images_uint8_B3HW: Tensor, mode: str = "RGB") -> list[str]:
    encoded = []
    for pixels_3HW in images_uint8_B3HW:
        image = Image.fromarray(np.ascontiguousarray(pixels_3HW.permute(1, 2, 0).numpy())).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


def _direct(
    images_B3HW: Tensor, prompts: list[str], weights: dict[str, float] = JPEG_WEIGHTS
) -> RewardBreakdown:
    """The reference: workers.rewards called in this process, no server involved."""
    return combine_rewards(weights)(images_B3HW, prompts)


def _assert_http_scores_equal(payload: dict[str, Any], expected: RewardBreakdown) -> None:
    assert torch.equal(torch.tensor(payload["scores"], dtype=torch.float32), expected.total)
    assert payload["components"].keys() == expected.components.keys()
    for name, values in expected.components.items():
        assert torch.equal(torch.tensor(payload["components"][name], dtype=torch.float32), values), name


def _assert_breakdowns_equal(got: RewardBreakdown | dict[str, Any], expected: RewardBreakdown) -> None:
    total = got["total"] if isinstance(got, dict) else got.total
    components = got["components"] if isinstance(got, dict) else got.components
    assert torch.equal(total, expected.total)
    assert components.keys() == expected.components.keys()
    for name, values in expected.components.items():
        assert torch.equal(components[name], values), name


# ---- batching and equality with direct calls -------------------------------------------------------------


def test_concurrent_http_requests_are_batched_and_score_as_alone(
    jpeg_server: tuple[DeploymentHandle, str],
) -> None:
    _, url = jpeg_server
    num_threads, per_request = 8, 2
    requests = [
        (_noise_uint8(seed, per_request), [f"thread {seed} image {k}" for k in range(per_request)])
        for seed in range(num_threads)
    ]
    start_together = threading.Barrier(num_threads)

    def post(index: int) -> httpx.Response:
        images_uint8, prompts = requests[index]
        body = {"prompts": prompts, "images": _png_b64(images_uint8)}
        with httpx.Client(timeout=60.0) as client:
            start_together.wait()
            return client.post(f"{url}/score", json=body)

    with ThreadPoolExecutor(num_threads) as pool:
        responses = list(pool.map(post, range(num_threads)))

    assert [r.status_code for r in responses] == [200] * num_threads, [r.text for r in responses]
    batch_sizes = [r.json()["batch_size"] for r in responses]
    assert max(batch_sizes) > per_request, f"no request shared a reward call: {batch_sizes}"
    assert max(batch_sizes) <= MAX_BATCH_SIZE
    for (images_uint8, prompts), response in zip(requests, responses, strict=True):
        _assert_http_scores_equal(response.json(), _direct(images_uint8.float() / 255.0, prompts))


def test_handle_requests_in_flight_together_share_a_call_and_score_as_alone(
    jpeg_server: tuple[DeploymentHandle, str],
) -> None:
    handle, _ = jpeg_server
    generator = torch.Generator().manual_seed(1)
    requests = [(torch.rand(3, 3, *IMAGE_SIZE, generator=generator), [f"p{i}"] * 3) for i in range(4)]
    in_flight = [
        handle.score.remote(images, prompts) for images, prompts in requests
    ]  # all sent before any wait
    results = [response.result(timeout_s=60) for response in in_flight]

    assert max(result["batch_size"] for result in results) > 3
    for (images, prompts), result in zip(requests, results, strict=True):
        _assert_breakdowns_equal(result, _direct(images, prompts))


def test_request_larger_than_a_batch_is_split_and_joined(jpeg_server: tuple[DeploymentHandle, str]) -> None:
    handle, _ = jpeg_server
    images = torch.rand(MAX_BATCH_SIZE + 8, 3, *IMAGE_SIZE, generator=torch.Generator().manual_seed(2))
    prompts = [f"prompt {i}" for i in range(len(images))]
    result = handle.score.remote(images, prompts).result(timeout_s=60)
    assert result["batch_size"] <= MAX_BATCH_SIZE
    _assert_breakdowns_equal(result, _direct(images, prompts))


def test_client_over_handle_and_http_returns_the_direct_breakdown(
    jpeg_server: tuple[DeploymentHandle, str],
) -> None:
    handle, url = jpeg_server
    images = _noise_uint8(seed=3, count=5).float() / 255.0  # exactly representable in a PNG
    prompts = [f"prompt {i}" for i in range(5)]
    expected = _direct(images, prompts)
    _assert_breakdowns_equal(RewardClient(handle).score(images, prompts), expected)
    with RewardClient(url) as client:
        _assert_breakdowns_equal(client.score(images, prompts), expected)
        assert client.weights() == JPEG_WEIGHTS


def test_reward_subset_returns_its_components_and_their_weighted_sum(
    jpeg_server: tuple[DeploymentHandle, str],
) -> None:
    _, url = jpeg_server
    images_uint8 = _noise_uint8(seed=4, count=2)
    body = {"prompts": ["a", "b"], "images": _png_b64(images_uint8), "rewards": ["jpeg_incompressibility"]}
    payload = httpx.post(f"{url}/score", json=body, timeout=60).json()
    component = _direct(images_uint8.float() / 255.0, ["a", "b"]).components["jpeg_incompressibility"]
    assert list(payload["components"]) == ["jpeg_incompressibility"]
    assert payload["weights"] == {"jpeg_incompressibility": 0.5}
    assert torch.equal(torch.tensor(payload["components"]["jpeg_incompressibility"]), component)
    assert torch.equal(torch.tensor(payload["scores"], dtype=torch.float32), 0.5 * component)


def test_rewards_and_healthz_describe_the_server(jpeg_server: tuple[DeploymentHandle, str]) -> None:
    handle, url = jpeg_server
    assert httpx.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    description = httpx.get(f"{url}/rewards", timeout=30).json()
    assert description["rewards"] == JPEG_WEIGHTS
    assert description["image_size"] == list(IMAGE_SIZE)
    assert description["max_batch_size"] == MAX_BATCH_SIZE
    assert handle.describe.remote().result(timeout_s=30) == description


ANY_SIZE_WEIGHTS = {"jpeg_compressibility": 1.0}


@pytest.fixture(scope="module")
def any_size_server(serve_port: int) -> Iterator[tuple[DeploymentHandle, str]]:
    """A server without a configured image_size: any size, as long as one request's images share it."""
    yield start_reward_server(
        ANY_SIZE_WEIGHTS,
        port=serve_port,
        name="any_size",
        route_prefix="/any",
        num_cpus=0,
        batch_wait_timeout_s=0.3,
    )
    serve.delete("any_size")


def test_requests_of_different_sizes_in_one_batch_are_scored_per_size(
    any_size_server: tuple[DeploymentHandle, str],
) -> None:
    handle, _ = any_size_server
    small, large = _noise_uint8(5, 2, (16, 24)).float() / 255.0, _noise_uint8(6, 3, (40, 32)).float() / 255.0
    requests = [(small, ["s"] * 2), (large, ["l"] * 3)]
    in_flight = [handle.score.remote(images, prompts) for images, prompts in requests]  # meet in one batch
    for (images, prompts), response in zip(requests, in_flight, strict=True):
        result = response.result(timeout_s=60)
        assert result["batch_size"] == len(images)  # one reward call per size
        _assert_breakdowns_equal(result, _direct(images, prompts, ANY_SIZE_WEIGHTS))


def test_images_of_one_request_must_share_a_size(any_size_server: tuple[DeploymentHandle, str]) -> None:
    _, url = any_size_server
    mixed = _png_b64(_noise_uint8(7, 1, (16, 24))) + _png_b64(_noise_uint8(8, 1, (24, 16)))
    response = httpx.post(f"{url}/score", json={"prompts": ["a", "b"], "images": mixed}, timeout=30)
    assert response.status_code == 422
    payload = response.json()
    assert payload["field"] == "images[1]"
    assert "24x16" in payload["detail"] and "images[0] is 16x24" in payload["detail"]


def test_model_based_reward_gets_its_options_through_the_server(
    serve_port: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Keywords the server does not know (here ``options``) reach combine_rewards in the replica unchanged."""
    model_dir = ensure_tiny_reward_model("aesthetic", tmp_path_factory.mktemp("tiny_rewards"))
    weights = {"aesthetic": 1.0, "jpeg_compressibility": 0.1}
    options = {"aesthetic": RewardOptions(path=str(model_dir))}
    handle, _ = start_reward_server(
        weights, port=serve_port, name="model", route_prefix="/model", num_cpus=0, options=options
    )
    try:
        generator = torch.Generator().manual_seed(10)
        requests = [
            (torch.rand(2, 3, *IMAGE_SIZE, generator=generator), [f"a photo {i}", "a cat"]) for i in range(2)
        ]
        in_flight = [handle.score.remote(images, prompts) for images, prompts in requests]
        reference = combine_rewards(weights, options=options)
        for (images, prompts), response in zip(requests, in_flight, strict=True):
            result = response.result(timeout_s=60)
            expected = reference(images, prompts)
            # A network forward may round differently with another batch size or thread count: compare closely.
            torch.testing.assert_close(result["components"]["aesthetic"], expected.components["aesthetic"])
            assert torch.equal(
                result["components"]["jpeg_compressibility"], expected.components["jpeg_compressibility"]
            )
            torch.testing.assert_close(result["total"], expected.total)
    finally:
        serve.delete("model")


# ---- malformed requests: 4xx naming the field, never 5xx ---------------------------------------------------


def _one_png() -> list[str]:
    return _png_b64(_noise_uint8(9, 1))


MALFORMED: dict[str, tuple[Callable[[], dict[str, Any] | bytes], int, str, str]] = {
    # case: (body, status, field, text the detail must contain)
    "empty prompt list": (lambda: {"prompts": [], "images": []}, 422, "prompts", "empty"),
    "more images than prompts": (
        lambda: {"prompts": ["a"], "images": _one_png() * 2},
        422,
        "images",
        "2 entries but prompts has 1",
    ),
    "bad base64": (lambda: {"prompts": ["a"], "images": ["not base64!"]}, 422, "images[0]", "base64"),
    "base64 of a non-image": (
        lambda: {"prompts": ["a"], "images": [base64.b64encode(b"hello").decode()]},
        422,
        "images[0]",
        "PNG or JPEG",
    ),
    "data URL": (
        lambda: {"prompts": ["a"], "images": ["data:image/png;base64," + _one_png()[0]]},
        422,
        "images[0]",
        "prefix",
    ),
    "wrong image size": (
        lambda: {"prompts": ["a", "b"], "images": _one_png() + _png_b64(_noise_uint8(9, 1, (16, 32)))},
        422,
        "images[1]",
        "scores 32x32",
    ),
    "RGBA image": (
        lambda: {"prompts": ["a"], "images": _png_b64(_noise_uint8(9, 1), "RGBA")},
        422,
        "images[0]",
        "RGB",
    ),
    "unknown reward": (
        lambda: {"prompts": ["a"], "images": _one_png(), "rewards": ["aesthetic"]},
        422,
        "rewards",
        "'aesthetic'",
    ),
    "misspelled key": (
        lambda: {"prompts": ["a"], "images": _one_png(), "reward": ["x"]},
        422,
        "reward",
        "Extra",
    ),
    "missing images": (lambda: {"prompts": ["a"]}, 422, "images", "required"),
    "prompt not a string": (
        lambda: {"prompts": ["a", 3], "images": _one_png() * 2},
        422,
        "prompts[1]",
        "string",
    ),
    "not JSON": (lambda: b"{prompts: [", 422, "body", "JSON"),
    "body too large": (
        lambda: {"prompts": ["a"], "images": ["A" * MAX_BODY_BYTES]},
        413,
        "body",
        "max_body_bytes",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_http_request_gets_4xx_naming_the_field(
    jpeg_server: tuple[DeploymentHandle, str], case: str
) -> None:
    _, url = jpeg_server
    make_body, status, field, text = MALFORMED[case]
    body = make_body()
    if isinstance(body, bytes):
        response = httpx.post(
            f"{url}/score", content=body, headers={"content-type": "application/json"}, timeout=30
        )
    else:
        response = httpx.post(f"{url}/score", json=body, timeout=30)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["field"] == field, payload
    assert payload["detail"].startswith(f"{field}:") and text in payload["detail"], payload


def test_malformed_handle_request_raises_input_error(jpeg_server: tuple[DeploymentHandle, str]) -> None:
    handle, _ = jpeg_server
    images = torch.rand(2, 3, *IMAGE_SIZE)
    cases = [
        ((images, []), "prompts", "empty"),
        ((images, ["only one"]), "images_B3HW", "2 images but 1 prompts"),
        ((images * 255.0, ["a", "b"]), "images_B3HW", "[0, 1]"),
        ((torch.rand(2, 3, 16, 16), ["a", "b"]), "images_B3HW", "scores 32x32"),
        ((images, ["a", "b"], ["nope"]), "rewards", "unknown reward 'nope'"),
    ]
    for args, field, text in cases:
        with pytest.raises(RewardInputError) as caught:
            handle.score.remote(*args).result(timeout_s=30)
        assert f"{field}: " in str(caught.value) and text in str(caught.value), str(caught.value)


def test_unknown_reward_in_the_configuration_fails_before_any_replica_starts() -> None:
    with pytest.raises(
        ValueError, match="unknown reward.*'no_such_reward'.*valid rewards: .*aesthetic.*jpeg_compressibility"
    ):
        build_reward_app({"no_such_reward": 1.0})
    with pytest.raises(ValueError, match="max_batch_size"):
        build_reward_app({"jpeg_compressibility": 1.0}, max_batch_size=0)
