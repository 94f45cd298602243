"""The web UI and its JSON API (``clipsql serve``), built on FastAPI and uvicorn.

Safe by default (docs/security-serve.md): it listens on 127.0.0.1 and answers only
requests addressed to a loopback host name (no DNS rebinding) and not made by another site
(:mod:`clipsql.web.guard`); it sends only files that are rows of the collection, found by
row id, never by a path from the request, and only while they are still the loaded file
(:mod:`clipsql.web.files`, :mod:`clipsql.web.media`: a video moment shows its keyframe and
plays from its start); filters run read-only; request bodies and uploaded images are bounded; each request takes its own pooled database connection (:mod:`clipsql.web.backend`).

>>> from clipsql.web import create_app, serve_in_thread        # doctest: +SKIP
>>> app = create_app("postgresql://localhost/photos")          # doctest: +SKIP
>>> with serve_in_thread(app) as url:                          # doctest: +SKIP
...     print(url)                                             # http://127.0.0.1:PORT
"""

import contextlib
import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from clipsql import __version__
from clipsql.errors import (
    ClipsqlError,
    DatabaseError,
    EmptyCollectionError,
    ImageError,
    ModelError,
    ModelMismatchError,
    QueryError,
)
from clipsql.ingest.thumbnails import ThumbnailCache
from clipsql.web import schemas as m
from clipsql.web.backend import MAX_RANK, POOL_WAIT_S, SEARCH_CONNECTIONS, Backend
from clipsql.web.filters import MAX_WHERE_CHARS
from clipsql.web.guard import LOOPBACK_HOSTS, CrossSiteGuard, is_loopback
from clipsql.web.media import MEDIA_QUEUE, MEDIA_THREADS, MediaPool, add_file_routes, row_id
from clipsql.web.words import MAX_WORDS_CHARS

__all__ = ["MAX_UPLOAD_BYTES", "create_app", "is_loopback"]

STATIC = Path(__file__).parent / "static"
#: Largest request body (an uploaded query image with its multipart wrapping).
MAX_UPLOAD_BYTES = 20 << 20
#: Largest row id in a URL (a bigint).
MAX_ID = 2**63 - 1
_PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
             "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
# Most specific first: ModelMismatchError is a ModelError, ImageError a ClipsqlError.
_STATUS = {QueryError: 400, ImageError: 400, EmptyCollectionError: 409,
           ModelMismatchError: 409, ModelError: 503, DatabaseError: 503}
_SEARCH_ERRORS = m.errors(400, 403, 409, 503)
_LOOKUP_ERRORS = m.errors(403, 503)


def create_app(dsn: str | None = None, model: str | None = None, device: str | None = None, *,
               thumbnails_dir: Path | None = None, max_body_bytes: int = MAX_UPLOAD_BYTES,
               allowed_hosts=LOOPBACK_HOSTS, search_connections: int = SEARCH_CONNECTIONS,
               pool_wait_s: float = POOL_WAIT_S, steps=None, media_threads: int = MEDIA_THREADS,
               media_queue: int = MEDIA_QUEUE):
    """The ASGI app: opens the collection and prepares its model now (a first use on this
    machine exports it, told to ``steps(what)``), so no request pays a one-time set-up.

    Thumbnails, images and videos are made and checked by ``media_threads`` threads of their
    own with at most ``media_queue`` jobs waiting (:class:`~clipsql.web.media.MediaPool`:
    past it, 503 with ``Retry-After``).

    ``allowed_hosts=None`` accepts any Host header (for ``--host 0.0.0.0`` behind Docker);
    the cross-site check stays on either way.
    """
    backend = Backend(dsn, model, device, search_connections=search_connections,
                      wait_s=pool_wait_s, steps=steps)
    thumbs = ThumbnailCache(thumbnails_dir)
    media = MediaPool(media_threads, media_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        media.close()
        backend.close()

    app = FastAPI(title="clipsql", version=__version__, lifespan=lifespan,
                  max_body_size=max_body_bytes, description=m.DESCRIPTION)
    app.state.backend = backend
    app.state.media = media
    app.add_middleware(CrossSiteGuard)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ClipsqlError)
    async def clipsql_error(_request, exc: ClipsqlError):
        status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
        return JSONResponse({"detail": m.short(str(exc))}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return JSONResponse({"detail": m.short(str(exc.detail))}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        found = [{"loc": list(e.get("loc", ())), "msg": m.short(str(e.get("msg", "")), 200),
                  "type": str(e.get("type", ""))} for e in exc.errors()[:5]]
        return JSONResponse({"detail": found}, status_code=422)

    Date = Annotated[dt.date | None, Query(description="YYYY-MM-DD; taken_at, inclusive")]

    def filters(
        date_from: Date = None, date_to: Date = None,
        camera: Annotated[str | None, Query(max_length=200, description="camera_make")] = None,
        gps: Annotated[bool | None, Query(description="true: has GPS; false: none")] = None,
        label: Annotated[str | None, Query(max_length=200, description="has this label")] = None,
        where: Annotated[str | None, Query(
            max_length=MAX_WHERE_CHARS, description="a condition over clipsql.images columns "
            "in the allowlisted grammar of docs/security-filters.md (Two modes)")] = None,
    ) -> dict:
        return dict(date_from=date_from, date_to=date_to, camera=camera, gps=gps, label=label,
                    where=where)

    def paging(offset: Annotated[int, Query(ge=0, lt=MAX_RANK)] = 0,
               limit: Annotated[int, Query(ge=1, le=100)] = 40,
               min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
               within: Annotated[float | None, Query(
                   ge=0, le=2, description="only hits within this of the best score")] = None,
               adaptive: Annotated[Literal["gap", "zscore"] | None, Query(
                   description="cut where the query's own scores break or stand out")] = None,
               order_by: Annotated[str | None, Query(
                   max_length=40, pattern=r"^[a-z_]+( (asc|desc))?$",
                   description="order the relevant hits, e.g. 'taken_at desc'")] = None) -> dict:
        return dict(offset=offset, limit=limit, min_score=min_score, within=within,
                    adaptive=adaptive, order_by=order_by)

    Texts = Annotated[list[str], Query(max_length=10, description="texts to move away from")]
    Ids = Annotated[list[int], Query(max_length=10)]
    Weight = Annotated[float, Query(gt=0, le=10)]

    def algebra(image_id: Annotated[list[int], Query(
                    max_length=10, description="stored images (row ids) to search by")] = [],  # noqa: B006
                minus: Texts = [],  # noqa: B006
                minus_image_id: Ids = [],  # noqa: B006
                image_weight: Weight = 1.0, minus_weight: Weight = 1.0) -> dict:
        if any(not 0 <= i <= MAX_ID for i in [*image_id, *minus_image_id]):
            raise QueryError("image ids are row ids: integers from 0")
        if any(len(t) > 1000 or "\x00" in t or not t.strip() for t in minus):
            raise QueryError("each minus text must be non-empty, without NUL, at most 1000 characters")
        return dict(image_ids=image_id, minus=minus, minus_image_ids=minus_image_id,
                    image_weight=image_weight, minus_weight=minus_weight)

    def run_search(text, flt, page, **query) -> dict:
        start = time.perf_counter()
        text = text if text and text.strip() else None
        hits, more, cutoff = backend.search(text, filters=flt, **page, **query)
        return {"results": [m.hit_json(h) for h in hits], "offset": page["offset"],
                "limit": page["limit"], "more": more, "cutoff": cutoff,
                "elapsed_ms": round((time.perf_counter() - start) * 1000, 1)}

    @app.get("/api/search", response_model=m.SearchOut, tags=["search"],
             responses=_SEARCH_ERRORS)
    def search(flt: Annotated[dict, Depends(filters)], page: Annotated[dict, Depends(paging)],
               parts: Annotated[dict, Depends(algebra)],
               q: Annotated[str | None, Query(max_length=1000, description="text query")] = None,
               hybrid: Annotated[bool, Query(description="fuse with the captions' full-text "
                                                         "ranking (a text q alone)")] = False,
               words: Annotated[str | None, Query(
                   max_length=MAX_WORDS_CHARS, description="words in the image: rank the "
                   "images whose recognised text (OCR) matches these words instead (alone: "
                   "no q, image_id, minus, hybrid or cutoffs; filters and paging apply)")] = None):
        """Rank images by a query of weighted parts: a text ``q`` and stored images
        (``image_id``, repeatable) minus texts (``minus``) and images (``minus_image_id``);
        the weighted sum of the parts' normalised embeddings, normalised. One ``image_id``
        alone: more like this (itself left out). ``within``/``adaptive`` cut the ranking
        (``cutoff`` says where), ``order_by`` orders the relevant hits. ``words``: the
        images whose recognised text matches these words, best first."""
        if words is not None:
            if (q and q.strip()) or parts["image_ids"] or parts["minus"] or \
                    parts["minus_image_ids"]:
                raise QueryError("a words-in-the-image search takes its words alone (no q, "
                                 "image_id or minus parts; the filters apply)")
            return run_search(None, flt, page, words=words, hybrid=hybrid)
        if not (q and q.strip()) and not parts["image_ids"]:
            raise QueryError("give a text query (q), an image_id, or both")
        return run_search(q, flt, page, **parts, hybrid=hybrid)

    @app.post("/api/search/image", response_model=m.SearchOut, tags=["search"],
              responses=m.errors(400, 403, 409, 413, 503))
    def search_upload(file: Annotated[UploadFile, File(description="an image file")],
                      flt: Annotated[dict, Depends(filters)],
                      page: Annotated[dict, Depends(paging)],
                      q: Annotated[str | None, Query(max_length=1000)] = None):
        """Rank images by an uploaded image (optionally plus a text query).

        Images over 40 megapixels are refused (413) from their header, before decoding."""
        fd, tmp = tempfile.mkstemp(prefix="clipsql-query-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := file.file.read(1 << 20):
                    out.write(chunk)
            vector = backend.embed_upload(tmp)  # decoded in a process of its own
        finally:
            os.unlink(tmp)
        return run_search(q, flt, page, upload=vector)

    @app.get("/api/images/{image_id}", response_model=m.ImageOut, tags=["images"],
             responses=m.errors(403, 404, 503))
    def image_info(image_id: str, request: Request):
        """One image's metadata (including EXIF), by row id."""
        info = backend.image(row_id(image_id, request))
        if info is None:
            raise HTTPException(404, "no such image")
        return m.image_json(info)

    @app.get("/api/images/{image_id}/words", response_model=m.WordsOut, tags=["images"],
             responses=m.errors(400, 403, 404, 503))
    def image_words(image_id: str, request: Request, q: Annotated[str | None, Query(
            max_length=MAX_WORDS_CHARS, description="the words to find: ``matches`` holds "
            "their boxes (without q: every word read)")] = None):
        """The text OCR read in one image (``read``: false when none was) and the boxes of
        the words that match ``q``, in the pixels of the row's width and height."""
        image = row_id(image_id, request)
        found = backend.words(image, q)
        if found is None:
            if backend.row(image) is None:
                raise HTTPException(404, "no such image")
            return {"read": False, "matches": []}
        return {"read": True, **found}

    @app.get("/api/labels", response_model=m.LabelsOut, tags=["labels"],
             responses=_LOOKUP_ERRORS)
    def labels():
        """The stored labels of the collection with image counts (``available``: any at all)."""
        found = backend.labels()
        return {"available": bool(found), "labels": found}

    @app.get("/api/facets", response_model=m.FacetsOut, tags=["status"],
             responses=_LOOKUP_ERRORS)
    def facets():
        """What the filters can offer: cameras, date range, GPS count, labels."""
        return backend.facets()

    @app.get("/api/status", tags=["status"], responses=_LOOKUP_ERRORS)
    def status():
        """Rows, failures, model, database and index, as ``clipsql status --json`` without
        the machine's paths (the database socket, ``CLIPSQL_HOME``, caches, checkpoints):
        those only the local ``clipsql status`` shows."""
        return backend.status()

    add_file_routes(app, backend, thumbs, media)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={
            "Cache-Control": "no-cache", "Content-Security-Policy": _PAGE_CSP,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    return app

