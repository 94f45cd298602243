"""Query algebra: several parts (texts, images, negatives), each with a weight, in one query.

A query is the weighted sum of its parts' L2-normalised embeddings, normalised again:
``q = normalize(sum_i w_i * normalize(e_i))``. A negative weight (:func:`Not`) moves the
query away from a part. Plain strings are texts of weight 1. :func:`combine` is the rule of
SQL's ``clipsql.combine`` too (migration 0008), edge cases included.

>>> parts = as_parts(["a beach", Image("sunset.jpg", weight=0.5), Not("people")])
>>> [(type(p).__name__, p.weight) for p in parts]
[('Text', 1.0), ('Image', 0.5), ('Text', -1.0)]
>>> import numpy as np
>>> [round(float(x), 4) for x in combine([np.array([1.0, 0.0]), np.array([0.0, 2.0])], [1, -1])]
[0.7071, -0.7071]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np

from clipsql.errors import QueryError


@dataclass(frozen=True)
class Text:
    """A text part of a query."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Image:
    """An image part: a row id, a path (in the table, or any image file) or raw image bytes."""

    image: int | str | os.PathLike | bytes
    weight: float = 1.0


def Not(part, weight: float = 1.0):
    """A part to move away from: ``Not("people")`` is ``Text("people", weight=-1)``."""
    return replace(_one(part), weight=-abs(weight) * abs(_one(part).weight))


def _one(part) -> Text | Image:
    if isinstance(part, (Text, Image)):
        return part
    if isinstance(part, str):
        return Text(part)
    if isinstance(part, (bytes, os.PathLike)) or (isinstance(part, int) and not isinstance(part, bool)):
        return Image(part)
    raise QueryError(f"a query part is a text, clipsql.Image(...) or clipsql.Not(...), "
                     f"not {type(part).__name__}")


def as_parts(query) -> list[Text | Image]:
    """The parts of a query given as one text, one part, or a list of them."""
    items = query if isinstance(query, (list, tuple)) else [query]
    parts = [_one(p) for p in items]
    if not parts:
        raise QueryError("the query has no parts")
    for p in parts:
        if isinstance(p.weight, bool) or not isinstance(p.weight, (int, float)) \
                or not math.isfinite(p.weight) or p.weight == 0:
            raise QueryError(f"a part's weight must be a finite non-zero number, not {p.weight!r}")
    return parts


def combine(vectors, weights=None) -> np.ndarray:
    """``normalize(sum(w * normalize(v)))`` as float32: the rule of ``clipsql.combine``
    (migration 0008; tests/integration/test_sql_parity.py runs both on the same inputs).

    A weight of None counts 1 and a part of zeros adds nothing; QueryError for no parts, a
    weight count other than the part count, a missing part, parts of different dimensions,
    weights that are not finite or overflow, and parts that cancel out.
    """
    if vectors is None or len(vectors) == 0:
        raise QueryError("a query needs at least one embedding")
    weights = [None] * len(vectors) if weights is None else list(weights)
    if len(weights) != len(vectors):
        raise QueryError(f"the query has {len(vectors)} embeddings but {len(weights)} weights")
    total = None
    for v, w in zip(vectors, weights):
        if v is None:
            raise QueryError("a query part has no embedding")
        v = np.asarray(v, np.float64)
        if total is None:
            total = np.zeros(len(v), np.float64)
        elif v.shape != total.shape:
            raise QueryError("the query's parts have different dimensions")
        norm = np.linalg.norm(v)
        if not np.isfinite(norm):
            raise QueryError("a query part's embedding is not finite")
        if norm > 0:
            with np.errstate(over="ignore", invalid="ignore"):  # refused below, not warned
                total += (1.0 if w is None else float(w)) * (v / norm)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = math.sqrt(float(np.sum(total * total)))
    if not math.isfinite(norm):
        raise QueryError("the query's weights are not finite numbers, or too large")
    if norm < 1e-6:
        raise QueryError("the query's parts cancel each other out")
    return (total / norm).astype(np.float32)


def self_reference(parts) -> Image | None:
    """The one image a query is made of, to be left out of its own results (``similar``)."""
    if len(parts) == 1 and isinstance(parts[0], Image) and parts[0].weight > 0 \
            and not isinstance(parts[0].image, bytes):
        return parts[0]
    return None
