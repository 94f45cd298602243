"""The model inside PostgreSQL: what clipsql's inference worker runs.

The C extension ``clipsql_native`` (clipsql/database/native/) starts one background worker
per database that asks for a text's embedding; the worker embeds a Python interpreter and
calls :func:`answer` with every text waiting at that moment. The texts are embedded by the
same :class:`~clipsql.models.openclip.ClipModel` (the project's tokenizer, ONNX Runtime) that
``Collection.embed_text`` uses, so ``clipsql.text_embedding('any text')`` in SQL gives the
vector the Python API gives. One model is kept, for the spec bound to the collection; a
rebinding (``clipsql reembed``) replaces it at the next call.

>>> import struct
>>> struct.unpack("<c", answer("not a model spec ::", b"x", 1, 0)[:1])[0]
b'E'
"""

from __future__ import annotations

import struct

#: The one model this worker holds: (spec, ClipModel).
_held: tuple | None = None


def _model(bound: str):
    """The model of the binding ``bound``: its spec and its recorded weights identity (the
    checkpoint's fingerprint), so the export is found without reading the checkpoint, which
    the server's own user may not be allowed to read."""
    global _held
    if _held is None or _held[0] != bound:
        from clipsql.models.openclip import ClipModel

        spec, _, pretrained = bound.partition("\n")
        _held = None  # the old model's sessions go before the new one is built
        model = ClipModel(spec, device="cpu")
        if pretrained:
            model.__dict__["pretrained_id"] = pretrained  # a cached_property, known already
        _held = (bound, model.prepare())
    return _held[1]


def answer(bound: str, texts: bytes, n: int, fp32: int) -> bytes:
    """Embed ``n`` NUL-separated UTF-8 texts with the bound model (``n == 0``: only the
    model's logit scale and bias). Returns ``b"V"`` + the logit scale and bias (NaN for a
    CLIP model) as two float32 + the n L2-normalised float32 rows, or ``b"E"`` + a message;
    never raises (the worker answers every waiting caller either way)."""
    try:
        model = _model(bound)
        bias = model.logit_bias
        head = struct.pack("<ff", float(model.logit_scale),
                           float("nan") if bias is None else float(bias))
        if n == 0:
            return b"V" + head
        rows = texts.decode("utf-8").split("\0")
        if len(rows) != n:
            return b"E" + b"the texts arrived garbled"
        vectors = model.encode_text(rows, fp32=bool(fp32))
        return b"V" + head + vectors.astype("<f4", copy=False).tobytes()
    except Exception as exc:  # every failure becomes the callers' error message
        import traceback

        traceback.print_exc()  # into the server's log
        return b"E" + f"the in-database model failed: {type(exc).__name__}: {exc}".encode(
            "utf-8", "replace")[:480]
