"""A generation service core for a trained (or published) masked-diffusion LM, without Ray.

``DllmGenerator`` loads a checkpoint directory (``checkpoint.load_checkpoint``) and decodes text prompts with
any Fast-dLLM variant. services/dllm wraps it in a Ray Serve deployment; keeping it Ray-free lets workers/
stay importable without Ray and the core be tested directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workers.aux.fast_dllm.checkpoint import load_checkpoint
from workers.aux.fast_dllm.generate import DecodeSpec, generate
from workers.aux.fast_dllm.task import CharTokenizer


@dataclass(frozen=True)
class GenerateOptions:
    gen_length: int = 256
    block_length: int = 32
    cache: str = "dual"
    threshold: float | None = 0.9
    tokens_per_step: int = 1

    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec(gen_length=self.gen_length, block_length=self.block_length, cache=self.cache,
                          threshold=self.threshold, tokens_per_step=self.tokens_per_step)


class DllmGenerator:
    """Text in, text out: the model of ``model_dir`` with this project's character tokenizer.

    The tokenizer alphabet and the prompt length the model was trained with are read from config.json
    (``solrl`` key, written by the experiment). Prompts are left-padded to that length.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        self.model = load_checkpoint(model_dir).to(device)
        self.device = device
        extra = self.model.spec.extra.get("solrl") or {}
        if "symbols" not in extra:
            raise ValueError(f"{model_dir}: config.json has no solrl.symbols (tokenizer alphabet); text generation "
                             "needs a model saved by aux.fast_dllm (published LLaDA/Dream need their own tokenizer)")
        self.tokenizer = CharTokenizer(tuple(extra["symbols"]))
        self.prompt_len = int(extra.get("prompt_len", 0))
        self.mask_id = int(self.model.spec.extra["mask_token_id"])

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        ids = [tok.encode(p) for p in prompts]
        length = max(self.prompt_len, max(len(i) for i in ids))
        return torch.tensor([[tok.pad_id] * (length - len(i)) + i for i in ids], device=self.device)

    def generate(self, prompts: list[str], options: GenerateOptions = GenerateOptions()) -> dict[str, Any]:
        """Completions (text before the first EOS) and the decoding cost of the batch."""
        if not prompts:
            raise ValueError("prompts is empty; send at least one prompt")
        prompt = self.encode_prompts(prompts)
        start = time.perf_counter()
        out = generate(self.model, prompt, options.decode_spec(), self.mask_id)
        seconds = time.perf_counter() - start
        return {"completions": [self.tokenizer.decode(row) for row in out.response(prompt.shape[1])],
                "nfe": out.nfe, "tokens_per_step": options.gen_length / max(out.nfe, 1), "seconds": seconds}
