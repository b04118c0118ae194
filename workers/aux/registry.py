"""The auxiliary methods: one flat table from name to config class, entry point and brief.

Config classes are imported by path so the job registry (``orchestration.jobs``) loads without
torch; ``experiment.run`` is imported only when a job runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.aux.common.config import AuxConfig

RunFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class AuxMethod:
    name: str
    config_class: str  # attribute of workers.aux.<name>.config
    title: str
    brief: str  # section of ../shared/research that specifies the algorithm
    implemented: bool = False

    @property
    def package(self) -> str:
        return f"workers.aux.{self.name}"

    def config_model(self) -> type[AuxConfig]:
        return getattr(importlib.import_module(f"{self.package}.config"), self.config_class)

    def run_fn(self) -> RunFn:
        """``run(cfg, out: Path, *, show_progress: bool) -> dict`` of the method's experiment."""
        return importlib.import_module(f"{self.package}.experiment").run


AUX_METHODS: dict[str, AuxMethod] = {m.name: m for m in (
    AuxMethod("timestep_opt", "TimestepOptConfig", "Optimized sampling time steps (Xue et al., CVPR 2024)",
              "aux_methods_a.md section 3", implemented=True),
    AuxMethod("skip_tuning", "SkipTuningConfig", "Skip-Tuning of UNet skip connections (ICML 2024)",
              "aux_methods_a.md section 4", implemented=True),
    AuxMethod("sim_recovery", "SimRecoveryConfig", "Single-index-model recovery with diffusion priors (SIM-DMIS, ICML 2025)",
              "aux_methods_b.md section 2", implemented=True),
    AuxMethod("adversarial_train", "AdversarialTrainConfig", "Adversarial training against distribution mismatch (ICLR 2025)",
              "aux_methods_a.md section 5", implemented=True),
    AuxMethod("nct", "NctConfig", "Noise Consistency Training: controls for one-step generators (NeurIPS 2025)",
              "aux_methods_a.md section 2", implemented=True),
    AuxMethod("fast_dllm", "FastDllmConfig", "Fast-dLLM: KV cache and parallel decoding for masked diffusion LMs",
              "aux_methods_a.md section 1", implemented=True),
    AuxMethod("vadd", "VaddConfig", "VADD: variational autoencoding discrete diffusion", "aux_methods_b.md section 3", implemented=True),
    AuxMethod("ps_vae", "PsVaeConfig", "PS-VAE: semantic-pixel latents from a representation encoder",
              "aux_methods_b.md section 1", implemented=True),
    AuxMethod("graffe", "GraffeConfig", "Graffe: graph representation learning by diffusion", "aux_methods_b.md section 4",
              implemented=True),
)}


def method_dir(name: str) -> Path:
    return Path(__file__).parent / name
