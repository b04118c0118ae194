"""aux.adversarial_train (see workers.aux.registry)."""
