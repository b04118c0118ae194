"""The typed error a reward raises when scoring itself fails (as opposed to bad input or config).

Bad inputs and bad options raise ``ValueError`` (see ``validation.py`` and ``options.py``); a reward that
was built fine but could not produce scores (a remote judge timed out, answered garbage, or returned an HTTP
error) raises :class:`RewardError`, which names the reward so a multi-reward caller can tell which term failed.
"""

from __future__ import annotations

__all__ = ["RewardError"]


class RewardError(RuntimeError):
    """Scoring failed inside reward ``reward``; ``str(err)`` starts with the reward name."""

    def __init__(self, reward: str, message: str) -> None:
        super().__init__(f"reward {reward!r}: {message}")
        self.reward = reward
        self.message = message
