"""Searching the words in images: the ranking of ``clipsql.text_in_image`` with a filter, the
OCR rows of hits, and the word boxes a query matches (for highlighting).

Words are never split here: every query and every text goes through the SQL functions
``clipsql.ocr_query`` and ``clipsql.ocr_document`` (migrations/0016_ocr.sql), the one home of
the tokenisation. The ranking has one home too, the SQL function ``clipsql.words_ranking``
(``migrations/0020_one_home.sql``; ``clipsql.text_in_image`` is it with the paths), which
:func:`text_in_image` calls; a filter (``where``/``params``, over ``clipsql.images``
columns) runs read-only through :mod:`clipsql.database.user_sql`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import make_dataclass

from clipsql.database import images, user_sql
from clipsql.errors import QueryError
from clipsql.ocr.run import TABLE
from clipsql.query import search

#: An OCR row is current unless it was read from other content of the image (the rule:
#: ``clipsql.is_current``).
CURRENT = "clipsql.is_current(o.image_sha256, i.sha256)"
#: Longest query, in characters (a longer one is an error, not a slow search).
MAX_QUERY_CHARS = 100_000


#: One words-in-the-image result: a search hit (every column of one) whose ``score`` is
#: ``ts_rank_cd`` of its words, with the words read in it (``ocr_text``).
TextHit = make_dataclass(
    "TextHit", [("ocr_text", str | None, None)], bases=(search.Hit,),
    namespace={"__module__": __name__,
               "__doc__": "One image (or video moment) whose recognised words hold every word "
                          "of the query: a search hit, ``score`` the text rank, with the words "
                          "read in it."})

def check_query(query) -> None:
    if not isinstance(query, str):
        raise QueryError(f"the text to find must be a string, not {type(query).__name__}")
    if "\x00" in query:
        raise QueryError("the text to find contains a NUL character")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the text to find is {len(query)} characters long, over the "
                         f"{MAX_QUERY_CHARS} limit")


def text_in_image(conn, query: str, k: int = 10, where=None, params=()) -> search.Results:
    """The images whose current OCR text holds every word of ``query``, best first (ties
    by id), at most ``k``, as :class:`TextHit`: ``clipsql.words_ranking``; empty when none
    does or the query has no word. The filter (``where``/``params``) runs read-only under
    its deadline."""
    check_query(query)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise QueryError(f"k must be a positive integer, not {k!r}")
    with user_sql.read_only(conn, where, what="text search") as ro:
        sql = search.hits_sql("clipsql.words_ranking(%s, %s, %s) "
                              "WITH ORDINALITY AS r(id, score, ocr_text, n)", ", r.ocr_text")
        rows = ro.execute(sql, [query, k, search.filter_sql(ro, where, params)]).fetchall()
    results = search.Results(TextHit(*r) for r in rows)
    results.strategy = "words"
    return results


def ocr_for(conn, ids: Sequence[int]) -> dict[int, dict]:
    """The current OCR row of each image that has one: id -> ``{"engine", "languages",
    "text", "confidence", "words"}``."""
    ids = [int(i) for i in ids]
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT o.image_id, o.engine, o.languages, o.text, o.confidence, o.words "
        f"FROM {TABLE} o JOIN {images.TABLE} i ON i.id = o.image_id "
        f"WHERE o.image_id = ANY(%s) AND {CURRENT}", [ids]).fetchall()
    return {r[0]: {"engine": r[1], "languages": r[2], "text": r[3], "confidence": r[4],
                   "words": r[5]} for r in rows}


# A word matches when its own words share a term with the query, or when it and its
# neighbour together make a term neither makes alone (a CJK bigram across two "words":
# Tesseract often reads Japanese one character a word).
_MATCHES = """
WITH w AS (
    SELECT e.n, tsvector_to_array(clipsql.ocr_document(e.word->>'text')) AS own, e.word->>'text' AS t
      FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(word, n)
     WHERE jsonb_typeof(e.word) = 'object'
), q AS (
    SELECT tsvector_to_array(clipsql.ocr_document(%s)) AS terms
), pairs AS (
    SELECT a.n AS a, b.n AS b,
           ARRAY(SELECT unnest(tsvector_to_array(clipsql.ocr_document(a.t || ' ' || b.t)))
                 EXCEPT SELECT unnest(a.own) EXCEPT SELECT unnest(b.own)) AS across
      FROM w a JOIN w b ON b.n = a.n + 1
)
SELECT w.n FROM w, q WHERE w.own && q.terms
UNION SELECT p.a FROM pairs p, q WHERE p.across && q.terms
UNION SELECT p.b FROM pairs p, q WHERE p.across && q.terms
ORDER BY 1
"""


def matches(words_json, query: str, conn) -> list[dict]:
    """The words (``{"text", "conf", "box"}`` of an OCR row's ``words``) that hold a term of
    ``query``, in reading order, each with its ``index`` in ``words_json``: the boxes to
    highlight. ``words_json``: the list, or its JSON text. One query, on ``conn``."""
    check_query(query)
    words = json.loads(words_json) if isinstance(words_json, str | bytes) else words_json
    if not isinstance(words, list):
        raise QueryError("words must be a JSON array of OCR words")
    if not words or not query.strip():
        return []
    rows = conn.execute(_MATCHES, [json.dumps(words, ensure_ascii=False), query]).fetchall()
    return [{**words[n - 1], "index": n - 1} for (n,) in rows]
