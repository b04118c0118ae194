"""A small pretrained epsilon-prediction DDPM on the digits: the shared "pretrained model" of the
sampling-side and training-side auxiliary methods (optimized time steps, Skip-Tuning, SIM-DMIS,
adversarial training).

It is a real diffusers ``UNet2DModel`` with a ``DDPMScheduler`` (linear betas, 1000 steps), trained
here and cached on disk in diffusers layout (``unet/`` + ``scheduler/``), so the code paths that
load a published DDPM directory load this one too (``load_ddpm``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from workers.aux.common.data import digits
from workers.aux.common.nets import small_unet
from workers.aux.common.runtime import progress


@dataclass(frozen=True)
class DdpmSpec:
    """Architecture and training recipe of the shared digits DDPM."""

    image_size: int = 16
    channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    train_steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    ema_decay: float = 0.999
    num_train_timesteps: int = 1000
    seed: int = 0
    # Bumped when the training code changes what a spec produces, so stale caches are not reused.
    # v2: the EMA warms up (v1 kept ~13% of the random init in the saved weights at decay 0.999 / 2000 steps).
    version: int = 2

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("SOLRL_AUX_CACHE", Path.home() / ".cache" / "solrl" / "aux"))


def make_scheduler(num_train_timesteps: int = 1000):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=1e-4,
                         beta_end=0.02, prediction_type="epsilon", clip_sample=False)


def load_ddpm(path: str | Path, device: torch.device | str = "cpu"):
    """A DDPM in diffusers layout (``unet/`` and ``scheduler/`` sub-folders): ours or a published one."""
    from diffusers import DDPMScheduler, UNet2DModel

    path = Path(path)
    if not (path / "unet" / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a diffusers DDPM directory (expected unet/config.json); "
                                "pass the folder that holds unet/ and scheduler/")
    unet = UNet2DModel.from_pretrained(path / "unet").to(device).eval()
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    return unet, scheduler


def train_ddpm(spec: DdpmSpec, out: Path, device: torch.device | str = "cpu", show_progress: bool = True) -> Path:
    """Train the DDPM on the digits train split (EMA weights saved) into ``out`` in diffusers layout."""
    device = torch.device(device)
    data = digits("train", size=spec.image_size).images.to(device)
    torch.manual_seed(spec.seed)  # module init uses the global RNG; pin it so the cache key fixes the weights
    unet = small_unet(spec.image_size, channels=spec.channels, layers_per_block=spec.layers_per_block).to(device)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    scheduler = make_scheduler(spec.num_train_timesteps)
    alphas = scheduler.alphas_cumprod.to(device)
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=spec.lr, weight_decay=0.0)
    warmup = max(1, spec.train_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine to 5% of lr
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / spec.train_steps))))
    unet.train()
    for step in progress(range(spec.train_steps), "train digits DDPM", show_progress):
        idx = torch.randint(0, len(data), (spec.batch_size,), generator=gen, device=device)
        x0 = data[idx]
        t = torch.randint(0, spec.num_train_timesteps, (spec.batch_size,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(unet(xt, t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        # EMA warm-up ((1 + s) / (10 + s) capped at ema_decay): the average forgets the random init
        # within the run instead of keeping ema_decay^steps of it.
        decay = min(spec.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
    unet.load_state_dict(ema)
    unet.eval()
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet")
    scheduler.save_pretrained(out / "scheduler")
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    return out


def pretrained_digits_ddpm(spec: DdpmSpec = DdpmSpec(), device: torch.device | str = "cpu", show_progress: bool = True):
    """The cached DDPM for ``spec`` (trained on first use, on the CPU so the weights are the same everywhere)."""
    path = cache_root() / f"ddpm_digits_{spec.key()}"
    if not (path / "unet" / "config.json").exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        train_ddpm(spec, tmp, device="cpu", show_progress=show_progress)
        tmp.replace(path) if not path.exists() else None
    return load_ddpm(path, device)
