"""`solrl bench iteration`: seconds per phase of one RL iteration, Sol-RL against the naive BF16 schemes.

One GPU, one prompt group, the same model, LoRA and learner for every scheme:
- ``solrl``: N candidates at ``explore_steps`` in low precision (fp8/nvfp4), decode + reward all N,
  regenerate the best/worst K in BF16 at ``train_steps`` from the same seeds, decode + reward those K,
  a learner step on the K, and the LoRA weight refresh of both sampling copies (re-quantization included);
- ``naive_scaling`` (BF16 K-of-N): N candidates in BF16 at ``train_steps``, decode + reward N, learner on
  the K selected, refresh of the BF16 copy;
- ``diffusionnft`` (K-of-K): K candidates in BF16 at ``train_steps``, decode + reward K, learner, refresh.

The parts are the ones a run uses (``PolicyCopy``, ``Learner``, ``select_extremes``); the transformer is
the published architecture with random weights; the reward stack is the family's real VAE decoder plus a
CLIP ViT-H/14 image tower (PickScore's size), both random-weight, so its cost is real while its scores
are meaningless (candidates are selected by them all the same).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from orchestration.bench.arch import CONFIG_DIR, build_adapter, build_transformer, random_conditioning
from orchestration.bench.timing import seconds_once
from workers.compile import CompileScope, compile_model
from workers.generation import PolicyCopy, PolicyWeights, SamplingSettings
from workers.learner import Learner, LearnerSettings, TrainBatch
from workers.models.base import Conditioning, ModelAdapter

log = logging.getLogger(__name__)


@dataclass
class IterationRow:
    scheme: str
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def rollout_seconds(self) -> float:
        return sum(v for k, v in self.phases.items() if k.startswith(("stage", "sample")))

    @property
    def total_seconds(self) -> float:
        return sum(self.phases.values())


class RewardStack(nn.Module):
    """VAE decode + CLIP image tower + a linear head: the cost of an image reward (PickScore-sized)."""

    def __init__(self, device: torch.device, small: bool = False) -> None:
        super().__init__()
        import diffusers
        import transformers

        vae_cfg = json.loads((CONFIG_DIR / "sd3_vae.json").read_text())
        clip_cfg = json.loads((CONFIG_DIR / "clip_vit_h14_vision.json").read_text())
        if small:  # CPU smoke tests: same classes and data path, a fraction of the size
            vae_cfg.update(block_out_channels=[32, 32, 32, 32], layers_per_block=1, norm_num_groups=8)
            clip_cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                            image_size=56, projection_dim=32)
        torch.manual_seed(0)
        with torch.device(device):
            self.vae = diffusers.AutoencoderKL.from_config({k: v for k, v in vae_cfg.items() if not k.startswith("_")})
            self.clip = transformers.CLIPVisionModelWithProjection(
                transformers.CLIPVisionConfig(**{k: v for k, v in clip_cfg.items() if not k.startswith("_")}))
        self.vae.to(torch.bfloat16).eval().requires_grad_(False)
        self.clip.to(torch.bfloat16).eval().requires_grad_(False)
        self.image_size = clip_cfg["image_size"]

    @torch.no_grad()
    def forward(self, latents: torch.Tensor, batch: int = 8) -> torch.Tensor:
        scores = []
        for chunk in latents.split(batch):
            images = self.vae.decode(chunk.to(torch.bfloat16)).sample
            pixels = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear")
            embeds = self.clip(pixel_values=pixels.to(torch.bfloat16)).image_embeds
            scores.append(embeds.float().mean(dim=1))
        return torch.cat(scores)


def memory_note(device: torch.device) -> str:
    """GPU memory in use, held by the allocator and at peak so far (GiB): what a phase log needs to tell an
    out-of-memory failure from another one."""
    if device.type != "cuda":
        return ""
    gib = 2**30
    return (f"; GPU memory {torch.cuda.memory_allocated(device) / gib:.1f} GiB in use, "
            f"{torch.cuda.memory_reserved(device) / gib:.1f} reserved, {torch.cuda.max_memory_allocated(device) / gib:.1f} peak")


SCHEMES = ("solrl", "naive_scaling", "diffusionnft")  # Sol-RL, naive BF16 K-of-N, K-of-K


def _extremes(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k/2 best and k/2 worst candidates (Sol-RL's selection)."""
    order = torch.argsort(scores, descending=True).tolist()
    return order[: k // 2] + order[len(order) - (k - k // 2):]


def bench_iteration(arch: str, *, resolution: int, num_candidates: int, num_selected: int, explore_steps: int,
                    train_steps: int, precision: str, sample_batch: int, lora_rank: int, device: str,
                    micro_batch: int = 8, compile_learner: bool = False, gradient_checkpointing: bool = False,
                    learner_attention: str = "auto",
                    compile_copies: bool = True, compile_scope: CompileScope = "full", repeats: int = 2,
                    overrides: dict | None = None,
                    schemes: tuple[str, ...] = SCHEMES,
                    small_reward: bool = False,
                    on_row: Callable[[list[IterationRow]], None] | None = None) -> list[IterationRow]:
    """Time each scheme (a warm-up iteration, then ``repeats``); ``on_row`` gets the rows so far after each scheme,
    so a run cut short by a time limit still leaves the schemes it finished."""
    dev = torch.device(device)
    start = time.perf_counter()
    base = build_transformer(arch, device=dev, dtype=torch.bfloat16, overrides=overrides)
    log.info("built %s in %.0f s", arch, time.perf_counter() - start)
    adapter: ModelAdapter = build_adapter(arch, base, resolution)
    cond_all = random_conditioning(arch, 1, device="cpu", dtype=torch.bfloat16)
    cond_n: Conditioning = cond_all.index([0] * num_candidates)
    reward = RewardStack(dev, small=small_reward)
    learner = Learner(adapter, LearnerSettings(lora_rank=lora_rank, lora_alpha=2.0 * lora_rank,
                                                     micro_batch_size=micro_batch, compile=compile_learner,
                                                     gradient_checkpointing=gradient_checkpointing,
                                                     attention_backend=learner_attention), seed=0)
    lowp = PolicyCopy(adapter, precision, batch_size=sample_batch)
    # One BF16 copy serves both batch sizes (all N, and the K regenerated): a second copy of a 12B model's weights
    # does not fit on one GPU beside the learner.
    bf16 = PolicyCopy(adapter, "bf16", batch_size=sample_batch)
    k_batch = min(sample_batch, num_selected)
    if compile_copies:
        for copy_ in (lowp, bf16):
            # In place: set_policy's state-dict keys are unchanged. Static shapes: one graph per batch size.
            # "blocks" (regional) traces one block of each kind: what let the NVFP4-emulated FLUX rollout compile
            # within a device call (session 4), where the whole model did not.
            compile_model(copy_.transformer, compile_scope, dynamic=False)
    log.info("learner and sampling copies ready at %.0f s", time.perf_counter() - start)
    explore = SamplingSettings(num_steps=explore_steps, solver="dpm2")
    train = SamplingSettings(num_steps=train_steps, solver="dpm2")

    def reward_of(latents: torch.Tensor) -> torch.Tensor:
        return reward(latents.to(dev))

    def learn(latents: torch.Tensor, scores: torch.Tensor, sigmas: torch.Tensor, iteration: int) -> None:
        adv = (scores - scores.mean()) / (scores.std() + 1e-6)
        learner.train_step(TrainBatch(cond_all.index([0] * len(latents)), latents, adv.cpu(), sigmas), iteration)

    def refresh(copies: list[PolicyCopy]) -> None:
        weights: PolicyWeights = learner.policy_weights()
        for c in copies:
            c.set_policy(weights)

    def run_scheme(scheme: str, iteration: int) -> dict[str, float]:
        version = learner.step
        stale = [c for c in (lowp, bf16) if c.version != version]
        if stale:  # copies another scheme left behind: synced untimed, each scheme times only its own refresh
            refresh(stale)
        seeds = list(range(iteration * 10_000, iteration * 10_000 + num_candidates))
        phases: dict[str, float] = {}

        def phase(name: str, fn: Callable[[], object]) -> object:
            # logged as it ends: a 12B iteration's phases take minutes (compilation), and a run cut short by a
            # time limit should still say how far it got
            if name == "learner_step" and dev.type == "cuda":
                # Untimed, in every scheme: the sampling phases' cached blocks go back to the driver, so each
                # scheme's learner starts from the same allocator state. (Added while chasing FLUX's cuBLAS errors
                # in backward, which were cuDNN attention's: see train.attention_backend.)
                torch.cuda.empty_cache()
            phases[name], out = seconds_once(fn, dev)
            log.info("%s iteration %d: %s %.2f s (%.0f s since start)%s", scheme, iteration, name, phases[name],
                     time.perf_counter() - start, memory_note(dev))
            return out

        if scheme == "solrl":
            g1 = phase("stage1_lowp_sample", lambda: lowp.generate(cond_n, seeds, explore, version=version,
                                                                   decode=False))
            s1 = phase("reward_candidates", lambda: reward_of(g1.latents_BCHW))
            chosen = _extremes(s1.cpu(), num_selected)
            g2 = phase("stage2_bf16_regen", lambda: bf16.generate(
                cond_n.index(chosen), [seeds[i] for i in chosen], train, version=version, decode=False,
                batch_size=k_batch))
            s2 = phase("reward_selected", lambda: reward_of(g2.latents_BCHW))
            phase("learner_step", lambda: learn(g2.latents_BCHW, s2.cpu(), g2.sigmas, iteration))
            phase("weight_refresh", lambda: refresh([lowp, bf16]))
        elif scheme == "naive_scaling":
            g = phase("sample_bf16_all", lambda: bf16.generate(cond_n, seeds, train, version=version, decode=False))
            s = phase("reward_candidates", lambda: reward_of(g.latents_BCHW))
            chosen = _extremes(s.cpu(), num_selected)
            phase("learner_step", lambda: learn(g.latents_BCHW[chosen], s.cpu()[chosen], g.sigmas, iteration))
            phase("weight_refresh", lambda: refresh([bf16]))
        elif scheme == "diffusionnft":
            k_seeds = seeds[:num_selected]
            g = phase("sample_bf16_k", lambda: bf16.generate(
                cond_n.index(list(range(num_selected))), k_seeds, train, version=version, decode=False,
                batch_size=k_batch))
            s = phase("reward_candidates", lambda: reward_of(g.latents_BCHW))
            phase("learner_step", lambda: learn(g.latents_BCHW, s.cpu(), g.sigmas, iteration))
            phase("weight_refresh", lambda: refresh([bf16]))
        else:
            raise ValueError(f"unknown scheme {scheme!r}")
        return phases

    rows = []
    iteration = 0
    for scheme in schemes:
        run_scheme(scheme, iteration)  # warm-up: compilation, allocator, cuBLAS heuristics
        iteration += 1
        totals: dict[str, float] = {}
        for _ in range(repeats):
            for key, value in run_scheme(scheme, iteration).items():
                totals[key] = totals.get(key, 0.0) + value / repeats
            iteration += 1
        rows.append(IterationRow(scheme, totals))
        if on_row is not None:
            on_row(rows)
    return rows


def rows_to_markdown(rows: list[IterationRow]) -> str:
    phases = []
    for r in rows:
        phases += [p for p in r.phases if p not in phases]
    head = "| scheme | " + " | ".join(phases) + " | rollout s | iteration s |"
    lines = [head, "| " + " | ".join(["---"] * (len(phases) + 3)) + " |"]
    for r in rows:
        cells = [f"{r.phases[p]:.3f}" if p in r.phases else "-" for p in phases]
        lines.append(f"| {r.scheme} | " + " | ".join(cells) + f" | {r.rollout_seconds:.3f} | {r.total_seconds:.3f} |")
    by = {r.scheme: r for r in rows}
    if "solrl" in by:
        for other in ("naive_scaling", "diffusionnft"):
            if other in by:
                lines.append("")
                lines.append(f"Sol-RL vs {other}: rollout {by[other].rollout_seconds / by['solrl'].rollout_seconds:.2f}x "
                             f"faster, whole iteration {by[other].total_seconds / by['solrl'].total_seconds:.2f}x.")
    return "\n".join(lines)


def rows_to_dicts(rows: list[IterationRow]) -> list[dict]:
    return [{**asdict(r), "rollout_seconds": r.rollout_seconds, "total_seconds": r.total_seconds} for r in rows]
