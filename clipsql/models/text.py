"""The text side of a model: token ids, and the one engine that embeds them (ONNX Runtime).

A query is a handful of tokens. Towers with a causal attention mask and argmax pooling
(open_clip's CLIP text towers) are exported to run on the real tokens only, with a dynamic
token axis (:mod:`clipsql.models.export`): a token attends only to those before it, so the
end-of-text output does not depend on the padding, which is never computed. Other towers
(SigLIP, Hugging Face text models) are exported at their context length and take padded ids.

Token ids come from :mod:`clipsql.models.tokenizer` (CLIP's BPE in plain Python: a query
imports neither torch nor open_clip) when the export recorded that it gives open_clip's ids
on the reference texts, else from open_clip's own tokenizer.

Queries run on the int8 export when it passed the accuracy check, stored embeddings
(``fp32=True``: labels, texts for SQL) always on fp32. A tower that cannot be exported runs
on torch: :class:`TorchTextEncoder`, open_clip's ``encode_text``.

>>> pad_rows([[1, 5, 2], [1, 2]], None)
array([[1, 5, 2],
       [1, 2, 0]])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipsql.models import runtime


def pad_rows(rows: list[list[int]], width: int | None) -> np.ndarray:
    """Token id rows as one int64 array, zero-padded to ``width`` (None: the longest row)."""
    width = width or max((len(r) for r in rows), default=1)
    ids = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r[:width]
    return ids


class OnnxTextEncoder:
    """``encode(texts, fp32)`` on the exported text tower of one checkpoint (``tower``: the
    export's ``meta["text"]``); queries on int8 when ``int8``, stored embeddings on fp32."""

    def __init__(self, folder: Path, tower: dict, arch: str, int8: bool,
                 threads: int | None = None):
        self.tower, self.arch = tower, arch
        #: None: a query runs where :func:`runtime.text_session` says (one thread on a busy
        #: machine, two spinning ones when a core is idle); a number: on that many threads
        #: that do not spin (``benchmarks/text.py``: format 3's setting). Batches of texts
        #: run on :data:`runtime.TEXT_THREADS`.
        self.threads = threads
        self._fp32_path = folder / tower["fp32"]["file"]
        self._int8_path = folder / tower["int8"]["file"] if int8 else None
        self._tokenizer = None
        #: the precision queries run in ("int8" or "fp32"); stored embeddings always fp32
        self.precision = "int8" if int8 else "fp32"
        # the query session now (a prepared model answers its first query at full speed);
        # the fp32 one, for stored embeddings, on first use
        self._query_session(self._int8_path or self._fp32_path)

    def tokenize(self, texts: list[str]) -> np.ndarray:
        if self._tokenizer is None:
            self._tokenizer = tokenizer_for(self.tower, self.arch)
        width = None if self.tower["input"] == "trimmed" else self.tower["context_length"]
        return pad_rows(self._tokenizer(texts), width)

    def encode(self, texts: list[str], fp32: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.tower["dim"]), np.float32)
        path = self._fp32_path if fp32 or self._int8_path is None else self._int8_path
        int8 = path == self._int8_path
        if int8 or (len(texts) == 1 and self._int8_path is None):  # queries, one at a time
            session = self._query_session(path)
        else:  # texts to store: a batch on fp32
            session = runtime.session(path, self.threads or runtime.TEXT_THREADS)
        if int8:  # one text at a time: its activation scale is its own (see image.py)
            return runtime.normalised(np.concatenate(
                [session.run(None, {"input": self.tokenize([t])})[0] for t in texts]))
        return runtime.normalised(session.run(None, {"input": self.tokenize(list(texts))})[0])

    def _query_session(self, path: Path):
        if self.threads:
            return runtime.session(path, self.threads)
        return runtime.text_session(path)


def tokenizer_for(tower: dict, arch: str):
    """``texts -> list of id rows`` as the export recorded: the torch-free BPE, or open_clip's
    (rows cut after the end-of-text token for a trimmed tower)."""
    if tower["tokenizer"] == "clip-bpe":
        from clipsql.models.tokenizer import Tokenizer

        return Tokenizer.load(tower["context_length"])
    import open_clip

    tok = open_clip.get_tokenizer(arch)

    def rows(texts):
        ids = tok(list(texts)).numpy()
        if tower["input"] != "trimmed":
            return ids.tolist()
        return [list(r[:int(r.argmax()) + 1]) for r in ids]  # argmax pooling: eot has the top id

    return rows


class TorchTextEncoder:
    """``encode(texts, fp32)`` with open_clip's ``encode_text``, for towers ONNX cannot run."""

    precision = "fp32"

    def __init__(self, net, tokenizer, device: str):
        self.net, self.tokenizer, self.device = net, tokenizer, device

    def encode(self, texts: list[str], fp32: bool = False) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.net.encode_text(self.tokenizer(list(texts)).to(self.device))
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()
