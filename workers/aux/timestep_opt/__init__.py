"""aux.timestep_opt (see workers.aux.registry)."""
