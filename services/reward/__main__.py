"""Run the reward server standalone.

    python -m services.reward --weights '{"jpeg_compressibility": 1.0}' --port 8001

Connects to the Ray cluster named by ``--address`` (or RAY_ADDRESS, or a running local cluster) and starts
a new local one if there is none, deploys the server, and serves until interrupted (Ctrl-C removes the
application again). ``main(argv)`` is the entry point a CLI can call.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from services.reward.server import (
    DEFAULT_BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    start_reward_server,
)
from workers.rewards import RewardOptions

__all__ = ["main", "parse_args", "server_options"]

logger = logging.getLogger("services.reward")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _reward_options(text: str) -> dict[str, RewardOptions]:
    """{reward name: {RewardOptions field: value}} as JSON -> {reward name: RewardOptions}."""
    options: dict[str, RewardOptions] = {}
    for name, spec in _json_object(text).items():
        if not isinstance(spec, dict):
            raise argparse.ArgumentTypeError(
                f"options of reward {name!r} must be a JSON object, got {spec!r}"
            )
        try:
            options[name] = RewardOptions(**spec)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(f"options of reward {name!r}: {err}") from err
    return options


def _image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 512x512, got {text!r}") from err
    return height, width


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--weights`` is required, everything else has the server's defaults."""
    parser = argparse.ArgumentParser(prog="python -m services.reward", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=_json_object, required=True, help="reward name -> weight, JSON")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (0.0.0.0 for all interfaces)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("--name", default="reward", help="Serve application name")
    parser.add_argument("--route-prefix", default="/", help="URL prefix of the HTTP API")
    parser.add_argument("--num-replicas", type=int, default=1)
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="images per reward call"
    )
    parser.add_argument("--batch-wait-timeout-s", type=float, default=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica")
    parser.add_argument(
        "--resources", type=_json_object, default=None, help='custom resources, e.g. {"reward": 1}'
    )
    parser.add_argument(
        "--image-size", type=_image_size, default=None, help="HEIGHTxWIDTH every image must have"
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--device", default="cpu", help="device of the reward call: cpu, cuda, cuda:N")
    parser.add_argument(
        "--reward-options",
        type=_reward_options,
        default=None,
        help='model-based rewards\' RewardOptions, e.g. {"aesthetic": {"path": "/models/aesthetic", "device": "cuda"}}',
    )
    return parser.parse_args(argv)


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``start_reward_server`` (besides the weights) from parsed arguments."""
    return {
        "host": args.host,
        "port": args.port,
        "name": args.name,
        "route_prefix": args.route_prefix,
        "num_replicas": args.num_replicas,
        "max_batch_size": args.max_batch_size,
        "batch_wait_timeout_s": args.batch_wait_timeout_s,
        "num_cpus": args.num_cpus,
        "num_gpus": args.num_gpus,
        "resources": args.resources,
        "image_size": args.image_size,
        "max_body_bytes": args.max_body_bytes,
        "device": args.device,
        # Passed through build_reward_app to combine_rewards(weights, options=...); omitted when not given.
        **({"options": args.reward_options} if args.reward_options is not None else {}),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Start the server and keep it up until Ctrl-C."""
    import ray
    from ray import serve

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ray.init(address=args.address)
        _, url = start_reward_server(args.weights, **server_options(args))
        logger.info("reward server up: %s (POST %s/score, GET %s/rewards)", url, url, url)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # also while deploying: never leave a half-started application behind
        logger.info("stopping the reward server")
        if ray.is_initialized():
            serve.delete(args.name)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
