"""Text queries from a new process in well under a second: the text tower exported to numpy.

Embedding one query with open_clip in a fresh process means importing torch and open_clip
and building the whole model (image tower included): seconds of work for about 30 ms of
arithmetic (``benchmarks/cold_start.py`` shows where the time goes). So the first time a
process embeds text with the full model, clipsql exports the text tower's float32 weights to
``$CLIPSQL_HOME/cache/text/<key>/`` (one flat file plus ``meta.json``), together with token
ids and embeddings that open_clip itself computed for a few reference texts. A later
process that has not loaded the model maps that file and runs the same layers in numpy
(already imported) with the torch-free tokenizer of :mod:`clipsql.models.tokenizer`.

Only towers this module can reproduce exactly are exported: open_clip's ``CLIP`` with a
causal mask, argmax/eos pooling, ``ResidualAttentionBlock`` layers (LayerNorm, GELU or
QuickGELU, optional layer scale) and the default SimpleTokenizer, in float32. Opening an
export re-checks the reference texts (ids equal, embeddings within 1e-4); anything else
falls back to the full model. Outputs match ``encode_text`` to ~1e-6 (tests: <= 1e-4).

>>> tower = TextTower.open(path)                       # doctest: +SKIP
>>> tower.encode(["two dogs in the snow"]).shape       # doctest: +SKIP
(1, 512)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT = 1
REFERENCE_TEXTS = ["a photo of a dog", "two dogs playing in the snow, 2021!", "Ünïcödé café 🐕"]
TOLERANCE = 1e-4


def cache_dir(model) -> Path | None:
    """Where the export of a :class:`~clipsql.models.openclip.ClipModel` lives; None for weights
    without a stable identity (random, hf-hub)."""
    from clipsql import config

    if model.spec.pretrained is None:
        return None
    ident = model.identity()
    key = json.dumps([FORMAT, ident["arch"], ident["pretrained"], ident["dim"]])
    return config.home() / "cache" / "text" / hashlib.sha256(key.encode()).hexdigest()[:20]


def open_for(model) -> TextTower | None:
    """The checked export for ``model`` (a :class:`~clipsql.models.openclip.ClipModel`), or None."""
    from clipsql.errors import ModelError
    from clipsql.models import text_choice

    try:
        folder = cache_dir(model)
        tower = TextTower.open(folder) if folder else None
    except (ModelError, OSError):
        return None
    if tower is not None:
        tower.engine = text_choice.engine_for(model, tower)
    return tower


def export_for(model) -> None:
    """Export ``model``'s loaded fp32 text tower if it has none yet; failures only skip it."""
    if model.precision != "fp32":
        return  # an fp16/bf16/int8 tower would not reproduce the fp32 embeddings
    try:
        folder = cache_dir(model)
        if folder is not None and not folder.is_dir():
            export(model.torch_model, model.tokenizer, model.encode_text_torch, folder)
    except OSError:
        pass  # e.g. a read-only home: queries still work, only cold starts stay slow


# --- numpy layers -------------------------------------------------------------------------
def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = np.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _erf(x):
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, GELU needs one.
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                          + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654)
                                                    * (x + 0.044715 * x * x * x))),
    "quick_gelu": lambda x: x / (1.0 + np.exp(-1.702 * x)),
}


class TextTower:
    """An exported text tower: ``encode(texts)`` gives L2-normalised float32 embeddings."""

    def __init__(self, meta: dict, weights: np.ndarray, tokenizer):
        self.meta, self.tokenizer = meta, tokenizer
        #: An ONNX Runtime encoder of the same tower, where it was measured faster (see
        #: :mod:`clipsql.models.text_choice`); None: numpy.
        self.engine = None
        self._w = {name: weights[o:o + int(np.prod(shape))].reshape(shape)
                   for name, (o, shape) in meta["tensors"].items()}
        self._act = _ACTIVATIONS[meta["activation"]]
        proj = self._w.get("text_projection")
        self.dim = proj.shape[1] if proj is not None else self._w["ln_final.w"].shape[0]

    @classmethod
    def open(cls, folder: Path) -> TextTower | None:
        """The export in ``folder``, or None if it is missing, unreadable or fails its check."""
        from clipsql.models import tokenizer

        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                return None
            weights = np.memmap(folder / "weights.f32", dtype=np.float32, mode="r")
            tower = cls(meta, weights, tokenizer.Tokenizer.load(meta["context_length"]))
            ref = meta["reference"]
            if tower.tokenizer(ref["texts"]) != ref["tokens"]:
                return None
            got = tower.encode(ref["texts"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if np.abs(got - np.asarray(ref["embeddings"], np.float32)).max() > TOLERANCE:
            return None
        return tower

    def ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids cut after the longest text's end-of-text token, and each text's
        pooling position."""
        rows = self.tokenizer(list(texts))
        length = max((len(r) for r in rows), default=1)
        ids = np.zeros((len(rows), length), np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
        if self.meta["pool"] == "eos":
            last = (ids == self.tokenizer.eot).argmax(-1)
        else:
            last = ids.argmax(-1)  # the end-of-text token has the highest id
        return ids, last

    def encode(self, texts: list[str], exact: bool = False) -> np.ndarray:
        """L2-normalised embeddings, from :attr:`engine` (ONNX Runtime) where one was chosen;
        ``exact``: fp32 arithmetic only (never an int8 engine), for embeddings that are stored."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids, last = self.ids(texts)
        if self.engine is not None and not (exact and self.engine.int8):
            return self.engine.encode_ids(ids)
        return self.run(ids, last)

    def run(self, ids: np.ndarray, last: np.ndarray) -> np.ndarray:
        """The tower in numpy on token ids (see :meth:`ids`)."""
        n, length = ids.shape
        w, m = self._w, self.meta
        x = w["token_embedding"][ids] + w["positional_embedding"][:length]
        causal = np.triu(np.full((length, length), -np.inf, np.float32), 1)
        heads, eps = m["heads"], m["eps"]
        width = x.shape[-1]
        for i in range(m["layers"]):
            p = f"{i}."
            h = _layer_norm(x, w[p + "ln_1.w"], w[p + "ln_1.b"], eps)
            qkv = (h @ w[p + "qkv.w"] + w[p + "qkv.b"]).reshape(n, length, 3, heads, -1)
            q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(q.shape[-1])) + causal
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            att = (scores / scores.sum(-1, keepdims=True)) @ v
            att = att.transpose(0, 2, 1, 3).reshape(n, length, width)
            x = x + self._scale(p + "ls_1", att @ w[p + "out.w"] + w[p + "out.b"])
            h = _layer_norm(x, w[p + "ln_2.w"], w[p + "ln_2.b"], eps)
            h = self._act(h @ w[p + "fc.w"] + w[p + "fc.b"])
            x = x + self._scale(p + "ls_2", h @ w[p + "proj.w"] + w[p + "proj.b"])
        x = _layer_norm(x[np.arange(n), last], w["ln_final.w"], w["ln_final.b"], m["final_eps"])
        if "text_projection" in w:
            x = x @ w["text_projection"]
            if "text_projection.b" in w:
                x = x + w["text_projection.b"]
        x = x.astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def _scale(self, name, x):
        gamma = self._w.get(name)
        return x if gamma is None else x * gamma


# --- export from an open_clip model -------------------------------------------------------
def exportable(model, tokenizer) -> dict | None:
    """The layer description of ``model``'s text tower if it can be exported, else None."""
    import torch
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip.transformer import LayerScale, QuickGELU

    from clipsql.models.text_torch import plain_block, trimmable

    if (not trimmable(model) or type(tokenizer) is not SimpleTokenizer
            or tokenizer.clean_fn.__name__ != "_clean_lower" or tokenizer.reduction_fn is not None
            or len(tokenizer.all_special_ids) != 2):
        return None
    blocks = list(model.transformer.resblocks)
    acts = set()
    for b in blocks:
        if (not plain_block(b) or b.attn.in_proj_bias is None
                or not all(isinstance(n, torch.nn.LayerNorm) for n in (b.ln_1, b.ln_2))
                or not all(isinstance(s, (torch.nn.Identity, LayerScale)) for s in (b.ls_1, b.ls_2))):
            return None
        act = b.mlp.gelu
        if type(act) is QuickGELU:
            acts.add("quick_gelu")
        elif type(act) is torch.nn.GELU:
            acts.add("gelu" if act.approximate == "none" else "gelu_tanh")
        else:
            return None
    eps = {b.ln_1.eps for b in blocks} | {b.ln_2.eps for b in blocks}
    if (len(acts) != 1 or len(eps) != 1 or not isinstance(model.ln_final, torch.nn.LayerNorm)
            or any(p.dtype != torch.float32 for p in model.parameters())):
        return None
    return {"activation": acts.pop(), "eps": eps.pop(), "final_eps": model.ln_final.eps,
            "heads": blocks[0].attn.num_heads, "layers": len(blocks),
            "pool": model.text_pool_type, "context_length": tokenizer.context_length}


def _tensors(model) -> dict:
    import torch

    def arr(t):
        return t.detach().float().cpu().numpy()

    out = {"token_embedding": arr(model.token_embedding.weight),
           "positional_embedding": arr(model.positional_embedding),
           "ln_final.w": arr(model.ln_final.weight), "ln_final.b": arr(model.ln_final.bias)}
    for i, b in enumerate(model.transformer.resblocks):
        p = f"{i}."
        out.update({p + "ln_1.w": arr(b.ln_1.weight), p + "ln_1.b": arr(b.ln_1.bias),
                    p + "qkv.w": arr(b.attn.in_proj_weight).T, p + "qkv.b": arr(b.attn.in_proj_bias),
                    p + "out.w": arr(b.attn.out_proj.weight).T, p + "out.b": arr(b.attn.out_proj.bias),
                    p + "ln_2.w": arr(b.ln_2.weight), p + "ln_2.b": arr(b.ln_2.bias),
                    p + "fc.w": arr(b.mlp.c_fc.weight).T, p + "fc.b": arr(b.mlp.c_fc.bias),
                    p + "proj.w": arr(b.mlp.c_proj.weight).T, p + "proj.b": arr(b.mlp.c_proj.bias)})
        for ls in ("ls_1", "ls_2"):
            if hasattr(getattr(b, ls), "gamma"):
                out[p + ls] = arr(getattr(b, ls).gamma)
    proj = model.text_projection
    if isinstance(proj, torch.nn.Linear):
        out["text_projection"] = arr(proj.weight).T
        if proj.bias is not None:
            out["text_projection.b"] = arr(proj.bias)
    elif proj is not None:
        out["text_projection"] = arr(proj)
    return out


def export(model, tokenizer, encode, folder: Path) -> bool:
    """Write the export of ``model``'s text tower to ``folder``; False if it is not exportable.

    ``encode(texts)`` is the full model's own text encoder: its outputs for the reference
    texts are stored, and :meth:`TextTower.open` checks the export against them.
    """
    layers = exportable(model, tokenizer)
    if layers is None:
        return False
    tensors = _tensors(model)
    offsets, at = {}, 0
    for name, a in tensors.items():
        offsets[name] = (at, list(a.shape))
        at += a.size
    ref_tokens = [row[:max(i for i, t in enumerate(row) if t) + 1]  # drop the padding zeros
                  for row in tokenizer(REFERENCE_TEXTS).tolist()]
    meta = {"format": FORMAT, **layers, "tensors": offsets,
            "reference": {"texts": REFERENCE_TEXTS, "tokens": ref_tokens,
                          "embeddings": np.asarray(encode(REFERENCE_TEXTS)).tolist()}}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        with open(tmp / "weights.f32", "wb") as f:
            for a in tensors.values():
                f.write(np.ascontiguousarray(a, np.float32).tobytes())
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        os.rename(tmp, folder)  # atomic; another process may have won the race
    except OSError:
        return folder.is_dir()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
