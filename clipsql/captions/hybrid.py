"""Hybrid search: the CLIP ranking fused with a full-text ranking of the stored captions.

Two rankings of the same filtered rows (the SQL filter runs through
:mod:`clipsql.database.user_sql` for both, read-only):

* CLIP: cosine similarity of the query's embedding (:func:`clipsql.query.search.rank`);
* words: ``ts_rank_cd(captions.tsv, websearch_to_tsquery('simple', query))`` over current
  captions (``image_sha256`` NULL or the image's own), an image's best caption counting.

Each keeps its best ``candidates`` rows; reciprocal rank fusion (Cormack et al., 2009) then
scores a row by ``sum over the rankings that found it of 1 / (rrf_k + rank)``, ranks from 1,
best first, ties by id. Only ranks count, so the two scales (cosine, ts_rank_cd) never need
calibrating. ``clipsql.hybrid_search(query, k, rrf_k, candidates)`` (migrations 0011, 0014)
is the same in SQL, without a filter; tests/integration/test_sql_parity.py runs both on the
same rows and checks that its defaults are :data:`RRF_K` and :data:`CANDIDATES`.

>>> [(key, round(score, 4), ranks) for key, score, ranks in rrf([["a", "b"], ["b", "c"]])]
[('b', 0.0325, (2, 1)), ('a', 0.0164, (1, None)), ('c', 0.0161, (None, 2))]
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
#: The names of the two rankings, as ``found_by`` lists them.
RANKINGS = ("clip", "text")
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


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K):
    """Reciprocal rank fusion of ranked key lists (best first, each key once per list).

    Returns ``(key, score, ranks)`` best first (ties by key), ``ranks`` one 1-based rank or
    None per ranking.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise QueryError(f"rrf_k must be an integer of 0 or more, not {k!r}")
    ranks: dict = {}
    for n, ranking in enumerate(rankings):
        for position, key in enumerate(ranking, start=1):
            slot = ranks.setdefault(key, [None] * len(rankings))
            if slot[n] is None:
                slot[n] = position
    fused = []
    for key, found in ranks.items():
        score = 0.0
        for r in found:
            if r is not None:
                score += 1.0 / (k + r)
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


def hybrid(conn, vector, text: str, *, where=None, params=(), limit: int = 10,
           rrf_k: int = RRF_K, candidates: int = CANDIDATES, caption_model: str | None = None,
           strategy: str = "auto") -> search.Results:
    """The fused ranking of ``vector`` (the embedding of ``text``) and ``text``'s words in the
    captions: :class:`HybridHit` results, best first (see module docs)."""
    check_text(text)
    for name, value in (("limit", limit), ("candidates", candidates)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f"{name} must be a positive integer, not {value!r}")
    rrf([], rrf_k)  # checks rrf_k before any query runs
    depth = max(limit, candidates)
    clip = search.rank(conn, vector, where=where, params=params, limit=depth, strategy=strategy)
    sql, args = _text_sql(text, where, params, depth, caption_model)
    with user_sql.read_only(conn, where) as ro:
        words = [tuple(r) for r in ro.execute(sql, args).fetchall()]
        fused = rrf([[h.id for h in clip], [w[0] for w in words]], rrf_k)[:limit]
        by_id = {h.id: asdict(h) for h in clip}
        missing = [key for key, _, _ in fused if key not in by_id]
        if missing:
            cols = images.select_list(images.HIT)
            for row in ro.execute(f"SELECT {cols} FROM {images.TABLE} WHERE id = ANY(%s)",
                                  (missing,)).fetchall():
                by_id[row[0]] = {**dict(zip((c.name for c in images.HIT), row)), "score": None}
        found = {w[0]: w for w in words}
        others = captions_for(ro, [key for key, _, _ in fused if key not in found],
                              caption_model)
    results = search.Results()
    for key, score, (clip_rank, text_rank) in fused:
        row = dict(by_id[key])
        clip_score = row.pop("score")
        word = found.get(key)
        results.append(HybridHit(
            **row, score=score, clip_score=clip_score,
            text_score=float(word[1]) if word else None, clip_rank=clip_rank,
            text_rank=text_rank,
            found_by=[n for n, r in zip(RANKINGS, (clip_rank, text_rank)) if r is not None],
            caption=word[2] if word else others.get(key)))
    results.strategy = f"hybrid({clip.strategy})"
    return results
