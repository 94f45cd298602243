"""Query algebra: several parts (texts, images, negatives), each with a weight, in one query.

A query is the weighted sum of its parts' L2-normalised embeddings, normalised again:
``q = normalize(sum_i w_i * normalize(e_i))``. A negative weight (:func:`Not`) moves the
query away from a part. Plain strings are texts of weight 1. The rule has one home, SQL's
``clipsql.combine`` (migration 0008), which :func:`combine` calls.

>>> parts = as_parts(["a beach", Image("sunset.jpg", weight=0.5), Not("people")])
>>> [(type(p).__name__, p.weight) for p in parts]
[('Text', 1.0), ('Image', 0.5), ('Text', -1.0)]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from clipsql.database.queries import SQL
from clipsql.errors import QueryError

if TYPE_CHECKING:
    import numpy as np


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


def check_text(text) -> str:
    """The text itself, or :class:`QueryError` if it cannot be a query (or a text part)."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the text query is empty")
    if "\x00" in text:
        raise QueryError("the text query contains a NUL character")
    return text


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
        if isinstance(p, Text):
            check_text(p.text)
    return parts


def parse(query, image=None) -> tuple[list[Text | Image], Image | None]:
    """A search's parts (``query``'s, then ``image`` as one more part; none for neither)
    with :func:`self_reference`'s image: the one image the query is made of, or None."""
    parts = [] if query is None else as_parts(query)
    if image is not None:
        parts.append(Image(image))
    return parts, self_reference(parts)


def combine(conn, vectors, weights=None) -> np.ndarray:
    """``clipsql.combine(vectors, weights)`` (``normalize(sum(w * normalize(v)))``, migration
    0008) as float32, on ``conn``; its refusals (no parts, a weight count other than the part
    count, parts of different dimensions, parts that cancel out) as :class:`QueryError`."""
    import numpy as np
    import psycopg
    from pgvector import HalfVector

    if vectors is None or len(vectors) == 0:
        raise QueryError("a query needs at least one embedding")
    if any(v is None for v in vectors):
        raise QueryError("a query part has no embedding")
    if any(not np.isfinite(np.asarray(v, np.float64)).all() for v in vectors):
        raise QueryError("a query part's embedding is not finite")
    weights = None if weights is None else [None if w is None else float(w) for w in weights]
    try:
        with conn.transaction():
            row = conn.execute(SQL["combine"],
                               [[HalfVector(np.asarray(v, np.float32)) for v in vectors],
                                weights]).fetchone()
    except psycopg.errors.DataError as exc:
        message = (exc.diag.message_primary or str(exc)).removeprefix("clipsql: ")
        raise QueryError(message) from None
    return row[0].to_numpy().astype(np.float32)


def self_reference(parts) -> Image | None:
    """The one image a query is made of, to be left out of its own results (``similar``)."""
    if len(parts) == 1 and isinstance(parts[0], Image) and parts[0].weight > 0 \
            and not isinstance(parts[0].image, bytes):
        return parts[0]
    return None
