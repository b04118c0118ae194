"""Auxiliary diffusion methods, one sub-package each, sharing code only through ``workers.aux.common``.

Every method package has ``config.py`` (its pydantic config, importable without torch, with
``smoke``/``quick``/``full`` presets) and ``experiment.py`` (``run(cfg, out, *, show_progress)``
returning the results dict). ``workers.aux.registry`` lists them; ``orchestration.aux_runner`` runs
them locally or on the Ray cluster.
"""
