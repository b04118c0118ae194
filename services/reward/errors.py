"""Typed errors of the reward server and its client.

The server raises ``RewardInputError`` (bad request: the HTTP layer answers 4xx, the client never retries) and
``RewardComputeError`` (a reward function failed: 500, the client retries). The client raises
``RewardServerError`` once its retries are spent, and ``RewardRequestError`` at once for a bad request.

Both server-side errors cross process boundaries (Ray pickles them into the caller's ``RayTaskError``), so
their constructor arguments are kept in ``args``: an exception whose ``__init__`` takes other arguments than
its ``args`` cannot be unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["RewardComputeError", "RewardInputError", "RewardRequestError", "RewardServerError"]


class RewardInputError(ValueError):
    """A score request the server refuses; ``field`` names the offending field (``prompts``, ``images[3]``)."""

    def __init__(self, field: str, message: str, status_code: int = 422) -> None:
        super().__init__(field, message, status_code)
        self.field = field
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RewardComputeError(RuntimeError):
    """A reward call on a batch failed inside the server; ``rewards`` are the rewards that were being computed."""

    def __init__(self, rewards: Sequence[str], message: str) -> None:
        super().__init__(tuple(rewards), message)
        self.rewards = tuple(rewards)
        self.message = message

    def __str__(self) -> str:
        return f"reward(s) {list(self.rewards)} failed: {self.message}"


class RewardServerError(RuntimeError):
    """Raised by ``RewardClient`` when a score call failed on every attempt (or could not be retried)."""


class RewardRequestError(RewardServerError):
    """Raised by ``RewardClient`` without retrying when the server refused the request as malformed (4xx)."""
