"""The dLLM generation endpoint on a real local Ray cluster with Serve: a tiny random model served over HTTP.

The cluster is private to this test (``address="local"``, its own short ``_temp_dir``, a free port, 0-CPU
replica), as in tests/integration/reward/conftest.py.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the dLLM server needs Ray Serve: pip install 'ray[serve]'")
httpx = pytest.importorskip("httpx", reason="the HTTP test needs httpx")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from services.dllm import build_dllm_app, start_dllm_server  # noqa: E402
from workers.aux.common.masked_diffusion import TransformerSpec, build_transformer  # noqa: E402
from workers.aux.fast_dllm.checkpoint import save_llada_layout  # noqa: E402
from workers.aux.fast_dllm.serve import DllmGenerator, GenerateOptions  # noqa: E402
from workers.aux.fast_dllm.task import CharTokenizer  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_model_dir(path: Path) -> Path:
    tok = CharTokenizer()
    model = build_transformer(TransformerSpec(vocab_size=tok.vocab_size, dim=16, n_layers=1, n_heads=2), seed=0)
    return save_llada_layout(model, path, mask_token_id=tok.mask_id, eos_token_id=tok.eos_id,
                             extra={"symbols": list(tok.symbols), "prompt_len": 8})


def test_build_app_refuses_a_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no config.json"):
        build_dllm_app(tmp_path)


def test_generate_endpoint_over_http(tmp_path: Path) -> None:
    model_dir = _tiny_model_dir(tmp_path / "model")
    temp_dir = tempfile.mkdtemp(prefix="rt_", dir="/tmp")  # short: Ray's Unix sockets live under it
    port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.delenv("RAY_ADDRESS", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
                 object_store_memory=100 * 2**20)
        try:
            handle, url = start_dllm_server(model_dir, port=port, num_cpus=0)
            assert httpx.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
            body = {"prompts": ["12+34=", "7+8="], "gen_length": 16, "block_length": 8, "cache": "dual",
                    "threshold": 0.9}
            reply = httpx.post(f"{url}/generate", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            data = reply.json()
            # The server adds transport only: the same model in this process gives the same completions.
            local = DllmGenerator(model_dir).generate(body["prompts"], GenerateOptions(16, 8, "dual", 0.9))
            assert data["completions"] == local["completions"] and data["nfe"] == local["nfe"]
            bad = httpx.post(f"{url}/generate", json={**body, "cache": "full"}, timeout=30)
            assert bad.status_code == 422 and bad.json()["field"] == "cache"
            bad = httpx.post(f"{url}/generate", json={**body, "prompts": ["abc"]}, timeout=30)
            assert bad.status_code == 422 and "alphabet" in bad.json()["detail"]
            assert handle.generate.remote(["1+1="], {"gen_length": 8, "block_length": 8}).result()["nfe"] >= 1
        finally:
            serve.shutdown()
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
