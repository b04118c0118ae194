"""Local tokenizers for the models built here.

Real checkpoints ship their own tokenizers; the tiny family cannot download one, so it gets a
small, fully local ``PreTrainedTokenizerFast`` (lower-cased printable ASCII, one token per
character) that every diffusers text-encoder call path accepts. A model trained on a closed
vocabulary (the compositional benchmark's base) can take a word-level one instead: one token per
word, as a real BPE tokenizer gives common words.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# Ids 0-3 are special. EOS must not be id 2: CLIP's text model then falls back to argmax(ids).
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
CHARACTERS = sorted(set(string.ascii_lowercase + string.digits + string.punctuation + " "))


def build_char_tokenizer(model_max_length: int) -> PreTrainedTokenizerFast:
    """One token per (lower-cased) character."""
    return _wrap(_vocabulary(CHARACTERS), pre_tokenizers.Split(Regex("."), behavior="isolated"), model_max_length)


def build_word_tokenizer(words: Iterable[str], model_max_length: int) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated (lower-cased) word of ``words``; any other word is ``<unk>``."""
    return _wrap(_vocabulary(sorted({w.lower() for w in words})), pre_tokenizers.WhitespaceSplit(), model_max_length)


def _vocabulary(tokens: Iterable[str]) -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    return vocab


def _wrap(vocab: dict[str, int], pre_tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizer
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )
