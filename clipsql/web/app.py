"""The web UI and its JSON API (``clipsql serve``), built on FastAPI and uvicorn.

Safe by default: it listens on 127.0.0.1 and answers only requests addressed to a loopback
host name (so a web page elsewhere cannot reach it through DNS rebinding); it sends only
files that are rows of the collection, found by row id, never by a path from the request;
filters run read-only; request bodies are bounded.

>>> from clipsql.web import create_app, serve_in_thread        # doctest: +SKIP
>>> app = create_app("postgresql://localhost/photos")          # doctest: +SKIP
>>> with serve_in_thread(app) as url:                          # doctest: +SKIP
...     print(url)                                             # http://127.0.0.1:PORT
"""

import contextlib
import datetime as dt
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from clipsql import __version__
from clipsql.errors import (
    ClipsqlError,
    ConfigError,
    DatabaseError,
    EmptyCollectionError,
    QueryError,
)
from clipsql.ingest.thumbnails import BROWSER_FORMATS, PREVIEW_SIZE, THUMB_SIZE, ThumbnailCache
from clipsql.web import schemas as m
from clipsql.web.backend import MAX_RANK, MAX_WHERE_CHARS, Backend

STATIC = Path(__file__).parent / "static"
#: Largest request body (an uploaded query image with its multipart wrapping).
MAX_UPLOAD_BYTES = 20 << 20
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_IMMUTABLE = "private, max-age=31536000, immutable"
_REVALIDATE = "private, no-cache"
_PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
             "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
_STATUS = {QueryError: 400, EmptyCollectionError: 409, DatabaseError: 503}


def create_app(dsn: str | None = None, model: str | None = None, device: str | None = None, *,
               thumbnails_dir: Path | None = None, max_body_bytes: int = MAX_UPLOAD_BYTES,
               allowed_hosts=LOOPBACK_HOSTS):
    """The ASGI app: opens the collection and loads its model now, so the first query is fast.

    ``allowed_hosts=None`` accepts any Host header (for ``--host 0.0.0.0`` behind Docker).
    """
    backend = Backend(dsn, model, device)
    thumbs = ThumbnailCache(thumbnails_dir)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        backend.close()

    app = FastAPI(title="clipsql", version=__version__, lifespan=lifespan,
                  max_body_size=max_body_bytes, description=m.DESCRIPTION)
    app.state.backend = backend
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ClipsqlError)
    async def clipsql_error(_request, exc: ClipsqlError):
        status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    Date = Annotated[dt.date | None, Query(description="YYYY-MM-DD; taken_at, inclusive")]

    def filters(
        date_from: Date = None, date_to: Date = None,
        camera: Annotated[str | None, Query(max_length=200, description="camera_make")] = None,
        gps: Annotated[bool | None, Query(description="true: has GPS; false: none")] = None,
        label: Annotated[str | None, Query(max_length=200, description="has this label")] = None,
        where: Annotated[str | None, Query(
            max_length=MAX_WHERE_CHARS, description="SQL over clipsql.images, read-only")] = None,
    ) -> dict:
        return dict(date_from=date_from, date_to=date_to, camera=camera, gps=gps, label=label,
                    where=where)

    def paging(offset: Annotated[int, Query(ge=0, lt=MAX_RANK)] = 0,
               limit: Annotated[int, Query(ge=1, le=100)] = 40,
               min_score: Annotated[float | None, Query(ge=-1, le=1)] = None) -> dict:
        return dict(offset=offset, limit=limit, min_score=min_score)

    def run_search(text, image, flt, page) -> dict:
        start = time.perf_counter()
        hits, more = backend.search(text, image=image, filters=flt, **page)
        return {"results": [m.hit_json(h) for h in hits], "offset": page["offset"],
                "limit": page["limit"], "more": more,
                "elapsed_ms": round((time.perf_counter() - start) * 1000, 1)}

    @app.get("/api/search", response_model=m.SearchOut, tags=["search"])
    def search(flt: Annotated[dict, Depends(filters)], page: Annotated[dict, Depends(paging)],
               q: Annotated[str | None, Query(max_length=1000, description="text query")] = None,
               image_id: Annotated[int | None, Query(description="row id: more like this")] = None):
        """Rank images by a text query, a stored image (``image_id``), or both."""
        if not (q and q.strip()) and image_id is None:
            raise QueryError("give a text query (q), an image_id, or both")
        return run_search(q if q and q.strip() else None, image_id, flt, page)

    @app.post("/api/search/image", response_model=m.SearchOut, tags=["search"])
    def search_upload(file: Annotated[UploadFile, File(description="an image file")],
                      flt: Annotated[dict, Depends(filters)],
                      page: Annotated[dict, Depends(paging)],
                      q: Annotated[str | None, Query(max_length=1000)] = None):
        """Rank images by an uploaded image (optionally plus a text query)."""
        fd, tmp = tempfile.mkstemp(prefix="clipsql-query-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := file.file.read(1 << 20):
                    out.write(chunk)
            return run_search(q if q and q.strip() else None, tmp, flt, page)
        finally:
            os.unlink(tmp)

    @app.get("/api/images/{image_id}", response_model=m.ImageOut, tags=["images"])
    def image_info(image_id: str):
        """One image's metadata (including EXIF), by row id."""
        info = backend.image(_row_id(image_id))
        if info is None:
            raise HTTPException(404, "no such image")
        return m.image_json(info)

    @app.get("/api/labels", response_model=m.LabelsOut, tags=["labels"])
    def labels():
        """The stored labels of the collection with image counts (``available``: any at all)."""
        found = backend.labels()
        return {"available": bool(found), "labels": found}

    @app.get("/api/facets", response_model=m.FacetsOut, tags=["status"])
    def facets():
        """What the filters can offer: cameras, date range, GPS count, labels."""
        return backend.facets()

    @app.get("/api/status", tags=["status"])
    def status():
        """Rows, failures, model, database and index, as ``clipsql status --json``."""
        return backend.status()

    def _row(image_id: str):
        row = backend.row(_row_id(image_id))
        if row is None:
            raise HTTPException(404, "no such image")
        if row.sha256 is None:  # imported embeddings (clipsql import-embeddings) have no file
            raise HTTPException(404, "this row was imported without an image file")
        return row

    def _cached(request: Request, etag: str, version: str | None, sha: str):
        fresh = version is not None and sha.startswith(version) and len(version) >= 8
        headers = {"ETag": etag, "Cache-Control": _IMMUTABLE if fresh else _REVALIDATE,
                   "X-Content-Type-Options": "nosniff"}
        if etag in request.headers.get("if-none-match", ""):
            return headers, Response(status_code=304, headers=headers)
        return headers, None

    def _jpeg(row, size: int, request: Request, v: str | None):
        """A cached JPEG rendition of ``row`` at ``size`` px, or 304 when the client has it."""
        headers, not_modified = _cached(request, f'"{row.sha256[:32]}-{size}"', v, row.sha256)
        if not_modified:
            return not_modified
        path = thumbs.get(row.id, row.sha256, row.path, size)
        if path is None:
            raise HTTPException(404, "the image file cannot be read any more")
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    @app.get("/thumbs/{image_id}", response_class=Response, tags=["images"],
             responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(image_id: str, request: Request, v: str | None = None):
        """A JPEG thumbnail (320 px), made once and cached on disk."""
        return _jpeg(_row(image_id), THUMB_SIZE, request, v)

    @app.get("/images/{image_id}", response_class=Response, tags=["images"],
             responses={200: {"content": {"image/*": {}}}})
    def full_image(image_id: str, request: Request, v: str | None = None):
        """The image itself (formats browsers cannot show come as a 2048 px JPEG)."""
        row = _row(image_id)
        media = BROWSER_FORMATS.get(row.format)
        if media is None:
            return _jpeg(row, PREVIEW_SIZE, request, v)
        if not os.path.isfile(row.path):
            raise HTTPException(404, "the image file cannot be read any more")
        # The file's own ETag (size and mtime), so an edit since loading is never hidden.
        return FileResponse(row.path, media_type=media, content_disposition_type="inline",
                            headers={"Cache-Control": _REVALIDATE,
                                     "X-Content-Type-Options": "nosniff"})

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={
            "Cache-Control": "no-cache", "Content-Security-Policy": _PAGE_CSP,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    return app


def _row_id(text: str) -> int:
    """A row id from a URL segment: plain ASCII digits only, anything else is "not found"."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise HTTPException(404, "no such image")
    return int(text)


def _check_port(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    return host == "localhost" or host.startswith("127.")


def serve(host: str = "127.0.0.1", port: int = 8000, dsn: str | None = None,
          model: str | None = None, device: str | None = None, log_level: str = "info",
          announce=None) -> None:
    """Run the web UI until interrupted (what ``clipsql serve`` does).

    ``announce(url)`` is called once the collection and model are loaded, just before listening.
    """
    import uvicorn

    _check_port(host, port)
    app = create_app(dsn, model, device,
                     allowed_hosts=(*LOOPBACK_HOSTS, host) if is_loopback(host) else None)
    if announce is not None:
        shown = "localhost" if is_loopback(host) else host
        announce(f"http://{shown}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30):
    """Run ``app`` on a background thread (a notebook, a test); yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="clipsql-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"the web server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
