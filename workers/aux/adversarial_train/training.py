"""Fine-tuning updates of an epsilon-prediction DPM: standard, input perturbation, and the efficient
adversarial training of the official code (``adv_train_util.AdvTrainLoop.adv_forward_backward`` with
``adv_training_type='fast'``).

Every public update function makes optimizer updates through one ``Learner``, so arms are matched by
counting ``Learner.updates``. Shapes: B batch; ``x0_BCHW`` clean images in [-1, 1].
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from workers.aux.adversarial_train.perturbation import (
    ascend_l2,
    ball_radius,
    epsilon_loss,
    input_perturbed_noise,
    perturbed_target,
    project_l2_ball,
)


@dataclass(frozen=True)
class AdvSettings:
    """K inner steps, ascent step size on delta, and eta (ball radius sqrt(d) * eta)."""

    steps: int = 3
    lr: float = 0.1
    max_norm: float = 0.1


@dataclass(frozen=True)
class Batch:
    """One training batch: clean images, integer timesteps and the noise."""

    x0_BCHW: torch.Tensor
    t_B: torch.Tensor
    eps_BCHW: torch.Tensor


def batch_stream(images_NCHW: torch.Tensor, batch_size: int, num_timesteps: int,
                 generator: torch.Generator) -> Iterator[Batch]:
    """Endless batches drawn from one generator, so arms with the same seed see the same batches in order."""
    while True:
        idx = torch.randint(0, len(images_NCHW), (batch_size,), generator=generator)
        x0 = images_NCHW[idx]
        t = torch.randint(0, num_timesteps, (batch_size,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        yield Batch(x0, t, eps)


class EmaWeights:
    """Exponential moving average of a module's floating-point state (decay 0 tracks the raw weights)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.state[k].copy_(v)

    def copy_into(self, module: torch.nn.Module) -> torch.nn.Module:
        """A deep copy of ``module`` holding the EMA weights (in eval mode)."""
        out = copy.deepcopy(module)
        out.load_state_dict(self.state)
        return out.eval()


@dataclass
class Learner:
    """A model with its optimizer and EMA; ``apply`` is the one place an update happens."""

    unet: torch.nn.Module
    lr: float
    ema_decay: float = 0.0
    updates: int = 0
    opt: torch.optim.Optimizer = field(init=False)
    ema: EmaWeights = field(init=False)

    def __post_init__(self) -> None:
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=self.lr, weight_decay=0.0)
        self.ema = EmaWeights(self.unet, self.ema_decay)
        self.unet.train()

    def apply(self) -> None:
        """Optimizer step on the accumulated gradients, zero them, update the EMA (as the official loop)."""
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.unet)
        self.updates += 1


def _sigma(alphas_cumprod: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
    return (1 - alphas_cumprod[t_B]).sqrt()


def noisy_input(x0_BCHW: torch.Tensor, eps_BCHW: torch.Tensor, t_B: torch.Tensor,
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM forward process, Ho et al. Eq. 4)."""
    a = alphas_cumprod[t_B].view(-1, *([1] * (x0_BCHW.dim() - 1)))
    return a.sqrt() * x0_BCHW + (1 - a).sqrt() * eps_BCHW


def standard_update(learner: Learner, batch: Batch, alphas_cumprod: torch.Tensor) -> float:
    """One update on || eps_theta(x_t, t) - eps ||^2 (Ho et al. Eq. 14)."""
    x_t = noisy_input(batch.x0_BCHW, batch.eps_BCHW, batch.t_B, alphas_cumprod)
    loss = epsilon_loss(learner.unet(x_t, batch.t_B).sample, batch.eps_BCHW).mean()
    loss.backward()
    learner.apply()
    return float(loss.detach())


def input_perturbation_update(learner: Learner, batch: Batch, alphas_cumprod: torch.Tensor,
                              gamma: float, generator: torch.Generator) -> float:
    """One DDPM-IP update: x_t built from eps + gamma xi, regressed onto eps."""
    xi = torch.randn(batch.eps_BCHW.shape, generator=generator)
    x_t = noisy_input(batch.x0_BCHW, input_perturbed_noise(batch.eps_BCHW, xi, gamma), batch.t_B, alphas_cumprod)
    loss = epsilon_loss(learner.unet(x_t, batch.t_B).sample, batch.eps_BCHW).mean()
    loss.backward()
    learner.apply()
    return float(loss.detach())


@dataclass(frozen=True)
class AdvStats:
    """What the official loop logs: the loss of each inner step, ||delta|| and ||grad delta|| (mean over B)."""

    losses: tuple[float, ...]
    delta_norm: float
    delta_grad_norm: float


def adversarial_updates(learner: Learner, batch: Batch, alphas_cumprod: torch.Tensor, adv: AdvSettings) -> AdvStats:
    """K updates of theta on one batch, delta ascending the loss in between (efficient AT, Free-AT style).

    Inner step k: loss(x_t + delta, eps + sg(delta)/sigma_t), one backward giving gradients for theta and
    delta; unless k = K, delta <- Proj_ball(delta + lr g/||g||) and theta is updated. The K-th gradient
    makes the K-th update. Step 1 has delta = 0, so K = 1 is standard training.
    """
    x_t = noisy_input(batch.x0_BCHW, batch.eps_BCHW, batch.t_B, alphas_cumprod)
    sigma = _sigma(alphas_cumprod, batch.t_B)
    radius = ball_radius(adv.max_norm, x_t[0].numel())
    delta = torch.zeros_like(x_t)
    losses: list[float] = []
    delta_norm = grad_norm = 0.0
    for k in range(adv.steps):
        delta.requires_grad_(True)
        pred = learner.unet(x_t + delta, batch.t_B).sample
        loss = epsilon_loss(pred, perturbed_target(batch.eps_BCHW, delta, sigma)).mean()
        loss.backward()
        losses.append(float(loss.detach()))
        if k == adv.steps - 1:
            break
        grad = delta.grad.detach()
        delta = project_l2_ball(ascend_l2(delta.detach(), grad, adv.lr), radius)
        delta_norm = float(delta.flatten(1).norm(dim=1).mean())
        grad_norm = float(grad.flatten(1).norm(dim=1).mean())
        learner.apply()
    learner.apply()
    return AdvStats(tuple(losses), delta_norm, grad_norm)
