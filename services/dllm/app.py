"""Ray Serve deployment of a Fast-dLLM decoder: text prompts in, completions and decoding cost out.

HTTP (FastAPI ingress): ``POST /generate`` with ``GenerateRequest``; ``GET /healthz``. Python: the handle's
``generate.remote(prompts, options_dict)``. The replica loads the model directory once
(``workers.aux.fast_dllm.checkpoint.load_checkpoint``: this project's models or a LLaDA/Dream directory)
and decodes each request as one batch with the requested cache mode and unmask rule.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time (see services/reward).

import logging
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle

from workers.aux.fast_dllm.serve import DllmGenerator, GenerateOptions

logger = logging.getLogger(__name__)


class GenerateRequest(BaseModel):
    """Body of ``POST /generate``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: list[str] = Field(min_length=1, max_length=64, description="Text prompts, one completion each.")
    gen_length: int = Field(256, ge=1, le=4096, description="Generated tokens (answer + EOS fill).")
    block_length: int = Field(32, ge=1, description="Semi-autoregressive block size; divides gen_length.")
    cache: Literal["none", "prefix", "dual"] = Field("dual", description="Fast-dLLM cache mode.")
    threshold: float | None = Field(0.9, gt=0, le=1, description="Confidence threshold tau; null: fixed rule.")
    tokens_per_step: int = Field(1, ge=1, description="Fixed rule only: tokens unmasked per step.")

    def options(self) -> GenerateOptions:
        return GenerateOptions(self.gen_length, self.block_length, self.cache, self.threshold, self.tokens_per_step)


app = FastAPI(title="solrl dLLM server", description="Masked-diffusion LM generation with Fast-dLLM decoding.")


@serve.deployment
@serve.ingress(app)
class DllmServer:
    """One replica: a ``DllmGenerator`` for ``model_dir`` on ``device``."""

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        self.generator = DllmGenerator(model_dir, device=device)
        self.model_dir = model_dir

    @app.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok", "model_dir": self.model_dir}

    @app.post("/generate")
    def generate_http(self, body: dict) -> Any:
        try:
            request = GenerateRequest.model_validate(body)
            return self.generator.generate(request.prompts, request.options())
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            return JSONResponse(status_code=422, content={"detail": f"{field}: {first['msg']}", "field": field})
        except ValueError as err:  # bad prompt characters, block/gen mismatch
            return JSONResponse(status_code=422, content={"detail": str(err), "field": "body"})

    def generate(self, prompts: list[str], options: dict | None = None) -> dict[str, Any]:
        """Handle API: same fields as the HTTP body, minus ``prompts``."""
        return self.generator.generate(prompts, GenerateRequest(prompts=prompts, **(options or {})).options())


def build_dllm_app(model_dir: str | Path, *, device: str = "cpu", num_replicas: int = 1, num_cpus: float = 1.0,
                   num_gpus: float = 0.0) -> Application:
    """The dLLM server as a Serve application. The directory is checked here, before a replica starts."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json: give a model directory written by aux.fast_dllm "
                         "(runs/aux/fast_dllm/model) or a LLaDA/Dream checkpoint directory")
    return DllmServer.options(num_replicas=num_replicas,
                              ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus}
                              ).bind(str(path.resolve()), device)


def start_dllm_server(model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, name: str = "dllm",
                      route_prefix: str = "/dllm", **app_options: Any) -> tuple[DeploymentHandle, str]:
    """Deploy on the connected Ray cluster (starting Serve's proxy on host:port if needed); (handle, base URL)."""
    if not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix must start with '/', got {route_prefix!r}")
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(build_dllm_app(model_dir, **app_options), name=name, route_prefix=route_prefix)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return handle, f"http://{url_host}:{port}{route_prefix.rstrip('/')}"
