"""A one-step generator distilled from the shared digits DDPM: z ~ N(0, I) -> image in one forward pass.

The teacher is ``pretrained_digits_ddpm`` sampled with deterministic DDIM (eta = 0), which makes the
noise -> image map a function; the student is a diffusers ``UNet2DModel`` (initialised from the
teacher's weights, called at one fixed timestep) regressed onto that map with an l2 loss. It is the
frozen "pretrained one-step generator" of methods that need one (NCT), cached in diffusers layout
(``generator/`` sub-folder) so that ``load_one_step_generator`` loads ours or a user's directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workers.aux.common.ddpm import DdpmSpec, cache_root, pretrained_digits_ddpm
from workers.aux.common.runtime import progress


@dataclass(frozen=True)
class OneStepSpec:
    """Teacher, DDIM pairs and regression recipe of the distilled one-step generator."""

    teacher: DdpmSpec = field(default_factory=DdpmSpec)
    ddim_steps: int = 10
    num_pairs: int = 2048
    train_steps: int = 600
    batch_size: int = 128
    lr: float = 1e-3
    timestep: int = 999  # the student is the teacher's UNet called at this (fixed) timestep
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


class OneStepGenerator(nn.Module):
    """``x = G(z)``: a ``UNet2DModel`` evaluated at a fixed timestep, so it is a plain map of z."""

    def __init__(self, unet, timestep: int) -> None:
        super().__init__()
        self.unet = unet
        self.timestep = int(timestep)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.unet(z, self.timestep).sample


@torch.no_grad()
def ddim_sample(unet, scheduler, z: torch.Tensor, steps: int) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from noise ``z`` with the DDPM's eps-prediction UNet."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config, clip_sample=False, set_alpha_to_one=True)
    ddim.set_timesteps(steps)
    x = z
    for t in ddim.timesteps:
        x = ddim.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)


def distil_one_step(spec: OneStepSpec, out: Path, show_progress: bool = True) -> Path:
    """Regress a one-step student onto the teacher's DDIM map and save it (diffusers layout) into ``out``."""
    teacher, scheduler = pretrained_digits_ddpm(spec.teacher, show_progress=show_progress)
    size = teacher.config.sample_size
    gen = torch.Generator().manual_seed(spec.seed)
    z_all = torch.randn(spec.num_pairs, 1, size, size, generator=gen)
    x_all = torch.cat([ddim_sample(teacher, scheduler, zb, spec.ddim_steps)
                       for zb in progress(z_all.split(512), "DDIM pairs for one-step generator", show_progress)])
    from diffusers import UNet2DModel

    student = UNet2DModel.from_config(teacher.config)
    student.load_state_dict(teacher.state_dict())  # start from the teacher's features (as distillation does)
    student.train()
    model = OneStepGenerator(student, spec.timestep)
    opt = torch.optim.AdamW(student.parameters(), lr=spec.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / spec.train_steps)))
    for _ in progress(range(spec.train_steps), "distil one-step generator", show_progress):
        idx = torch.randint(0, spec.num_pairs, (spec.batch_size,), generator=gen)
        loss = F.mse_loss(model(z_all[idx]), x_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
    student.eval()
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out / "generator")
    (out / "one_step.json").write_text(json.dumps({"timestep": spec.timestep, "spec": asdict(spec)}, indent=2))
    return out


def load_one_step_generator(path: str | Path, device: torch.device | str = "cpu") -> OneStepGenerator:
    """A one-step generator directory: ``generator/`` (diffusers UNet2DModel) and ``one_step.json`` (timestep)."""
    from diffusers import UNet2DModel

    path = Path(path)
    if not (path / "generator" / "config.json").exists() or not (path / "one_step.json").exists():
        raise FileNotFoundError(
            f"{path} is not a one-step generator directory (expected generator/config.json and one_step.json); "
            "pass a folder written by workers.aux.common.one_step.distil_one_step or save_one_step_generator")
    unet = UNet2DModel.from_pretrained(path / "generator").to(device).eval()
    timestep = int(json.loads((path / "one_step.json").read_text())["timestep"])
    return OneStepGenerator(unet, timestep).eval()


def save_one_step_generator(model: OneStepGenerator, path: str | Path) -> Path:
    """Write ``model`` in the layout ``load_one_step_generator`` reads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.unet.save_pretrained(path / "generator")
    (path / "one_step.json").write_text(json.dumps({"timestep": model.timestep}, indent=2))
    return path


def pretrained_one_step_generator(spec: OneStepSpec = OneStepSpec(), device: torch.device | str = "cpu",
                                  show_progress: bool = True) -> OneStepGenerator:
    """The cached one-step generator for ``spec`` (distilled on first use, on the CPU)."""
    path = cache_root() / f"one_step_digits_{spec.key()}"
    if not (path / "generator" / "config.json").exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        distil_one_step(spec, tmp, show_progress=show_progress)
        tmp.replace(path) if not path.exists() else None
    return load_one_step_generator(path, device)
