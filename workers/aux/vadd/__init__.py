"""aux.vadd (see workers.aux.registry)."""
