"""VLM judge against a stub OpenAI-compatible server started on 127.0.0.1 inside the test.

The stub stands in for the external boundary (a vLLM server, which cannot run in unit tests); it is allowed
here by the testing rules and only answers canned chat-completions bodies. ``test_vlm_judge_live.py`` runs
the same reward against a real vLLM server when one is given.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from workers.rewards import RewardError, RewardOptions, get_reward
from workers.rewards.vlm_judge import DEFAULT_QUESTION, parse_yes_score

Responder = Callable[[dict[str, Any]], tuple[int, Any, float]]  # request body -> (status, body, delay seconds)


class StubServer:
    """A threaded HTTP server on 127.0.0.1 answering POST /v1/chat/completions via ``responder``."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    status, answer, delay = stub.responder(body)
                    time.sleep(delay)
                    payload = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub() -> Iterator[Callable[[Responder], StubServer]]:
    servers: list[StubServer] = []

    def start(responder: Responder) -> StubServer:
        servers.append(StubServer(responder))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _text_answer(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}]}


def _logprob_answer(first_tokens: list[tuple[str, float]], leading: list[str] = ()) -> dict[str, Any]:
    """A vLLM-style body whose first answer token has ``first_tokens`` as its top logprobs."""
    content = [{"token": tok, "logprob": -0.01, "top_logprobs": [{"token": tok, "logprob": -0.01}]} for tok in leading]
    top = [{"token": t, "logprob": lp} for t, lp in first_tokens]
    content.append({"token": first_tokens[0][0], "logprob": first_tokens[0][1], "top_logprobs": top})
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes"}, "logprobs": {"content": content}}]}


def _judge(server: StubServer, **extra: Any):
    return get_reward("vlm_judge", RewardOptions(extra={"base_url": server.base_url, "model": "judge-7b", **extra}))


def _images(batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 24, generator=torch.Generator().manual_seed(0))


def test_logprobs_give_probability_of_yes(stub) -> None:
    tokens = [("Yes", math.log(0.6)), (" yes", math.log(0.05)), ("No", math.log(0.3)), ("YES", math.log(0.01))]
    server = stub(lambda body: (200, _logprob_answer(tokens, leading=[" ", "\n"]), 0.0))
    scores = _judge(server)(_images(), ["a cat", "a dog", "a car"])
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    torch.testing.assert_close(scores, torch.full((3,), 0.66))


def test_text_answers_without_logprobs(stub) -> None:
    answers = {"a cat": "Yes.", "a dog": "no, it shows a horse", "a car": "**YES**"}

    def respond(body: dict[str, Any]) -> tuple[int, Any, float]:
        question = body["messages"][0]["content"][1]["text"]
        prompt = next(p for p in answers if f": {p}?" in question)
        return 200, _text_answer(answers[prompt]), 0.0

    server = stub(respond)
    scores = _judge(server)(_images(), ["a cat", "a dog", "a car"])
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 1.0]))


def test_request_shape(stub) -> None:
    server = stub(lambda body: (200, _text_answer("yes"), 0.0))
    images = _images(2)
    _judge(server, api_key="secret", question="Is this {prompt}? yes/no")(images, ["a red apple", "x"])
    request = next(r for r in server.requests if "a red apple" in r["messages"][0]["content"][1]["text"])
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["model"] == "judge-7b" and request["logprobs"] is True and request["temperature"] == 0.0
    image_part, text_part = request["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Is this a red apple? yes/no"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert decoded.shape == (16, 24, 3)
    expected = (images[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(decoded, expected)  # PNG is lossless: the judge sees the exact pixels


def test_default_question() -> None:
    assert DEFAULT_QUESTION.format(prompt="a cat") == "Does this image show: a cat? Answer yes or no."


def test_concurrency_is_bounded(stub) -> None:
    # Each answer takes 0.25 s so the two workers overlap even on a loaded machine.
    server = stub(lambda body: (200, _text_answer("yes"), 0.25))
    scores = _judge(server, max_concurrency=2)(_images(6), [f"p{i}" for i in range(6)])
    assert scores.tolist() == [1.0] * 6 and len(server.requests) == 6
    assert server.max_in_flight == 2


def test_timeout_raises_reward_error(stub) -> None:
    server = stub(lambda body: (200, _text_answer("yes"), 1.0))
    judge = _judge(server, timeout_seconds=0.2)
    start = time.monotonic()
    with pytest.raises(RewardError, match=r"reward 'vlm_judge': request to .*/v1/chat/completions timed out after 0.2 s") as info:
        judge(_images(1), ["a cat"])
    assert info.value.reward == "vlm_judge"
    assert time.monotonic() - start < 0.9  # failed at the timeout, not after the server's answer


def test_http_error_and_bad_answers(stub) -> None:
    cases = [
        (500, {"error": "model crashed"}, r"answered HTTP 500: .*model crashed"),
        (200, "not json", r"cannot read the answer"),
        (200, {"choices": []}, r"no choices\[0\]"),
        (200, _text_answer("Maybe, hard to say"), r"does not start with yes or no"),
    ]
    for status, body, match in cases:
        server = stub(lambda _body, s=status, b=body: (s, b, 0.0))
        with pytest.raises(RewardError, match=rf"reward 'vlm_judge': .*{match}"):
            _judge(server)(_images(1), ["a cat"])


def test_connection_refused_fails_fast() -> None:
    # Port 9 (discard) on loopback has no listener here; the judge must fail, not hang.
    judge = get_reward(
        "vlm_judge", RewardOptions(extra={"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout_seconds": 5})
    )
    with pytest.raises(RewardError, match=r"reward 'vlm_judge': request to http://127.0.0.1:9/v1/chat/completions failed"):
        judge(_images(1), ["a cat"])


def test_parse_yes_score_units() -> None:
    assert parse_yes_score(_logprob_answer([("No", -0.1), ("Yes", math.log(0.25))])) == pytest.approx(0.25)
    assert parse_yes_score(_logprob_answer([("No", -0.01)])) == 0.0  # "yes" outside the top-k counts as 0
    assert parse_yes_score(_text_answer("  'no'")) == 0.0
    with pytest.raises(ValueError, match="does not start with yes or no"):
        parse_yes_score(_text_answer("nobody knows"))


@pytest.mark.parametrize(
    ("extra", "path", "match"),
    [
        ({"model": "m"}, None, r"needs RewardOptions.extra\['base_url'\]"),
        ({"base_url": "http://x/v1"}, None, r"needs RewardOptions.extra\['model'\]"),
        ({"base_url": "127.0.0.1:8000", "model": "m"}, None, "http:// or https://"),
        ({"base_url": "http://x/v1", "model": "m", "timeout_seconds": 0}, None, "timeout_seconds"),
        ({"base_url": "http://x/v1", "model": "m", "max_concurrency": 0}, None, "max_concurrency"),
        ({"base_url": "http://x/v1", "model": "m", "question": "Is it?"}, None, r"\{prompt\}"),
        ({"base_url": "http://x/v1", "model": "m", "temperature": 1.0}, None, r"unknown RewardOptions.extra key\(s\) \['temperature'\]"),
        ({"base_url": "http://x/v1", "model": "m"}, "/models/judge", "loads no files"),
    ],
)
def test_option_validation(extra: dict, path: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_reward("vlm_judge", RewardOptions(path=path, extra=extra))


def test_oddly_shaped_logprobs_raise_reward_error(stub) -> None:
    body = {"choices": [{"logprobs": {"content": [{"token": "Yes", "top_logprobs": [{"token": "Yes"}]}]}}]}
    server = stub(lambda _body: (200, body, 0.0))
    with pytest.raises(RewardError, match="cannot read the answer"):
        _judge(server)(_images(1), ["a cat"])
