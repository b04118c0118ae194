"""The masked-diffusion LM generation endpoint: a Ray Serve deployment over workers.aux.fast_dllm.

    from services.dllm import start_dllm_server

    handle, url = start_dllm_server("runs/aux/fast_dllm/model", port=8002)
    # POST {url}/generate {"prompts": ["12+34="], "gen_length": 256, "cache": "dual", "threshold": 0.9}
"""

from services.dllm.app import DllmServer, GenerateRequest, build_dllm_app, start_dllm_server

__all__ = ["DllmServer", "GenerateRequest", "build_dllm_app", "start_dllm_server"]
