"""The consistency-model variant: consistency distillation (CD; Song et al. 2023, Alg. 2, with the LCM
parameterization of Luo et al. 2023) from an epsilon-prediction DPM teacher, with the same efficient
adversarial perturbation as the DPM case.

The paper (arXiv 2502.17099) proves that the CD objective has the same train/sample mismatch but its
released code has no CM variant, so the placement of delta is our choice (documented in
docs/methods/adversarial_train.md): delta perturbs the student's input x_{t_{n+1}}; the teacher's ODE
step starts from the same perturbed point x_{t_{n+1}} + sg(delta), so the pair stays on one teacher
trajectory (the analogue of the DPM's eps + sg(delta)/sigma target), and delta ascends the CD loss

    L_CD-AT = max_{||delta|| <= sqrt(d) eta} || f_theta(x_{n+1} + delta, t_{n+1}) - sg(f_theta^-(Phi(x_{n+1} + sg(delta)), t_n)) ||^2.

Shapes: B batch; ``x_BCHW`` images; ``t_B`` integer timesteps in [0, T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.aux.adversarial_train.perturbation import ascend_l2, ball_radius, epsilon_loss, project_l2_ball
from workers.aux.adversarial_train.training import (
    AdvSettings,
    AdvStats,
    Batch,
    EmaWeights,
    Learner,
    noisy_input,
)

SIGMA_DATA = 0.5  # LCM's boundary-condition constants (c_skip, c_out below)
TIMESTEP_SCALING = 10.0


def _bcast(v_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v_B.view(-1, *([1] * (like.dim() - 1)))


def boundary_coefficients(t_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip(t) = s_d^2 / ((c t)^2 + s_d^2), c_out(t) = c t / sqrt((c t)^2 + s_d^2): f(x, 0) = x exactly."""
    ct = t_B.to(torch.float64) * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (ct**2 + SIGMA_DATA**2)
    c_out = ct / (ct**2 + SIGMA_DATA**2).sqrt()
    return c_skip.float(), c_out.float()


def predicted_x0(eps_BCHW: torch.Tensor, x_BCHW: torch.Tensor, t_B: torch.Tensor,
                 alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (Tweedie, epsilon parameterization)."""
    a = _bcast(alphas_cumprod[t_B], x_BCHW)
    return (x_BCHW - (1 - a).sqrt() * eps_BCHW) / a.sqrt()


def consistency_function(unet: torch.nn.Module, x_BCHW: torch.Tensor, t_B: torch.Tensor,
                         alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """f_theta(x, t) = c_skip(t) x + c_out(t) x0_theta(x, t) (CM Eq. 5 with the LCM coefficients)."""
    c_skip, c_out = boundary_coefficients(t_B)
    x0 = predicted_x0(unet(x_BCHW, t_B).sample, x_BCHW, t_B, alphas_cumprod)
    return _bcast(c_skip, x_BCHW) * x_BCHW + _bcast(c_out, x_BCHW) * x0


@torch.no_grad()
def teacher_ddim_step(teacher: torch.nn.Module, x_BCHW: torch.Tensor, t_B: torch.Tensor, t_prev_B: torch.Tensor,
                      alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Phi: one deterministic DDIM step of the teacher's PF-ODE from t to t_prev (DDIM Eq. 12, eta 0)."""
    eps = teacher(x_BCHW, t_B).sample
    x0 = predicted_x0(eps, x_BCHW, t_B, alphas_cumprod)
    a_prev = _bcast(alphas_cumprod[t_prev_B], x_BCHW)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def cd_timesteps(t_B: torch.Tensor, skip: int, num_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Map uniform draws in [0, T) to the skipping grid t_{n+1} = n k - 1 (n >= 1) and t_n = max(t_{n+1} - k, 0)."""
    n = t_B % (num_timesteps // skip) + 1
    t_next = n * skip - 1
    return t_next, (t_next - skip).clamp_min(0)


@dataclass
class ConsistencyPair:
    """The student (trained by ``learner``), its EMA target theta^-, and the frozen teacher."""

    learner: Learner
    target: EmaWeights
    target_net: torch.nn.Module
    teacher: torch.nn.Module

    @classmethod
    def from_teacher(cls, teacher: torch.nn.Module, student: torch.nn.Module, lr: float, target_ema: float) -> ConsistencyPair:
        target_net = _frozen_copy(student)
        return cls(Learner(student, lr), EmaWeights(student, target_ema), target_net, teacher.eval())

    def refresh_target(self) -> None:
        """theta^- <- mu theta^- + (1 - mu) theta after every student update (CD Alg. 2)."""
        self.target.update(self.learner.unet)
        self.target_net.load_state_dict(self.target.state)


def _frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    out = copy.deepcopy(module).eval()
    out.requires_grad_(False)
    return out


def consistency_updates(pair: ConsistencyPair, batch: Batch, alphas_cumprod: torch.Tensor, skip: int,
                        adv: AdvSettings) -> AdvStats:
    """K student updates on one batch with delta on x_{t_{n+1}} (K = 1 or eta = 0: standard CD)."""
    t_next, t_prev = cd_timesteps(batch.t_B, skip, len(alphas_cumprod))
    x_next = noisy_input(batch.x0_BCHW, batch.eps_BCHW, t_next, alphas_cumprod)
    radius = ball_radius(adv.max_norm, x_next[0].numel())
    delta = torch.zeros_like(x_next)
    losses: list[float] = []
    delta_norm = grad_norm = 0.0
    for k in range(adv.steps):
        delta.requires_grad_(True)
        with torch.no_grad():
            x_prev = teacher_ddim_step(pair.teacher, x_next + delta.detach(), t_next, t_prev, alphas_cumprod)
            target = consistency_function(pair.target_net, x_prev, t_prev, alphas_cumprod)
        pred = consistency_function(pair.learner.unet, x_next + delta, t_next, alphas_cumprod)
        loss = epsilon_loss(pred, target).mean()
        loss.backward()
        losses.append(float(loss.detach()))
        last = k == adv.steps - 1
        if not last:
            grad = delta.grad.detach()
            delta = project_l2_ball(ascend_l2(delta.detach(), grad, adv.lr), radius)
            delta_norm = float(delta.flatten(1).norm(dim=1).mean())
            grad_norm = float(grad.flatten(1).norm(dim=1).mean())
        pair.learner.apply()
        pair.refresh_target()
        if last:
            break
    return AdvStats(tuple(losses), delta_norm, grad_norm)


@torch.no_grad()
def consistency_sample(unet: torch.nn.Module, noise_BCHW: torch.Tensor, steps: int, alphas_cumprod: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
    """Multistep consistency sampling (CM Alg. 1) on t_i = T - 1 - i T / steps, re-noising in between."""
    num = len(alphas_cumprod)
    times = [int(round(num - 1 - i * num / steps)) for i in range(steps)]
    x = noise_BCHW
    out = x
    for i, t in enumerate(times):
        t_B = torch.full((len(x),), t, dtype=torch.long)
        out = consistency_function(unet, x, t_B, alphas_cumprod)
        if i + 1 < steps:
            z = torch.randn(out.shape, generator=generator)
            x = noisy_input(out, z, torch.full((len(x),), times[i + 1], dtype=torch.long), alphas_cumprod)
    return out
