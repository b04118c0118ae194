"""``python -m services.reward``: its arguments, and a real run that joins the test cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.reward.__main__ import parse_args, server_options
from workers.rewards import RewardOptions

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parents[3]


def test_arguments_become_server_options_and_reward_kwargs_pass_through() -> None:
    args = parse_args(
        [
            "--weights", '{"jpeg_compressibility": 1.0}',
            "--resources", '{"reward": 1}',
            "--image-size", "64x48",
            "--num-gpus", "0.5",
            "--reward-options", '{"aesthetic": {"path": "/models/aesthetic", "device": "cuda", "batch_size": 8}}',
        ]
    )  # fmt: skip
    options = server_options(args)
    assert args.weights == {"jpeg_compressibility": 1.0}
    assert options["resources"] == {"reward": 1} and options["num_gpus"] == 0.5
    assert options["image_size"] == (64, 48)
    # reaches combine_rewards(weights, options=...) through build_reward_app's pass-through keywords
    assert options["options"] == {
        "aesthetic": RewardOptions(path="/models/aesthetic", device="cuda", batch_size=8)
    }
    assert "options" not in server_options(parse_args(["--weights", '{"jpeg_compressibility": 1.0}']))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weights", "{jpeg"], "not valid JSON"),
        (["--weights", "[1]"], "expected a JSON object"),
        (["--weights", "{}", "--image-size", "64"], "HEIGHTxWIDTH"),
        (
            ["--weights", "{}", "--reward-options", '{"aesthetic": {"pth": "/m"}}'],
            "options of reward 'aesthetic'",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_module_serves_until_interrupted(ray_address: str, serve_port: int) -> None:
    """The command joins the running cluster, serves on its Serve proxy, and removes its app on Ctrl-C."""
    url = f"http://127.0.0.1:{serve_port}/cli"
    command = [
        sys.executable, "-m", "services.reward",
        "--weights", '{"jpeg_compressibility": 1.0}',
        "--address", ray_address,
        "--port", str(serve_port),
        "--name", "cli",
        "--route-prefix", "/cli",
        "--num-cpus", "0",
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in process.stdout:  # the pytest timeout bounds this if the line never comes
            if "reward server up" in line:
                break
        else:
            pytest.fail("the server exited before it came up")
        assert httpx.get(f"{url}/healthz", timeout=10.0).json() == {"status": "ok"}
        assert httpx.get(f"{url}/rewards", timeout=10.0).json()["rewards"] == {"jpeg_compressibility": 1.0}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output[-3000:]
    assert httpx.get(f"{url}/healthz", timeout=10.0).status_code == 404  # Ctrl-C removed the application
