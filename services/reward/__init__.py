"""The reward server: a Ray Serve deployment over workers/rewards, and the client the training driver uses.

    from services.reward import RewardClient, start_reward_server

    handle, url = start_reward_server({"jpeg_compressibility": 1.0}, port=8001)
    client = RewardClient(handle)            # or RewardClient(url) over HTTP
    breakdown = client.score(images_B3HW, prompts)   # workers.rewards.RewardBreakdown

HTTP contract and configuration: services/reward/README.md.
"""

from services.reward.client import RewardClient
from services.reward.errors import RewardComputeError, RewardInputError, RewardRequestError, RewardServerError
from services.reward.server import RewardServer, ScoreRequest, build_reward_app, start_reward_server

__all__ = [
    "RewardClient",
    "RewardComputeError",
    "RewardInputError",
    "RewardRequestError",
    "RewardServer",
    "RewardServerError",
    "ScoreRequest",
    "build_reward_app",
    "start_reward_server",
]
