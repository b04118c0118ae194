"""aux.nct (see workers.aux.registry)."""
