"""RewardClient against a real reward server with injected faults: retries, timeouts, and giving up.

The faults come from a test-only reward, ``InjectedFaults``, registered in the server's reward table under
a test-only name (``extra_rewards``). It is JPEG compressibility, except that the first calls for a key
fail or stall as its prompt commands ("fail=2 key=..." / "stall=1.2 key=..."): the prompt carries the
command because the reward runs in the replica's process, not in this one. This is fault injection at the
reward boundary; the server and client under test are the real ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle
from torch import Tensor

from services.reward import RewardClient, RewardRequestError, RewardServerError, start_reward_server
from tests.integration.reward.conftest import free_port
from workers.rewards import jpeg_compressibility

pytestmark = pytest.mark.timeout(120)

FAULTY = "test_injected_faults"


class InjectedFaults:
    """JPEG compressibility whose first calls for a key fail or stall, as ``prompts[0]`` commands."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}  # lives in the replica: one count per key across requests

    def __call__(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        command = dict(part.split("=", 1) for part in prompts[0].split())
        key = command["key"]
        call = self.calls[key] = self.calls.get(key, 0) + 1
        failures = int(command.get("fail", 0))
        if call <= failures:
            raise RuntimeError(f"injected fault {call} of {failures} for key {key}")
        if call == 1 and "stall" in command:
            time.sleep(float(command["stall"]))
        return jpeg_compressibility(images_B3HW, prompts)


@pytest.fixture(scope="module")
def faulty_server(serve_port: int) -> Iterator[tuple[DeploymentHandle, str]]:
    handle, url = start_reward_server(
        {FAULTY: 1.0},
        port=serve_port,
        name="faulty",
        route_prefix="/faulty",
        num_cpus=0,
        batch_wait_timeout_s=0.0,  # no batching partner is coming; don't add latency to the timing tests
        extra_rewards={FAULTY: InjectedFaults()},
    )
    yield handle, url
    serve.delete("faulty")


def _request(command: str) -> tuple[Tensor, list[str]]:
    """Two 32x32 images (exactly representable as PNG) and prompts carrying ``command`` for a fresh key."""
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0)).float() / 255.0
    return images, [f"{command} key={uuid.uuid4().hex}"] * 2


def _client(server: tuple[DeploymentHandle, str], transport: str, **options: float) -> RewardClient:
    handle, url = server
    return RewardClient(handle if transport == "handle" else url, **options)


@pytest.mark.parametrize("transport", ["handle", "http"])
def test_client_retries_until_the_reward_recovers(
    faulty_server: tuple[DeploymentHandle, str], transport: str
) -> None:
    images, prompts = _request("fail=2")
    client = _client(faulty_server, transport, attempts=3, base_delay_s=0.05)
    result = client.score(images, prompts)
    assert torch.equal(result.total, jpeg_compressibility(images, prompts))
    assert list(result.components) == [FAULTY]


@pytest.mark.parametrize("transport", ["handle", "http"])
def test_client_gives_up_naming_the_reward_and_the_last_error(
    faulty_server: tuple[DeploymentHandle, str], transport: str
) -> None:
    images, prompts = _request("fail=100")
    client = _client(faulty_server, transport, attempts=2, base_delay_s=0.05)
    with pytest.raises(RewardServerError) as caught:
        client.score(images, prompts)
    message = str(caught.value)
    assert not isinstance(caught.value, RewardRequestError)
    assert FAULTY in message and "after 2 attempt(s)" in message
    assert "injected fault 2 of 100" in message, message  # the *last* error, from the second attempt


@pytest.mark.parametrize("transport", ["handle", "http"])
def test_client_retries_a_call_that_times_out(
    faulty_server: tuple[DeploymentHandle, str], transport: str
) -> None:
    # The first call stalls 1.2 s, past the 0.8 s timeout; a retry is queued behind it and answers in time.
    images, prompts = _request("stall=1.2")
    client = _client(faulty_server, transport, attempts=4, base_delay_s=0.05, timeout_s=0.8)
    started = time.monotonic()
    result = client.score(images, prompts)
    assert torch.equal(result.total, jpeg_compressibility(images, prompts))
    assert 0.8 <= time.monotonic() - started < 10.0


@pytest.mark.parametrize("transport", ["handle", "http"])
def test_malformed_request_is_refused_without_retrying(
    faulty_server: tuple[DeploymentHandle, str], transport: str
) -> None:
    images, _ = _request("")
    client = _client(faulty_server, transport, attempts=5, base_delay_s=30.0)  # a retry would blow the time
    started = time.monotonic()
    with pytest.raises(RewardRequestError, match="images"):
        client.score(images, ["one prompt for two images"])
    assert time.monotonic() - started < 10.0


def test_unreachable_server_raises_after_the_attempts() -> None:
    client = RewardClient(f"http://127.0.0.1:{free_port()}", attempts=2, base_delay_s=0.01, timeout_s=2.0)
    with pytest.raises(
        RewardServerError, match=r"unknown: the server did not say which.*after 2 attempt.*ConnectError"
    ):
        client.score(torch.zeros(1, 3, 8, 8), ["a"])


def test_client_reads_the_configured_weights(faulty_server: tuple[DeploymentHandle, str]) -> None:
    for transport in ("handle", "http"):
        assert _client(faulty_server, transport).weights() == {FAULTY: 1.0}
