"""RL objectives as pure tensor functions: advantages, candidate selection, DiffusionNFT and Flow-GRPO losses."""

from workers.objectives.advantages import compute_advantages, zero_std_fraction
from workers.objectives.grpo import GrpoLossOutput, gaussian_mean_kl, grpo_loss, sde_window
from workers.objectives.nft import NftLossOutput, ema_decay, nft_loss, update_old_params
from workers.objectives.selection import SELECTION_MODES, select_candidates, selection_fidelity

__all__ = [
    "SELECTION_MODES",
    "GrpoLossOutput",
    "NftLossOutput",
    "compute_advantages",
    "ema_decay",
    "gaussian_mean_kl",
    "grpo_loss",
    "nft_loss",
    "sde_window",
    "select_candidates",
    "selection_fidelity",
    "update_old_params",
    "zero_std_fraction",
]
