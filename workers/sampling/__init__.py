"""Flow-matching samplers for RL rollouts: grids, seeded noise, step rules (ODE, SDE, CPS) and the loop.

Every step rule is a pure function of explicit inputs (x, v, t, t_next, noise) in its own module; see
:mod:`.sampler` for the loop and the precision rule.
"""

from workers.sampling.cps import CpsStep, cps_log_prob, cps_mean_std, cps_step
from workers.sampling.errors import SamplingInputError
from workers.sampling.noise import candidate_seed, initial_noise, step_noise, step_seed
from workers.sampling.ode import dpm2_step, euler_step, predict_x0
from workers.sampling.sampler import ProgressFn, SampleResult, Solver, VelocityFn, sample
from workers.sampling.sde import SdeStep, gaussian_log_prob, sde_mean_std, sde_step
from workers.sampling.timesteps import flow_sigmas, flux_mu, time_shift_exponential

__all__ = [
    "CpsStep",
    "ProgressFn",
    "SampleResult",
    "SamplingInputError",
    "SdeStep",
    "Solver",
    "VelocityFn",
    "candidate_seed",
    "cps_log_prob",
    "cps_mean_std",
    "cps_step",
    "dpm2_step",
    "euler_step",
    "flow_sigmas",
    "flux_mu",
    "gaussian_log_prob",
    "initial_noise",
    "predict_x0",
    "sample",
    "sde_mean_std",
    "sde_step",
    "step_noise",
    "step_seed",
    "time_shift_exponential",
]
