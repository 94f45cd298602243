"""CLIP's byte-level BPE tokenizer in plain Python, so a text query needs no torch import.

It produces the same token ids as open_clip's ``SimpleTokenizer`` with its default settings
(lower-case cleaning, no extra special tokens); ``tests/unit/test_tokenizer.py`` compares the two
on a few hundred strings. The merges file is the one installed with open_clip, found without
importing open_clip (which would import torch).

>>> tok = Tokenizer.load()                                   # doctest: +SKIP
>>> tok(["a photo of a dog"])[0]                             # doctest: +SKIP
[49406, 320, 1125, 539, 320, 1929, 49407]
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import threading
from pathlib import Path

#: Number of merges CLIP's vocabulary uses: 49152 ids minus 256 bytes, 256 end-of-word bytes
#: and the two special tokens, plus the header line of the file.
_MERGES = 49152 - 256 - 2
SOT, EOT = "<start_of_text>", "<end_of_text>"
_lock = threading.Lock()
_loaded: dict = {}


def merges_file() -> Path | None:
    """open_clip's ``bpe_simple_vocab_16e6.txt.gz``, located without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    return None


#: Bytes that stand for themselves (printable Latin-1), in vocabulary order; the other bytes
#: (controls, space, ...) follow them in the vocabulary and map to code points from 256 on.
_PRINTABLE = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
_BYTE_ORDER = _PRINTABLE + [b for b in range(256) if b not in set(_PRINTABLE)]


def _byte_symbols() -> list[str]:
    """One printable character per byte value (indexed by byte)."""
    moved = iter(range(256, 512))
    kept = set(_PRINTABLE)
    return [chr(b) if b in kept else chr(next(moved)) for b in range(256)]


class Tokenizer:
    """Text to CLIP token ids: ``[SOT] + bpe(clean(text)) + [EOT]``, cut to the context length."""

    def __init__(self, merges: list[tuple[str, str]], context_length: int = 77):
        import regex

        self.context_length = context_length
        self._byte_symbol = symbols = _byte_symbols()
        # Vocabulary order matters (it is the id): bytes in printable-first order, the same
        # with the end-of-word mark, one entry per merge, then the two special tokens.
        vocab = [symbols[b] for b in _BYTE_ORDER]
        vocab += [s + "</w>" for s in vocab]
        vocab += ["".join(m) for m in merges] + [SOT, EOT]
        self.ids = {s: i for i, s in enumerate(vocab)}
        self.rank = {m: i for i, m in enumerate(merges)}
        self.sot, self.eot = self.ids[SOT], self.ids[EOT]
        self._words: dict[str, list[int]] = {}
        self._split = regex.compile(
            rf"{SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE)

    @classmethod
    def load(cls, context_length: int = 77) -> Tokenizer:
        """The tokenizer for open_clip's merges file (read once per process)."""
        with _lock:
            merges = _loaded.get("merges")
            if merges is None:
                path = merges_file()
                if path is None:
                    raise FileNotFoundError("open_clip's bpe_simple_vocab_16e6.txt.gz is missing")
                lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
                merges = _loaded["merges"] = [tuple(line.split()) for line in lines[1:_MERGES + 1]]
        return cls(merges, context_length)

    @staticmethod
    def clean(text: str) -> str:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _merge(self, word: str) -> list[str]:
        """Apply the merges to one pre-split word, lowest rank first, as CLIP's BPE does."""
        parts = [*word[:-1], word[-1] + "</w>"]
        none = len(self.rank)  # ranks past every merge: pairs that are never merged
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda p: self.rank.get(p, none))
            if pair not in self.rank:
                break
            first, second = pair
            merged, i = [], 0
            while i < len(parts):  # every non-overlapping occurrence, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start and end tokens."""
        out: list[int] = []
        for piece in self._split.findall(self.clean(text)):
            ids = self._words.get(piece)
            if ids is None:
                if piece in (SOT, EOT):  # the special tokens are matched as such in any text
                    ids = [self.ids[piece]]
                else:
                    word = "".join(self._byte_symbol[b] for b in piece.encode("utf-8"))
                    ids = [self.ids[p] for p in self._merge(word)]
                if len(self._words) < 100_000:
                    self._words[piece] = ids
            out.extend(ids)
        return out

    def __call__(self, texts: list[str]) -> list[list[int]]:
        rows = []
        for text in texts:
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length]
                ids[-1] = self.eot
            rows.append(ids)
        return rows
