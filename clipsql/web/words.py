"""Words in the image over HTTP: the web's side of OCR (:mod:`clipsql.ocr`).

``/api/search?words=`` ranks the images whose current recognised text holds every word
(:func:`clipsql.ocr.search.text_in_image`, its filter read-only through the library's guard)
as search hits (:func:`text_in_image`); ``/api/images/ID/words`` gives one image's
text and the boxes of the words a query matches (:func:`words_of`). The words are split only
in SQL (``clipsql.ocr_query``): any text is a query, never syntax.
"""

from __future__ import annotations

import math

from clipsql.database.queries import SQL
from clipsql.errors import QueryError
from clipsql.ocr import search as ocr_search

#: Longest words query (the API's bound too).
MAX_WORDS_CHARS = 1000


def check_words(words: str) -> str:
    """The words of a words-in-the-image query, or QueryError (400) saying why not."""
    if not isinstance(words, str) or not words.strip():
        raise QueryError("a words-in-the-image search needs some words")
    if "\x00" in words or len(words) > MAX_WORDS_CHARS:
        raise QueryError(f"the words must be at most {MAX_WORDS_CHARS} characters, without NUL")
    return words.strip()


def text_in_image(conn, words: str, limit: int, where: str | None, params) -> list:
    """The images whose recognised text matches ``words``, best first, ``limit`` at most, as
    search hits (:func:`clipsql.ocr.search.text_in_image`: every column of a hit, ``score``
    the text rank, the words read as ``ocr_text``) with ``ocr_score``; ``where``/``params``
    (the page's filters) run under the library's read-only guard, as every search's do."""
    hits = list(ocr_search.text_in_image(conn, check_words(words), k=limit, where=where,
                                     params=params))
    for h in hits:
        h.ocr_score = h.score
    return hits


def words_of(conn, image_id: int, query: str | None) -> dict | None:
    """One row's OCR: text, engine, languages, confidence, and the word boxes matching
    ``query`` (all words when it is None), or None when the row has no current OCR (none,
    or one read from content the file no longer has)."""
    query = check_words(query) if query is not None and query.strip() else None
    found = conn.execute(SQL["web_words_of"].format(current=ocr_search.CURRENT),
                         (image_id,)).fetchone()
    if found is None:
        return None
    text, engine, languages, confidence, words, width, height = found
    if confidence is not None and not math.isfinite(confidence):
        confidence = None
    boxes = ocr_search.matches(words, query, conn) if query else (words or [])
    return {"text": text or "", "engine": engine, "languages": languages,
            "confidence": confidence, "width": width, "height": height,
            "matches": [b for b in map(_box, boxes) if b is not None]}


def _box(word) -> dict | None:
    """One word as the API shows it, or None when it has no usable box (OCR rows may be
    written by hand: nothing in them is trusted to have the documented shape)."""
    if not isinstance(word, dict):
        return None
    try:
        box = [float(v) for v in word.get("box")]
    except (TypeError, ValueError):
        return None
    if len(box) != 4 or not all(math.isfinite(v) and abs(v) < 2**31 for v in box):
        return None
    conf = word.get("conf")
    conf = float(conf) if isinstance(conf, int | float) and not isinstance(conf, bool) else None
    return {"text": str(word.get("text", "")), "box": [round(v) for v in box],
            "conf": conf if conf is not None and math.isfinite(conf) else None}
