"""Problems, grid search on validation digits and metrics for the SIM-DMIS experiment.

One ``Problems`` batch holds the signals, their sensing matrices and measurements; every arm sees
the same batch. ``run_arm`` evaluates one arm for one hyper-parameter per problem row (so a whole
grid search is one batched pass) and reports the NFE of one reconstruction, read off the prior's
counter rather than assumed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from workers.aux.common.data import digits
from workers.aux.common.metrics import cosine_similarity, psnr
from workers.aux.sim_recovery import ddim
from workers.aux.sim_recovery.estimators import Arm, SimHyper, estimate, start_point
from workers.aux.sim_recovery.measurements import Link, gaussian_matrices, measure
from workers.aux.sim_recovery.prior import DiffusionPrior


def held_out_signals(num_val: int, num_test: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation and test signals x*: disjoint slices of the digits test split, which the DDPM never saw."""
    held_out = digits("test", size=size).images
    if num_val + num_test > len(held_out):
        raise ValueError(f"data.num_val + data.num_test must be <= {len(held_out)}, got {num_val} + {num_test}")
    return held_out[:num_val], held_out[num_val: num_val + num_test]


@dataclass(frozen=True)
class Problems:
    x_BCHW: torch.Tensor  # ground-truth signals x*, only for scoring
    A_BMN: torch.Tensor
    y_BM: torch.Tensor


def make_problems(x_BCHW: torch.Tensor, m: int, link: Link, noise_std: float, seed: int) -> Problems:
    """Gaussian A (seeded by ``(seed, m)``, so both links see the same A) and ``y = f(A x* + e)``."""
    gen_A = torch.Generator().manual_seed(seed * 100_003 + m)
    gen_e = torch.Generator().manual_seed(seed * 100_003 + m + 7919 * (1 + ("sign", "cubic").index(link)))
    A_BMN = gaussian_matrices(x_BCHW.shape[0], m, x_BCHW[0].numel(), gen_A)
    y_BM = measure(x_BCHW.flatten(1).cpu(), A_BMN, link, noise_std, gen_e)
    return Problems(x_BCHW, A_BMN, y_BM)


@dataclass(frozen=True)
class ArmRun:
    images: torch.Tensor  # (rows, C, H, W) reconstructions, on the CPU
    nfe: int  # network evaluations of one reconstruction


def run_arm(arm: Arm, problems: Problems, c_s_R: torch.Tensor, c_s_prime_R: torch.Tensor, rows_per_problem: int,
            inversion_steps: int, sampling_steps: int, prior: DiffusionPrior, batch_size: int) -> ArmRun:
    """Reconstruct every (problem, hyper) row: row ``i`` is problem ``i // rows_per_problem``.

    Rows go through the network ``batch_size`` at a time; each chunk must cost the same NFE (an
    arm whose cost depended on the batch would be miscounted, so that raises).
    """
    index_R = torch.arange(len(c_s_R)) // rows_per_problem
    outs, nfes = [], set()
    for start in range(0, len(index_R), batch_size):
        sl = slice(start, start + batch_size)
        hyper = SimHyper(c_s_R[sl], c_s_prime_R[sl], inversion_steps, sampling_steps)
        before = prior.nfe
        outs.append(estimate(arm, problems.A_BMN[index_R[sl]], problems.y_BM[index_R[sl]], hyper, prior).cpu())
        nfes.add(prior.nfe - before)
    if len(nfes) != 1:
        raise RuntimeError(f"arm {arm} cost a different NFE per chunk: {sorted(nfes)}")
    return ArmRun(torch.cat(outs), nfes.pop())


def scores(images: torch.Tensor, x_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR (data range 2, images in [-1, 1]) and cosine similarity to x*."""
    ref = x_BCHW.cpu()
    return {"psnr": psnr(images, ref), "cosine": cosine_similarity(images, ref)}


@dataclass(frozen=True)
class GridChoice:
    c_s: float  # nan for arms that do not use C_s
    c_s_prime: float
    val_psnr: float


def grid_search(arm: Arm, problem_sets: list[Problems], c_s_grid: list[float], c_s_prime_grid: list[float],
                inversion_steps: int, sampling_steps: int, prior: DiffusionPrior, batch_size: int) -> GridChoice:
    """The (C_s, C_s') pair of the grid with the best mean validation PSNR for ``arm``.

    ``problem_sets`` holds the validation problems of every m: the paper tunes C_s and C_s' per
    dataset and model, not per m, and t* follows m through ``C_s / sqrt(m)``. Arms that do not
    use C_s (linear, SIM-DMFIS) search C_s' only.
    """
    uses_c_s = arm in ("sim_dms", "sim_dmis")
    pairs = list(itertools.product(c_s_grid if uses_c_s else [float("nan")], c_s_prime_grid))
    psnr_sum_P = torch.zeros(len(pairs), dtype=torch.float64)
    count = 0
    for problems in problem_sets:
        n = problems.x_BCHW.shape[0]
        # problem-major rows: row k * P + j is problem k under pair j
        c_s_R = torch.tensor([p[0] if uses_c_s else 1.0 for p in pairs], dtype=torch.float64).repeat(n)
        c_s_prime_R = torch.tensor([p[1] for p in pairs], dtype=torch.float64).repeat(n)
        run = run_arm(arm, problems, c_s_R, c_s_prime_R, len(pairs), inversion_steps, sampling_steps, prior,
                      batch_size)
        ref = problems.x_BCHW.cpu().repeat_interleave(len(pairs), dim=0)
        psnr_sum_P += psnr(run.images, ref).reshape(n, len(pairs)).sum(0)
        count += n
    best = int(psnr_sum_P.argmax())
    return GridChoice(pairs[best][0], pairs[best][1], float(psnr_sum_P[best] / count))


def cycle_error(problems: Problems, hyper: SimHyper, prior: DiffusionPrior) -> torch.Tensor:
    """``||G_{T->t*}(G-dagger_{t*}(x_{t*})) - x_{t*}|| / ||x_{t*}||`` per problem: the brief's inversion check.

    Deterministic DDIM inversion followed by the reverse DDIM path on the same grid should land back
    near the start (an SDEdit-style "inversion" that adds fresh noise would not).
    """
    x, t_B = start_point(problems.A_BMN, problems.y_BM, hyper, prior)
    up = ddim.invert(x, t_B, hyper.inversion_steps, prior, prior.schedule)
    t_T = torch.full_like(t_B, prior.schedule.t_max)
    back = ddim.transport(up, ddim.time_grid(t_T, t_B, hyper.inversion_steps), prior, prior.schedule)
    return ((back - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).cpu()


def nearest_train_psnr(images: torch.Tensor, train_BCHW: torch.Tensor) -> torch.Tensor:
    """PSNR of each image to its nearest (L2) training digit: the memorisation yardstick."""
    d_NT = torch.cdist(images.flatten(1).double(), train_BCHW.flatten(1).double().cpu())
    nearest = train_BCHW.cpu()[d_NT.argmin(1)]
    return psnr(images, nearest)
