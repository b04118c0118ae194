"""aux.sim_recovery (see workers.aux.registry)."""
