"""The checkable tasks: multi-digit addition (or digit reversal) with few-shot context, a character tokenizer
and EOS fill.

A prompt is ``k`` solved examples and the query, ``"37+45=082;12+09=021;...;58+27="``, left-padded to a fixed
length (so the prefix is long, as in GSM8K few-shot prompts); the response is the sum's digits followed by
EOS up to the generation length, which is how LLaDA's SFT data pads answers (EOS fill), so a generation
length of 256 is a real setting in which caching matters. Exact match compares the decoded text before the
first EOS with the true answer. ``kind="reverse"`` asks for the query's digits reversed
(``"4721=1274;...;3380="``): a task a tiny model learns in a few hundred steps on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

SYMBOLS = list("0123456789+=;")
PAD, EOS, MASK = "<pad>", "<eos>", "<mask>"


@dataclass(frozen=True)
class CharTokenizer:
    """Digits, '+', '=', ';', then PAD, EOS and MASK (the reserved mask id is the last)."""

    symbols: tuple[str, ...] = tuple(SYMBOLS)

    @property
    def vocab(self) -> list[str]:
        return [*self.symbols, PAD, EOS, MASK]

    @property
    def vocab_size(self) -> int:
        return len(self.symbols) + 3

    @property
    def pad_id(self) -> int:
        return len(self.symbols)

    @property
    def eos_id(self) -> int:
        return len(self.symbols) + 1

    @property
    def mask_id(self) -> int:
        return len(self.symbols) + 2

    def encode(self, text: str) -> list[int]:
        index = {s: i for i, s in enumerate(self.symbols)}
        bad = sorted({c for c in text if c not in index})
        if bad:
            raise ValueError(f"characters {bad} are not in the tokenizer's alphabet {''.join(self.symbols)!r}")
        return [index[c] for c in text]

    def decode(self, ids: list[int] | torch.Tensor, stop_at_eos: bool = True) -> str:
        out = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == self.eos_id and stop_at_eos:
                break
            if i < len(self.symbols):
                out.append(self.symbols[i])
            elif i == self.mask_id:
                out.append("_")
        return "".join(out)


@dataclass(frozen=True)
class AdditionTask:
    """``digits``-digit addition (or reversal); prompts of ``shots`` solved examples plus the query."""

    digits: int = 3
    shots: int = 4
    prompt_len: int = 64
    gen_len: int = 256
    tokenizer: CharTokenizer = CharTokenizer()
    kind: Literal["addition", "reverse"] = "addition"

    @property
    def answer_len(self) -> int:
        return self.digits + 1 if self.kind == "addition" else self.digits

    def line_len(self) -> int:
        return 3 * self.digits + 3 if self.kind == "addition" else 2 * self.digits + 2

    def __post_init__(self) -> None:
        if self.kind not in ("addition", "reverse"):
            raise ValueError(f"kind must be 'addition' or 'reverse', got {self.kind!r}")
        need = (self.shots + 1) * self.line_len()
        if need > self.prompt_len:
            raise ValueError(f"prompt_len={self.prompt_len} is too short for {self.shots} shots of "
                             f"{self.digits}-digit addition ({need} characters); raise prompt_len")
        if self.answer_len >= self.gen_len:
            raise ValueError(f"gen_len={self.gen_len} cannot hold a {self.answer_len}-digit answer")

    @staticmethod
    def is_test_pair(a: int, b: int) -> bool:
        """The fixed held-out fifth of operand pairs: evaluation queries come only from it, training never
        (reversal uses b = 0, so the split is over a)."""
        return (a * 7919 + b * 104729) % 1009 % 5 == 0  # mod a prime first: no digit pattern

    def _operands(self, generator: torch.Generator, n: int, split: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        while len(out) < n:
            a, b = torch.randint(0, 10 ** self.digits, (2,), generator=generator).tolist()
            if self.kind == "reverse":
                b = 0
            if split == "train" and self.is_test_pair(a, b):
                continue
            if split == "test" and len(out) == n - 1 and not self.is_test_pair(a, b):
                continue  # the query (last line) of a test prompt is a held-out pair; its shots need not be
            out.append((a, b))
        return out

    def answer(self, a: int, b: int) -> str:
        d = self.digits
        return f"{a + b:0{d + 1}d}" if self.kind == "addition" else f"{a:0{d}d}"[::-1]

    def _line(self, a: int, b: int, answer: bool) -> str:
        d = self.digits
        query = f"{a:0{d}d}+{b:0{d}d}=" if self.kind == "addition" else f"{a:0{d}d}="
        return query + (f"{self.answer(a, b)};" if answer else "")

    def sample(self, n: int, generator: torch.Generator, split: str = "train"
               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(prompt ids [n, prompt_len], response ids [n, gen_len], answers) of ``n`` fresh problems.

        ``split="train"`` never uses a held-out pair; ``"test"`` makes every query a held-out pair.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        tok = self.tokenizer
        prompts, responses, answers = [], [], []
        for _ in range(n):
            ops = self._operands(generator, self.shots + 1, split)
            text = "".join(self._line(a, b, True) for a, b in ops[:-1]) + self._line(*ops[-1], False)
            ids = tok.encode(text)
            prompts.append([tok.pad_id] * (self.prompt_len - len(ids)) + ids)
            answer = self.answer(*ops[-1])
            answers.append(answer)
            resp = tok.encode(answer)
            responses.append(resp + [tok.eos_id] * (self.gen_len - len(resp)))
        return torch.tensor(prompts), torch.tensor(responses), answers

    def exact_match(self, generated: torch.Tensor, answers: list[str]) -> list[bool]:
        """Per row: the text before the first EOS equals the answer."""
        return [self.tokenizer.decode(row) == ans for row, ans in zip(generated, answers, strict=True)]
