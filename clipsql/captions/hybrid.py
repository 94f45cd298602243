"""Hybrid search: the CLIP ranking fused with full-text rankings of the stored captions
and of the words recognised in the images (OCR), by reciprocal rank.

The rule has one home, the SQL function ``clipsql.hybrid_ranking``
(``migrations/0020_one_home.sql``; ``clipsql.hybrid_search`` is it for plain SQL):

* ``clip``: cosine similarity of the query's embedding (``clipsql.rank_images``);
* ``text``: ``ts_rank_cd(captions.tsv, websearch_to_tsquery('simple', query))`` over current
  captions, an image's best caption counting;
* ``ocr``: the words in the image (``clipsql.words_ranking``).

Each keeps its best ``candidates`` rows (under the filter); a row scores
``sum over the rankings that found it of weight / (rrf_k + rank)``, ranks from 1, best first,
ties by id (``weights`` default 1 each; a ranking of weight 0 is not run). This module builds
the call and reads its rows back as :class:`HybridHit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, make_dataclass

from clipsql.database import user_sql
from clipsql.database.queries import SQL
from clipsql.errors import QueryError
from clipsql.query import search

#: The usual RRF constant: larger values flatten the gap between the first ranks.
RRF_K = 60
#: Rows each ranking contributes before fusion (at least the number of results asked for).
CANDIDATES = 100
#: The names of the rankings, as ``found_by`` lists them and ``weights`` keys them.
RANKINGS = ("clip", "text", "ocr")

#: A hybrid result: the :class:`~clipsql.query.search.Hit` columns with ``score`` the fused
#: RRF score, plus each ranking's own score and rank (None where it missed the row), the
#: rankings that found it, and the image's caption (None without one).
HybridHit = make_dataclass(
    "HybridHit", [("clip_score", float | None), ("text_score", float | None),
                  ("clip_rank", int | None), ("text_rank", int | None),
                  ("found_by", list), ("caption", str | None)],
    bases=(search.Hit,),
    namespace={"__module__": __name__,
               "__doc__": "One hybrid result: a search hit whose ``score`` is the fused RRF "
                          "score, with each ranking's rank and score and the caption."})
# the OCR ranking's fields come after the caption's (their defaults keep older callers whole)
HybridHit = make_dataclass(
    "HybridHit", [("ocr_score", float | None, None), ("ocr_rank", int | None, None),
                  ("ocr_text", str | None, None)],
    bases=(HybridHit,),
    namespace={"__module__": __name__,
               "__doc__": "One hybrid result: a search hit whose ``score`` is the fused RRF "
                          "score, with each ranking's rank and score, the caption and the "
                          "words recognised in the image (``ocr_text``)."})

#: The fused ranking :func:`hybrid` runs: ``clipsql.hybrid_ranking``'s rows as hits.
HYBRID_SQL = search.hits_sql(SQL["hybrid_ranking"], SQL["hybrid_columns"])

def text_ranking(conn, text: str, *, where=None, params=(), limit: int = CANDIDATES,
                 caption_model: str | None = None) -> list[tuple[int, float, str]]:
    """``(id, ts_rank_cd, caption)`` of the images whose captions match ``text``, best first:
    the captions' ranking of ``clipsql.hybrid_ranking`` alone."""
    hits = hybrid(conn, None, text, where=where, params=params, limit=limit, candidates=limit,
                  caption_model=caption_model, weights={"clip": 0, "text": 1, "ocr": 0})
    return [(h.id, h.text_score, h.caption) for h in hits]


def check_text(text) -> None:
    if not isinstance(text, str) or not text.strip():
        raise QueryError("a hybrid search needs a text query (its words are searched in the "
                         "captions)")
    if "\x00" in text:
        raise QueryError("the query contains a NUL character")


def captions_for(conn, ids: Sequence[int], caption_model: str | None = None) -> dict[int, str]:
    """The current caption of each image that has one (of ``caption_model``, else the newest):
    ``clipsql.current_caption``, the rule ``clipsql.hybrid_ranking`` shows too."""
    ids = [int(i) for i in ids]
    if not ids:
        return {}
    rows = conn.execute(SQL["captions_current"], [ids, caption_model]).fetchall()
    return dict(rows)


def check_weights(weights) -> dict:
    """``weights`` (a mapping of :data:`RANKINGS` names to numbers >= 0, missing ones 1) as
    a full dict; :class:`QueryError` for unknown names, bad numbers or all zero."""
    given = dict(weights or {})
    unknown = sorted(set(given) - set(RANKINGS))
    if unknown:
        raise QueryError(f"unknown hybrid ranking {', '.join(map(repr, unknown))}: the "
                         f"rankings are {', '.join(RANKINGS)}")
    full = {}
    for name in RANKINGS:
        w = given.get(name, 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < float("inf"):
            raise QueryError(f"the weight of the {name} ranking must be a number of 0 or more, "
                             f"not {w!r}")
        full[name] = float(w)
    if not any(full.values()):
        raise QueryError("at least one hybrid ranking needs a weight above 0")
    return full


def hybrid(conn, vector, text: str, *, where=None, params=(), limit: int = 10,
           rrf_k: int = RRF_K, candidates: int = CANDIDATES, caption_model: str | None = None,
           strategy: str = "auto", weights=None) -> search.Results:
    """The fused ranking of ``vector`` (the embedding of ``text``), ``text``'s words in the
    captions and in the images' recognised text: ``clipsql.hybrid_ranking``, as
    :class:`HybridHit` results, best first. ``weights``: e.g. ``{"ocr": 2, "text": 0}``."""
    from pgvector import HalfVector

    check_text(text)
    for name, value in (("limit", limit), ("candidates", candidates)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f"{name} must be a positive integer, not {value!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise QueryError(f"rrf_k must be an integer of 0 or more, not {rrf_k!r}")
    weights = check_weights(weights)
    query = HalfVector(vector) if weights["clip"] and vector is not None else None
    with user_sql.filtered(conn, where, params) as (ro, bound_filter):
        rows = ro.execute(HYBRID_SQL, [text, query, limit, rrf_k, candidates, weights["clip"],
                                       weights["text"], weights["ocr"], bound_filter,
                                       caption_model, strategy]).fetchall()
        plan = ro.execute(SQL["ranking_settings"]).fetchone()[0]
    names = [f.name for f in fields(HybridHit) if f.name != "found_by"]
    results = search.Results()
    for row in rows:
        hit = dict(zip(names, row))
        ranks = (hit["clip_rank"], hit["text_rank"], hit["ocr_rank"])
        results.append(HybridHit(**hit, found_by=[n for n, r in zip(RANKINGS, ranks)
                                                  if r is not None]))
    results.strategy = f"hybrid({plan or 'index'})" if weights["clip"] else "hybrid(words)"
    return results
