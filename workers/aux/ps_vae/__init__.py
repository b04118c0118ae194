"""aux.ps_vae (see workers.aux.registry)."""
