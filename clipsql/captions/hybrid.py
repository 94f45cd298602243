"""Hybrid search: the CLIP ranking fused with full-text rankings of the stored captions
and of the words recognised in the images (OCR).

Three rankings of the same filtered rows (the SQL filter runs through
:mod:`clipsql.database.user_sql` for all, read-only):

* ``clip``: cosine similarity of the query's embedding (:func:`clipsql.query.search.rank`);
* ``text``: ``ts_rank_cd(captions.tsv, websearch_to_tsquery('simple', query))`` over current
  captions (``image_sha256`` NULL or the image's own), an image's best caption counting;
* ``ocr``: the words in the image (:func:`clipsql.ocr.search.ranking`, ``clipsql.ocr``).

Each keeps its best ``candidates`` rows; reciprocal rank fusion (Cormack et al., 2009) then
scores a row by ``sum over the rankings that found it of weight / (rrf_k + rank)``, ranks
from 1, best first, ties by id (``weights`` default 1 each; a ranking of weight 0 is not
run). Only ranks count, so the scales (cosine, ts_rank_cd) never need calibrating. ``clipsql.hybrid_search(query, k, rrf_k, candidates)`` (migrations 0011, 0014)
is the same in SQL, without a filter; tests/integration/test_sql_parity.py runs both on the
same rows and checks that its defaults are :data:`RRF_K` and :data:`CANDIDATES`.

>>> [(key, round(score, 4), ranks) for key, score, ranks in rrf([["a", "b"], ["b", "c"]])]
[('b', 0.0325, (2, 1)), ('a', 0.0164, (1, None)), ('c', 0.0161, (None, 2))]
>>> [key for key, _, _ in rrf([["a", "b"], ["b", "c"]], weights=[1, 3])]
['b', 'c', 'a']
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, make_dataclass

from clipsql.captions.generate import TABLE
from clipsql.database import images, user_sql
from clipsql.errors import QueryError
from clipsql.query import search

#: The usual RRF constant: larger values flatten the gap between the first ranks.
RRF_K = 60
#: Rows each ranking contributes before fusion (at least the number of results asked for).
CANDIDATES = 100
#: The names of the rankings, as ``found_by`` lists them and ``weights`` keys them.
RANKINGS = ("clip", "text", "ocr")
#: A caption is current unless it was written for other content of the image.
CURRENT = "(c.image_sha256 IS NULL OR c.image_sha256 = i.sha256)"

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


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K, weights=None):
    """Reciprocal rank fusion of ranked key lists (best first, each key once per list), each
    list's terms times its weight (default 1).

    Returns ``(key, score, ranks)`` best first (ties by key), ``ranks`` one 1-based rank or
    None per ranking.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise QueryError(f"rrf_k must be an integer of 0 or more, not {k!r}")
    weights = [1.0] * len(rankings) if weights is None else [float(w) for w in weights]
    ranks: dict = {}
    for n, ranking in enumerate(rankings):
        for position, key in enumerate(ranking, start=1):
            slot = ranks.setdefault(key, [None] * len(rankings))
            if slot[n] is None:
                slot[n] = position
    fused = []
    for key, found in ranks.items():
        score = 0.0
        for r, w in zip(found, weights):
            if r is not None:
                score += w / (k + r)
        fused.append((key, score, tuple(found)))
    fused.sort(key=lambda item: (-item[1], item[0]))
    return fused


_BEST = (
    "WITH q AS (SELECT websearch_to_tsquery('simple', %s) AS q), "
    "best AS (SELECT DISTINCT ON (c.image_id) c.image_id, ts_rank_cd(c.tsv, q.q) AS s, c.caption "
    f"FROM q, {TABLE} c JOIN {images.TABLE} i ON i.id = c.image_id "
    f"WHERE c.tsv @@ q.q AND {CURRENT} {{model}} {{where}} "
    "ORDER BY c.image_id, s DESC, c.model) "
    "SELECT image_id, s, caption FROM best ORDER BY s DESC, image_id LIMIT %s")


def text_ranking(conn, text: str, *, where=None, params=(), limit: int = CANDIDATES,
                 caption_model: str | None = None) -> list[tuple[int, float, str]]:
    """``(id, ts_rank_cd, caption)`` of the images whose captions match ``text``, best first."""
    check_text(text)
    sql, args = _text_sql(text, where, params, limit, caption_model)
    with user_sql.read_only(conn, where) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def _text_sql(text, where, params, limit, caption_model):
    wrapped = user_sql.wrap(where)
    sql = _BEST.format(
        model="AND c.model = %s" if caption_model else "",
        where=f"AND i.id IN (SELECT id FROM {images.TABLE} WHERE {wrapped})" if wrapped else "")
    args = [text, *([caption_model] if caption_model else []), *(params or ()), limit]
    return sql, args


def check_text(text) -> None:
    if not isinstance(text, str) or not text.strip():
        raise QueryError("a hybrid search needs a text query (its words are searched in the "
                         "captions)")
    if "\x00" in text:
        raise QueryError("the query contains a NUL character")


def captions_for(conn, ids: Sequence[int], caption_model: str | None = None) -> dict[int, str]:
    """The current caption of each image that has one (of ``caption_model``, else the newest)."""
    ids = [int(i) for i in ids]
    if not ids:
        return {}
    model = "AND c.model = %s" if caption_model else ""
    rows = conn.execute(
        f"SELECT DISTINCT ON (c.image_id) c.image_id, c.caption FROM {TABLE} c "
        f"JOIN {images.TABLE} i ON i.id = c.image_id WHERE c.image_id = ANY(%s) AND {CURRENT} "
        f"{model} ORDER BY c.image_id, c.created_at DESC, c.model",
        [ids, *([caption_model] if caption_model else [])]).fetchall()
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
    captions and in the images' recognised text: :class:`HybridHit` results, best first
    (see module docs). ``weights``: e.g. ``{"ocr": 2, "text": 0}``."""
    from clipsql.ocr import search as ocr_search

    check_text(text)
    for name, value in (("limit", limit), ("candidates", candidates)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f"{name} must be a positive integer, not {value!r}")
    rrf([], rrf_k)  # checks rrf_k before any query runs
    weights = check_weights(weights)
    depth = max(limit, candidates)
    clip = search.rank(conn, vector, where=where, params=params, limit=depth,
                       strategy=strategy) if weights["clip"] else search.Results()
    sql, args = _text_sql(text, where, params, depth, caption_model)
    with user_sql.read_only(conn, where) as ro:
        words = [tuple(r) for r in ro.execute(sql, args).fetchall()] if weights["text"] else []
        seen = ocr_search.ranking(ro, text, where=where, params=params,
                                  limit=depth) if weights["ocr"] else []
        fused = rrf([[h.id for h in clip], [w[0] for w in words], [o[0] for o in seen]],
                    rrf_k, [weights[n] for n in RANKINGS])[:limit]
        by_id = {h.id: asdict(h) for h in clip}
        missing = [key for key, _, _ in fused if key not in by_id]
        if missing:
            cols = images.select_list(images.HIT)
            for row in ro.execute(f"SELECT {cols} FROM {images.TABLE} WHERE id = ANY(%s)",
                                  (missing,)).fetchall():
                by_id[row[0]] = {**dict(zip((c.name for c in images.HIT), row)), "score": None}
        found = {w[0]: w for w in words}
        read = {o[0]: o for o in seen}
        others = captions_for(ro, [key for key, _, _ in fused if key not in found],
                              caption_model)
    results = search.Results()
    for key, score, ranks in fused:
        row = dict(by_id[key])
        clip_score = row.pop("score")
        if not weights["clip"]:
            clip_score = None
        word, ocr = found.get(key), read.get(key)
        results.append(HybridHit(
            **row, score=score, clip_score=clip_score,
            text_score=float(word[1]) if word else None, clip_rank=ranks[0],
            text_rank=ranks[1], ocr_score=float(ocr[1]) if ocr else None, ocr_rank=ranks[2],
            found_by=[n for n, r in zip(RANKINGS, ranks) if r is not None],
            caption=word[2] if word else others.get(key), ocr_text=ocr[2] if ocr else None))
    results.strategy = f"hybrid({clip.strategy})" if weights["clip"] else "hybrid(words)"
    return results
