"""A character-level tokenizer for the tiny model family.

Real checkpoints ship their own tokenizers; the tiny family cannot download one, so it gets a
small, fully local ``PreTrainedTokenizerFast`` (lower-cased printable ASCII, one token per
character) that every diffusers text-encoder call path accepts.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# Ids 0-3 are special. EOS must not be id 2: CLIP's text model then falls back to argmax(ids).
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
CHARACTERS = sorted(set(string.ascii_lowercase + string.digits + string.punctuation + " "))


def build_char_tokenizer(model_max_length: int) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
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
