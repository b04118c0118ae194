"""Train the tiny LLaDA-recipe model on the addition task with LLaDA's SFT loss.

The prompt is never masked; each response (answer + EOS fill) is masked with p = (1 - eps) t + eps, and the
loss is sum_masked CE / p / response length (LLaDA GUIDELINES.md, SFT). Problems are drawn fresh every step
from a seeded generator, and never from the evaluation generator's stream.
"""

from __future__ import annotations

import math

import torch

from workers.aux.common.masked_diffusion import MaskedTransformer, forward_mask, llada_loss, llada_p_mask
from workers.aux.common.runtime import progress
from workers.aux.fast_dllm.task import AdditionTask


def sft_loss(model: MaskedTransformer, prompt_BP: torch.Tensor, response_BG: torch.Tensor, mask_id: int,
             generator: torch.Generator, eps: float = 1e-3) -> torch.Tensor:
    """One Monte-Carlo draw of LLaDA's SFT loss for a batch of (prompt, response) pairs."""
    b, p = prompt_BP.shape
    x0 = torch.cat([prompt_BP, response_BG], dim=1)
    t = torch.rand(b, generator=generator, device=x0.device)
    p_mask = llada_p_mask(t, eps)
    maskable = torch.zeros_like(x0, dtype=torch.bool)
    maskable[:, p:] = True
    xt, masked = forward_mask(x0, p_mask, mask_id, generator, maskable)
    logits = model(xt).logits
    return llada_loss(logits, x0, masked, p_mask, float(response_BG.shape[1]))


def train_sft(model: MaskedTransformer, task: AdditionTask, *, steps: int, batch_size: int, lr: float,
              generator: torch.Generator, long_task: AdditionTask | None = None, long_fraction: float = 0.0,
              snapshot_at: int | None = None, show_progress: bool = True
              ) -> tuple[list[float], dict[str, torch.Tensor] | None]:
    """AdamW with linear warm-up and cosine decay; returns the loss per step and, if ``snapshot_at`` is
    given, a copy of the weights after that many steps (a less confident model of the same run).

    A ``long_fraction`` of the steps (spread evenly) draws from ``long_task`` instead: the same problems with
    responses EOS-filled to the evaluation length, so the model sees every position it will decode.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    losses = []
    snapshot = None
    model.train()
    for i in progress(range(steps), "fast_dllm train", show_progress):
        long = long_task is not None and int((i + 1) * long_fraction) > int(i * long_fraction)
        prompt, response, _ = (long_task if long else task).sample(batch_size, generator)
        loss = sft_loss(model, prompt, response, task.tokenizer.mask_id, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if snapshot_at is not None and i + 1 == snapshot_at:
            snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.eval()
    return losses, snapshot
