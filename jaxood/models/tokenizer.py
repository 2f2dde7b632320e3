"""The standard CLIP byte-level BPE tokenizer, offline and torch-free.

The merges file (`assets/bpe_simple_vocab_16e6.txt.gz`, OpenAI, MIT licence)
ships inside the package, so a fresh machine tokenises with no network.
Normalisation follows Hugging Face's `CLIPTokenizer`: NFC, runs of whitespace
collapsed to one space, lower case; then CLIP's split pattern and byte-level
BPE with the `</w>` end-of-word suffix. Ids: SOT 49406, EOT 49407, padding 0,
so the EOT position is `argmax(ids)`.
"""

from __future__ import annotations

import functools
import gzip
import os
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import regex

BPE_PATH = os.path.join(os.path.dirname(__file__), "assets", "bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN, EOT_TOKEN = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408  # ids 0 .. EOT's 49407
_NUM_MERGES = 49152 - 256 - 2

_SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
_WHITESPACE = regex.compile(r"\s+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Tokenizer:
    """CLIP BPE tokenizer; `Tokenizer()(texts)` returns int32 ids (B, 77)."""

    def __init__(self, bpe_path: str = BPE_PATH):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : _NUM_MERGES + 1]
        self.merges = [tuple(line.split()) for line in lines]
        self.byte_encoder = _bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in self.merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self._cache: dict[str, tuple[int, ...]] = {
            SOT_TOKEN: (self.sot_id,),
            EOT_TOKEN: (self.eot_id,),
        }

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, word: str) -> tuple[int, ...]:
        """Byte-level BPE of one pre-token, cached."""
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        symbols = [self.byte_encoder[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            pairs = [(self.ranks.get(p, _NUM_MERGES), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
            rank, _ = min(pairs)
            if rank == _NUM_MERGES:
                break
            first, second = self.merges[rank]
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        ids = tuple(self.encoder[s] for s in symbols)
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without SOT/EOT."""
        text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).lower()
        out: list[int] = []
        for piece in _SPLIT.findall(text):
            out.extend(self._bpe(piece))
        return out

    def __call__(self, texts: str | Iterable[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
        """Tokenise to `(B, context_length)` int32: SOT, tokens, EOT, zero padding.

        Over-long texts are truncated so that EOT stays the last token.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        out = np.zeros((len(texts), context_length), np.int32)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text)[: context_length - 2], self.eot_id]
            out[row, : len(ids)] = ids
        return out


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    """The shared tokenizer (the merges file is read once per process)."""
    return Tokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    """Standard CLIP ids, `(B, context_length)` int32; EOT at `argmax` of each row."""
    return get_tokenizer()(texts, context_length)
