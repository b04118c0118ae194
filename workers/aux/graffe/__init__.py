"""aux.graffe (see workers.aux.registry)."""
