"""Which engine answers a text query: the numpy tower, or ONNX Runtime in fp32 or int8.

A query is a handful of tokens, so its time is reading the text tower's weights once
(about 150 MB in fp32 for ViT-B-32, 38 MB in int8): which engine is fastest depends on the
machine's memory and integer units, so it is measured, once per machine, on a few short
queries, and kept in the ONNX export's folder (``text-choice-<machine>.json``). Only
exports that passed their check against torch take part (int8: cosine >= 0.999 to fp32 on
the reference texts, :mod:`clipsql.models.onnx_export`); ONNX must beat numpy by
:data:`MARGIN`.

>>> faster({"numpy": 0.030, "onnx-fp32": 0.016, "onnx-int8": 0.008})
'onnx-int8'
>>> faster({"numpy": 0.010, "onnx-fp32": 0.0095})
'numpy'
"""

from __future__ import annotations

import json
import time

QUERIES = ["a photo of a dog", "two dogs playing in the snow", "invoice",
           "a red car parked on a quiet street at night"]
MARGIN = 1.10
ROUNDS = 5


def faster(seconds: dict) -> str:
    """The engine to use from per-engine seconds (numpy unless another is MARGIN faster)."""
    best = min(seconds, key=seconds.get)
    return best if seconds[best] * MARGIN <= seconds["numpy"] else "numpy"


def engine_for(model, tower):
    """An ONNX Runtime text encoder for ``model`` if one is faster here than ``tower``'s numpy
    layers, else None. Never raises: a missing runtime or export means numpy."""
    from clipsql.models import onnx_export
    from clipsql.models.machine import fingerprint
    from clipsql.models.onnx_runtime import TextEncoder

    if not onnx_export.available():
        return None
    folder = onnx_export.cache_dir(model)
    meta = onnx_export.read_meta(folder) if folder else None
    names = [f"onnx-{p}" for p in ("fp32", "int8")
             if meta and meta["files"].get(f"text-{p}", {}).get("ok")]
    if not names:
        return None
    record = folder / f"text-choice-{fingerprint()}.json"
    try:
        choice = json.loads(record.read_text(encoding="utf-8"))["engine"]
        if choice != "numpy" and choice not in names:
            raise ValueError(choice)
        encoders = {}
    except (OSError, ValueError, KeyError, TypeError):
        try:
            encoders = {n: TextEncoder(folder / onnx_export.FILES["text-" + n[5:]]) for n in names}
            seconds = measure(tower, encoders)
        except Exception:  # a broken file or runtime: numpy answers
            return None
        choice = faster(seconds)
        try:
            record.write_text(json.dumps({"engine": choice, "seconds": seconds}), encoding="utf-8")
        except OSError:
            pass
    if choice == "numpy":
        return None
    return encoders.get(choice) or TextEncoder(folder / onnx_export.FILES["text-" + choice[5:]])


def measure(tower, encoders: dict) -> dict:
    """Seconds per query set for numpy and each encoder (best of ROUNDS, interleaved)."""
    batches = [tower.ids([q]) for q in QUERIES]
    runs = {"numpy": lambda ids, last: tower.run(ids, last)}
    runs.update({n: (lambda ids, last, e=e: e.encode_ids(ids)) for n, e in encoders.items()})
    best = {}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            start = time.perf_counter()
            for ids, last in batches:
                run(ids, last)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    return {n: round(s / len(batches), 6) for n, s in best.items()}


def answering(tower, loaded: bool, exact: bool):
    """``tower`` if it should answer a text query, else None (the torch model answers): always
    before the torch model is loaded; once it is, only with an ONNX Runtime engine (measured
    faster than numpy, which is slower than the loaded torch path) that ``exact`` allows."""
    if tower is None or not loaded:
        return tower
    engine = tower.engine
    return tower if engine is not None and not (exact and engine.int8) else None
