"""aux.skip_tuning (see workers.aux.registry)."""
