"""The JSON shapes of the web API (they make its OpenAPI description at ``/openapi.json``).

Every answer a route can give is declared with it (``responses=`` from :func:`errors`), so
the description is complete: errors are ``{"detail": "..."}`` (422: FastAPI's list of
validation errors), at most :data:`MAX_DETAIL` characters of message.

Scores are finite numbers (``FiniteFloat``): a NaN is refused as the answer is built, never
sent as ``null`` where the description says a number. A hit is exactly
:meth:`clipsql.query.search.Hit.to_dict` (the library's and ``clipsql search
--json``'s shape) plus the file name and the URLs of its thumbnail and full image (a video
moment's: its keyframe) and, for a video moment, of its video.
"""

from __future__ import annotations

import datetime as dt
import os

from pydantic import BaseModel, Field, FiniteFloat, create_model

from clipsql.database import images

DESCRIPTION = """CLIP image search over a PostgreSQL collection.

Search by text (`GET /api/search?q=`), by a stored image (`GET /api/search?image_id=`) or by an
uploaded image (`POST /api/search/image`), or by the words in the images
(`GET /api/search?words=`, their recognised text), with filters on the date taken, camera, GPS, labels,
or a read-only SQL `where` fragment over `clipsql.images` columns. Results are the library's
(`Collection.search`), best first, with thumbnail and image URLs. A video is one row per
moment (`start_s`, `end_s`): its thumbnail and image are the moment's keyframe, and
`video_url` (`GET /videos/ID`, with byte ranges) is the video file.
"""


#: Longest error message in a response body.
MAX_DETAIL = 500

#: What each error status means, wherever a route can answer it.
ERRORS = {
    304: "the client's copy (If-None-Match) is current",
    400: "a malformed query: bad filter, WHERE fragment, paging or upload",
    403: "a cross-site request (Sec-Fetch-Site or Origin of another site)",
    404: "no such image, or its file is gone or changed since it was loaded",
    409: "nothing to search yet (empty collection), or another model embedded it",
    413: "the request body or the uploaded image is too large",
    416: "the requested byte range lies outside the file (Content-Range: bytes */SIZE)",
    503: "the database is unreachable or busy, or the model cannot be loaded; try again",
}


class Detail(BaseModel):
    """An error: what went wrong, for people."""

    detail: str


def short(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut).

    >>> short("x" * 600)[-3:], len(short("x" * 600))
    ('xx…', 500)
    """
    return text if len(text) <= limit else text[:limit - 1] + "…"


def errors(*codes: int) -> dict:
    """``responses=`` for a route: these statuses, each with the :class:`Detail` body."""
    return {code: ({"description": ERRORS[code]} if code == 304 else
                   {"model": Detail, "description": ERRORS[code]}) for code in codes}


def _row_fields() -> dict:
    """The fields of a hit and of an image's details, from :data:`clipsql.database.images.HIT`
    (the columns' one home), in its order: timestamps as ISO text, nullable columns as
    ``| None``; plus the file name after ``path`` and the two URLs at the end."""
    fields = {}
    for c in images.HIT:
        kind = str if c.python is dt.datetime else c.python
        fields[c.name] = (kind | None if c.nullable else kind, Field(description=c.doc))
        if c.name == "path":
            fields["name"] = (str, Field(description="the file name"))
    fields["thumbnail_url"] = (str, Field(description="a small JPEG of the image"))
    fields["image_url"] = (str, Field(description="the image file itself (a video moment: "
                                                   "its keyframe, a JPEG)"))
    fields["video_url"] = (str | None, Field(None, description="a video moment's video file "
                                                               "(byte ranges); null otherwise"))
    return fields


_Row = create_model(
    "_Row", __module__=__name__, **_row_fields(),
    __doc__="The columns of a clipsql.images row; the file facts are null for imported "
            "embeddings.")


class Hit(_Row):
    score: FiniteFloat = Field(description="cosine similarity to the query, higher is better; "
                                           "hybrid: the fused RRF score")
    caption: str | None = Field(None, description="the image's caption, if it has one")
    clip_rank: int | None = Field(None, description="hybrid: rank in the CLIP ranking")
    text_rank: int | None = Field(None, description="hybrid: rank in the captions' ranking")
    clip_score: FiniteFloat | None = Field(None, description="hybrid: the cosine similarity")
    text_score: FiniteFloat | None = Field(None, description="hybrid: ts_rank_cd of the caption")
    found_by: list[str] | None = Field(None, description="hybrid: the rankings that found it")
    ocr_score: FiniteFloat | None = Field(None, description="the words' text-search rank")
    ocr_rank: int | None = Field(None, description="hybrid: rank in the words' ranking")
    ocr_text: str | None = Field(None, description="the text recognised in the image")


class Cutoff(BaseModel):
    rule: str = Field(description="min_score, within, gap or zscore")
    threshold: FiniteFloat = Field(description="the lowest score kept")
    kept: int
    candidates: int = Field(description="how many of the best hits the rule looked at")


class SearchOut(BaseModel):
    results: list[Hit]
    offset: int
    limit: int
    more: bool = Field(description="whether another page follows")
    cutoff: Cutoff | None = Field(None, description="which relevance rule cut the ranking, where")
    elapsed_ms: float


class ImageOut(_Row):
    exif: dict | None


class WordBox(BaseModel):
    text: str = Field(description="the word as read")
    box: list[int] = Field(description="[x, y, width, height] in the row's pixels")
    conf: FiniteFloat | None = Field(None, description="the engine's confidence in the word")


class WordsOut(BaseModel):
    read: bool = Field(description="false when OCR has read nothing in this image (yet)")
    text: str | None = Field(None, description="the recognised text")
    engine: str | None = None
    languages: str | None = Field(None, description="the engine's languages, e.g. eng+jpn")
    confidence: FiniteFloat | None = Field(None, description="the engine's mean confidence")
    width: int | None = Field(None, description="the row's width: the boxes' pixel space")
    height: int | None = None
    matches: list[WordBox] = Field(description="the words matching q (all without q)")


class Label(BaseModel):
    label: str
    images: int


class LabelsOut(BaseModel):
    available: bool = Field(description="false while no image has a stored label")
    labels: list[Label]


class Camera(BaseModel):
    camera_make: str
    images: int


class DateRange(BaseModel):
    min: dt.date | None
    max: dt.date | None


class FacetsOut(BaseModel):
    images: int
    cameras: list[Camera]
    taken_at: DateRange
    with_gps: int
    labels: list[Label] = Field(description="labels stored by a classify with store=True")


def _urls(row_id: int, sha256: str | None, start_s: float | None = None) -> dict:
    version = (sha256 or "")[:16]
    return {"thumbnail_url": f"/thumbs/{row_id}?v={version}",
            "image_url": f"/images/{row_id}?v={version}",
            "video_url": f"/videos/{row_id}?v={version}" if start_s is not None else None}


def hit_json(hit) -> dict:
    out = hit.to_dict()
    for extra in ("caption", "ocr_text", "ocr_score"):  # set on the hit for the page
        out.setdefault(extra, getattr(hit, extra, None))
    out["name"] = os.path.basename(hit.path)
    out.update(_urls(hit.id, hit.sha256, getattr(hit, "start_s", None)))
    return out


def image_json(row: dict) -> dict:
    out = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
    out["name"] = os.path.basename(row["path"])
    out.update(_urls(row["id"], row["sha256"], row.get("start_s")))
    return out
