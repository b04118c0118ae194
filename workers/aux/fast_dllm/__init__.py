"""aux.fast_dllm (see workers.aux.registry)."""
