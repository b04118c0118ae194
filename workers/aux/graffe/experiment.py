"""Experiment of aux.graffe: the brief's smallest faithful experiment (aux_methods_b.md section 4(e)).

Node task (GAT on a random-partition graph with weak features) and graph task (GIN + mean pool on ER /
BA / grid graphs): linear-probe accuracy of Graffe against raw features, a random-init encoder, GraphMAE
and the z-shuffle ablation over fixed seeds, plus the Diff-InfoMax sanity check (conditional vs
unconditional DSM loss at matched t, -log DSM vs probe accuracy during training).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from workers.aux.common.runtime import cpu_threads, resolve_device
from workers.aux.graffe.config import GraffeConfig
from workers.aux.graffe.diffusion import VpSchedule
from workers.aux.graffe.report import reading, task_section
from workers.aux.graffe.tasks import graph_setup, node_setup, run_task


def run(cfg: GraffeConfig, out: Path, *, show_progress: bool = True) -> dict:
    """Run the enabled tasks into ``out`` (plots, encoder checkpoints) and return results + ``report_md``."""
    device = resolve_device(cfg.device)
    schedule = VpSchedule.from_diffusers(cfg.diffusion.num_train_timesteps, cfg.diffusion.beta_schedule)
    sections, summaries = [], {}
    with warnings.catch_warnings(), cpu_threads(cfg.num_threads):  # torch and the probes' BLAS
        # GraphUNet's A^2 step builds a sparse CSR tensor and torch warns about it (beta API)
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
        setups = [s for s, on in ((node_setup, cfg.node_task.enabled), (graph_setup, cfg.graph_task.enabled)) if on]
        for setup in setups:
            task = setup(cfg, device)
            res = run_task(cfg, task, schedule, out, show_progress)
            md, summaries[task.name] = task_section(res, task.data.num_features, out)
            sections.append(md)
    intro = ("Graffe pretrains an encoder E(masked graph) -> z by training a conditional graph U-Net denoiser "
             "D(x_t, A, t, z) of the node features; the frozen encoder is then linearly probed. Arms share data, "
             "seeds, probe and pretraining budget.\n")
    report = "\n".join([intro, *sections, reading(summaries)])
    return {"tasks": summaries, "report_md": report}
