"""The learner: owns the trainable policy, runs one optimizer step per iteration, exports weights.

The policy is the base transformer plus two LoRA adapters (``default`` trains, ``old`` is the
sampling policy, an EMA of ``default``), or, with LoRA off, full weights plus frozen copies of the
old policy and the base reference. Objectives:

- NFT (DiffusionNFT, Sol-RL's loss): trains on the clean BF16 samples x0 at shuffled timesteps of
  the sampling grid; needs no log-probs.
- GRPO (Flow-GRPO): re-evaluates the stored SDE transitions' log-probs under the current policy.

Legend: B samples, T trained timesteps, C/H/W latent dims.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from workers.generation import PolicyWeights
from workers.models.base import Conditioning, ModelAdapter
from workers.models.lora import (
    OLD_ADAPTER,
    TRAIN_ADAPTER,
    active_adapter,
    adapter_parameters,
    add_policy_lora,
    lora_layer_deltas,
)
from workers.objectives import ema_decay, grpo_loss, nft_loss, update_old_params
from workers.objectives.grpo import gaussian_mean_kl
from workers.sampling import gaussian_log_prob, sde_mean_std


@dataclass
class LearnerSettings:
    objective: Literal["nft", "grpo"] = "nft"
    lora: bool = True
    lora_rank: int = 32
    lora_alpha: float = 64.0
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    timestep_fraction: float = 0.6
    micro_batch_size: int = 8
    old_decay_type: int = 1
    ema_decay: float = 0.9
    nft_beta: float = 1.0
    nft_kl_beta: float = 1e-4
    adv_clip: float = 5.0
    grpo_clip_range: float = 1e-4
    grpo_kl_beta: float = 0.04
    grpo_noise_level: float = 0.7
    compile: bool = False  # torch.compile the trained transformer (one graph per adapter state)
    # Recompute each block's activations in backward instead of keeping them: one more forward, for micro-batches
    # whose activations would not fit beside a 12B model's weights.
    gradient_checkpointing: bool = False
    # The scaled-dot-product-attention kernel of the learner's forward and backward ("auto": see attention_backend).
    attention_backend: AttentionBackend = "auto"


AttentionBackend = Literal["auto", "flash", "efficient", "cudnn", "math"]


def attention_backend(name: AttentionBackend) -> contextlib.AbstractContextManager:
    """Restrict scaled_dot_product_attention to one kernel.

    ``auto`` is torch's choice without cuDNN's kernel: on an H200 (torch 2.11, CUDA 13) cuDNN's attention
    backward failed inside FLUX.1-dev's learner step (``mha_graph.execute`` under CUDA_LAUNCH_BLOCKING, cuBLAS
    errors and illegal accesses after it otherwise), where flash and memory-efficient attention passed
    (docs/results/iteration.md, session 7). ``cudnn`` still selects it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    if name == "auto":
        return sdpa_kernel([kernels["flash"], kernels["efficient"], kernels["math"]])
    if name not in kernels:
        raise ValueError(f"train.attention_backend must be auto or one of {', '.join(kernels)}, got {name!r}")
    return sdpa_kernel(kernels[name])


@dataclass
class TrainBatch:
    """BF16 samples and their advantages. GRPO also needs the stored SDE trajectory."""

    cond: Conditioning
    latents_BCHW: torch.Tensor
    advantages_B: torch.Tensor
    sigmas: torch.Tensor
    trajectory_BSCHW: torch.Tensor | None = None
    log_probs_BT: torch.Tensor | None = None
    stochastic_steps: list[int] = field(default_factory=list)
    # Data-parallel shards: where this shard starts in the global batch, and the global size.
    sample_offset: int = 0
    global_num_samples: int | None = None


class Learner:
    def __init__(self, adapter: ModelAdapter, settings: LearnerSettings, *, seed: int) -> None:
        self.adapter = adapter
        self.settings = settings
        self.seed = seed
        self.step = 0  # optimizer steps taken = policy version
        attention_backend(settings.attention_backend)  # an unknown kernel fails here, not at the first step
        self.transformer: nn.Module = copy.deepcopy(adapter.transformer)
        if settings.gradient_checkpointing:
            enable = getattr(self.transformer, "enable_gradient_checkpointing", None)
            if enable is None or not getattr(self.transformer, "_supports_gradient_checkpointing", False):
                raise ValueError(f"train.gradient_checkpointing: {type(self.transformer).__name__} does not support "
                                 "gradient checkpointing; set it to false")
            # Backward recomputes a block with the adapter active then: the trained one, which active_adapter
            # restores on exit, so the recomputed forward is the one that was differentiated.
            enable()
        self._old: nn.Module | None = None
        self._ref: nn.Module | None = None
        if settings.lora:
            add_policy_lora(self.transformer, adapter.lora_target_modules, settings.lora_rank, settings.lora_alpha,
                            seed=seed)
            trainable = list(adapter_parameters(self.transformer, TRAIN_ADAPTER).values())
        else:
            self.transformer.float().requires_grad_(True)
            self._old = copy.deepcopy(self.transformer).requires_grad_(False)
            self._ref = copy.deepcopy(adapter.transformer).requires_grad_(False)
            trainable = list(self.transformer.parameters())
        self.transformer.train()
        if settings.compile and adapter.device.type == "cuda":  # CPU inductor needs a C++ toolchain: skipped
            # In place, so state-dict keys and the LoRA parameters are unchanged. Switching the active adapter
            # (theta / old / reference) changes module attributes dynamo guards on: one graph per state.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
            self.transformer.compile()
        self.trainable = trainable
        self.optimizer = torch.optim.AdamW(
            trainable, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay, eps=settings.eps
        )
        self.ema = [p.detach().clone() for p in trainable]

    # ---- weights out ----------------------------------------------------------------------
    @property
    def sampling_adapter(self) -> str:
        # NFT samples from the EMA'd old policy; GRPO's ratio is against the policy that sampled,
        # which is the current one.
        return OLD_ADAPTER if self.settings.objective == "nft" else TRAIN_ADAPTER

    def policy_weights(self) -> PolicyWeights:
        """The sampling policy at the current version, in the form workers merge."""
        if self.settings.lora:
            return PolicyWeights(self.step, lora=lora_layer_deltas(self.transformer, self.sampling_adapter))
        source = self._old if self.settings.objective == "nft" else self.transformer
        dtype = self.adapter.dtype
        return PolicyWeights(self.step, full={k: v.detach().to(dtype).cpu().clone()
                                              for k, v in source.state_dict().items()})  # type: ignore[union-attr]

    def ema_weights(self) -> PolicyWeights:
        """The EMA of the trained weights (the paper evaluates with these)."""
        with self._swapped(self.ema):
            if self.settings.lora:
                return PolicyWeights(self.step, lora=lora_layer_deltas(self.transformer, TRAIN_ADAPTER))
            dtype = self.adapter.dtype
            return PolicyWeights(self.step, full={k: v.detach().to(dtype).cpu().clone()
                                                  for k, v in self.transformer.state_dict().items()})

    class _Swap:
        def __init__(self, params: list[nn.Parameter], values: list[torch.Tensor]) -> None:
            self.params, self.values = params, values

        def __enter__(self) -> None:
            self.saved = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p, v in zip(self.params, self.values, strict=True):
                    p.copy_(v)

        def __exit__(self, *exc: object) -> None:
            with torch.no_grad():
                for p, v in zip(self.params, self.saved, strict=True):
                    p.copy_(v)

    def _swapped(self, values: list[torch.Tensor]) -> Learner._Swap:
        return Learner._Swap(self.trainable, values)

    # ---- velocities of the three policies ----------------------------------------------------
    def _velocity(self, which: str, x: torch.Tensor, t_B: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.adapter.dtype
        x_in = x.to(dtype)
        if self.settings.lora:
            adapter_name = {"theta": TRAIN_ADAPTER, "old": OLD_ADAPTER, "ref": None}[which]
            with active_adapter(self.transformer, adapter_name):
                return self.adapter.velocity(x_in, t_B, cond, transformer=self.transformer).float()
        model = {"theta": self.transformer, "old": self._old, "ref": self._ref}[which]
        return self.adapter.velocity(x.to(next(model.parameters()).dtype), t_B, cond, transformer=model).float()

    # ---- one update ----------------------------------------------------------------------
    def train_step(self, batch: TrainBatch, iteration: int) -> dict[str, float]:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with attention_backend(self.settings.attention_backend):  # backward (and its recomputation) inside too
            if self.settings.objective == "nft":
                metrics = self._accumulate_nft(batch, iteration)
            else:
                metrics = self._accumulate_grpo(batch)
        metrics = self._all_reduce(metrics)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.settings.max_grad_norm)
        metrics["grad_norm"] = float(grad_norm)
        if math.isfinite(metrics["grad_norm"]):
            self.optimizer.step()
        self.step += 1
        self._after_update()
        metrics["learner_seconds"] = time.perf_counter() - start
        return metrics

    def _all_reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        """Sum gradients (already weighted by the global batch) and metrics over data-parallel ranks."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return metrics
        for p in self.trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
        keys = sorted(k for k in metrics if k != "train_timesteps")
        packed = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(packed)
        return {**metrics, **dict(zip(keys, packed.tolist(), strict=True))}

    def _after_update(self) -> None:
        with torch.no_grad():
            d = self.settings.ema_decay
            for e, p in zip(self.ema, self.trainable, strict=True):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        decay = ema_decay(self.step - 1, self.settings.old_decay_type)
        if self.settings.lora:
            old = adapter_parameters(self.transformer, OLD_ADAPTER)
            new = adapter_parameters(self.transformer, TRAIN_ADAPTER)
            names = sorted(old)
            update_old_params(
                [old[n] for n in names],
                [new[n.replace(f".{OLD_ADAPTER}.", f".{TRAIN_ADAPTER}.")] for n in names],
                decay,
            )
        else:
            update_old_params(list(self._old.parameters()), list(self.transformer.parameters()), decay)  # type: ignore[union-attr]

    def _micro_batches(self, size: int) -> list[slice]:
        mb = self.settings.micro_batch_size
        return [slice(lo, min(lo + mb, size)) for lo in range(0, size, mb)]

    def _accumulate_nft(self, batch: TrainBatch, iteration: int) -> dict[str, float]:
        s = self.settings
        device = self.adapter.device
        x0_all = batch.latents_BCHW.to(device, torch.float32)
        num_samples = x0_all.shape[0]
        global_samples = batch.global_num_samples or num_samples
        grid = batch.sigmas[:-1].to(torch.float32)  # the sampling grid's timesteps (t > 0)
        num_t = max(1, int(len(grid) * s.timestep_fraction))
        # Each sample's timesteps and noise come from its own generator, seeded by its global index,
        # so a data-parallel shard draws exactly what a single learner would.
        order_BT = torch.empty(num_samples, num_t, dtype=torch.long)
        eps_BT = torch.empty(num_samples, num_t, *x0_all.shape[1:])
        for i in range(num_samples):
            gen = torch.Generator().manual_seed(hash_ints(self.seed, iteration, batch.sample_offset + i))
            order_BT[i] = torch.randperm(len(grid), generator=gen)[:num_t]
            eps_BT[i] = torch.randn((num_t, *x0_all.shape[1:]), generator=gen)
        slices = self._micro_batches(num_samples)
        # moved once, not per micro-batch and timestep: the loop below should only queue GPU work
        eps_BT, t_BT, cond_all = eps_BT.to(device), grid[order_BT].to(device), batch.cond.to(device)
        sums = _MetricSums(("loss", "policy_loss", "kl", "r_mean", "nonfinite"), device)
        for j in range(num_t):
            for sl in slices:
                x0 = x0_all[sl]
                t_B = t_BT[sl, j]
                eps = eps_BT[sl, j]
                t_b = t_B.view(-1, *([1] * (x0.ndim - 1)))
                x_t = (1 - t_b) * x0 + t_b * eps
                cond = cond_all.index(list(range(sl.start, sl.stop)))
                with torch.no_grad():
                    v_old = self._velocity("old", x_t, t_B, cond)
                    v_ref = self._velocity("ref", x_t, t_B, cond)
                v_theta = self._velocity("theta", x_t, t_B, cond)
                out = nft_loss(
                    v_theta, v_old, v_ref, x_t, x0, t_B, batch.advantages_B[sl].to(device),
                    beta=s.nft_beta, adv_clip=s.adv_clip, kl_beta=s.nft_kl_beta,
                )
                weight = (sl.stop - sl.start) / global_samples / num_t
                (out.loss * weight).backward()
                sums.add(out, weight)
        return {**sums.floats(), "train_timesteps": float(num_t)}

    def _accumulate_grpo(self, batch: TrainBatch) -> dict[str, float]:
        s = self.settings
        if batch.trajectory_BSCHW is None or batch.log_probs_BT is None:
            raise ValueError("GRPO needs the SDE trajectory and log-probs of the regenerated samples")
        device = self.adapter.device
        sigmas = batch.sigmas.to(torch.float32)
        sigma_max = float(sigmas[1])
        steps = batch.stochastic_steps
        num_samples = batch.trajectory_BSCHW.shape[0]
        global_samples = batch.global_num_samples or num_samples
        slices = self._micro_batches(num_samples)
        cond_all = batch.cond.to(device)
        sums = _MetricSums(("loss", "policy_loss", "kl", "clip_fraction", "approx_kl"), device)
        for j, k in enumerate(steps):
            t, t_next = float(sigmas[k]), float(sigmas[k + 1])
            for sl in slices:
                x_k = batch.trajectory_BSCHW[sl, k].to(device, torch.float32)
                x_next = batch.trajectory_BSCHW[sl, k + 1].to(device, torch.float32)
                t_B = torch.full((x_k.shape[0],), t, device=device)
                cond = cond_all.index(list(range(sl.start, sl.stop)))
                v_theta = self._velocity("theta", x_k, t_B, cond)
                mean, std = sde_mean_std(x_k, v_theta, t, t_next, s.grpo_noise_level, sigma_max)
                log_prob = gaussian_log_prob(x_next, mean, std)
                kl = None
                if s.grpo_kl_beta > 0:
                    with torch.no_grad():
                        v_ref = self._velocity("ref", x_k, t_B, cond)
                        mean_ref, _ = sde_mean_std(x_k, v_ref, t, t_next, s.grpo_noise_level, sigma_max)
                    kl = gaussian_mean_kl(mean, mean_ref, std.flatten()).unsqueeze(1)
                out = grpo_loss(
                    log_prob.unsqueeze(1), batch.log_probs_BT[sl, j : j + 1].to(device),
                    batch.advantages_B[sl].to(device), clip_range=s.grpo_clip_range, kl_BT=kl,
                    kl_beta=s.grpo_kl_beta,
                )
                weight = (sl.stop - sl.start) / global_samples / len(steps)
                (out.loss * weight).backward()
                sums.add(out, weight)
        return {**sums.floats(), "train_timesteps": float(len(steps))}

    # ---- checkpoint state ------------------------------------------------------------------
    def state_dict(self) -> dict:
        trainable_names = [n for n, p in self.transformer.named_parameters() if p.requires_grad]
        state = {
            "step": self.step,
            "transformer": {k: v for k, v in self.transformer.state_dict().items()
                            if self.settings.lora is False or "lora_" in k},
            "optimizer": self.optimizer.state_dict(),
            "ema": [e.clone() for e in self.ema],
            "trainable_names": trainable_names,
        }
        if self._old is not None:
            state["old"] = self._old.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.transformer.load_state_dict(state["transformer"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema = [e.clone() for e in state["ema"]]
        self.step = int(state["step"])
        if self._old is not None:
            self._old.load_state_dict(state["old"])


def hash_ints(*values: int) -> int:
    """A stable 63-bit seed from integers (Python's hash() is salted per process)."""
    import hashlib

    digest = hashlib.blake2b(b"".join(int(v).to_bytes(8, "little", signed=True) for v in values), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1)


class _MetricSums:
    """Weighted sums of a loss's metrics, kept on the device: reading each one as a float after every
    micro-batch would make the host wait for the GPU there, so the loop could never queue work ahead (what
    matters where kernel launches, not GEMMs, bound the step: small models). One read at the end of the step."""

    def __init__(self, keys: tuple[str, ...], device: torch.device) -> None:
        self.values = {k: torch.zeros((), dtype=torch.float64, device=device) for k in keys}

    def add(self, out: object, weight: float) -> None:
        for key, total in self.values.items():
            total += torch.as_tensor(getattr(out, key)).detach().to(total.device, torch.float64) * weight

    def floats(self) -> dict[str, float]:
        keys = list(self.values)
        return dict(zip(keys, torch.stack([self.values[k] for k in keys]).cpu().tolist(), strict=True))
