"""The collection's files over HTTP: thumbnails, images and video moments' videos.

Every file is found by row id (never by a path from the request) and sent only while it is
still the loaded file (:func:`clipsql.web.files.open_verified`). A video is one row per
moment (``start_s``/``end_s``, migration 0015): a moment's thumbnail and image are its
keyframe, the frame at ``start_s`` (:func:`clipsql.ingest.video.frame_at`), rendered once
and cached like images' thumbnails; ``/videos/ID`` sends the video file itself, whole or
one byte range (:func:`clipsql.web.files.byte_range`), only for rows that are moments.

The media work (row look-ups, hashing, decoding, rendering) runs in a :class:`MediaPool` of
its own: :data:`MEDIA_THREADS` threads and at most :data:`MEDIA_QUEUE` jobs waiting. A
request past that is answered **503** with ``Retry-After`` at once, and so is one whose job
has not finished within :data:`MEDIA_WAIT_S`. The routes are ``async``: a request waiting
for its job holds no thread, so neither the pool nor the thread pool of the other routes
(``/api/status``, searches) can be exhausted by media requests. Requests for the same media
at once share one job (one decode, one hash); requests that need the hash of a file another
request is hashing wait for it without a thread. File bodies are read in chunks by a few
reader threads of their own (:data:`READERS`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import os
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Annotated

from fastapi import Header, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from clipsql.ingest import confine
from clipsql.ingest.thumbnails import BROWSER_FORMATS, PREVIEW_SIZE, THUMB_SIZE, ThumbnailCache
from clipsql.web import files
from clipsql.web import schemas as m

__all__ = ["MEDIA_QUEUE", "MEDIA_THREADS", "MEDIA_WAIT_S", "MediaPool", "add_file_routes",
           "keyframe", "plain_path", "row_id"]

_IMMUTABLE = "private, max-age=31536000, immutable"
_REVALIDATE = "private, no-cache"
_FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cross-Origin-Resource-Policy": "same-origin"}
_FILE_ERRORS = {200: {"content": {"image/*": {}}}, **m.errors(304, 403, 404, 503)}
_VIDEO_CONTENT = {"content": {"video/*": {}, "application/octet-stream": {}}}
_VIDEO_ANSWERS = {200: {"description": "the whole video file", **_VIDEO_CONTENT},
                  206: {"description": "the requested byte range of the video file",
                        **_VIDEO_CONTENT},
                  **m.errors(304, 403, 404, 416, 503)}
NOT_A_MOMENT = "this row is not a video moment"
NOT_FOUND = "no such image"
#: Threads that decode, render and hash media (a decode of a large video frame is heavy:
#: few at once, from the machine's cores).
MEDIA_THREADS = max(2, min(4, (os.cpu_count() or 2) // 2))
#: Media jobs that may wait for a thread; past it (and past MEDIA_WAIT_S) the answer is 503.
MEDIA_QUEUE = 64
#: Seconds a request waits for its media job before a 503 (the job itself goes on: a
#: thumbnail is then cached for the next request).
MEDIA_WAIT_S = 30.0
#: The Retry-After (seconds) of a 503 from a busy media pool.
RETRY_AFTER_S = 2
BUSY = "the server is busy with other images and videos; try again in a moment"
#: Threads that read file bodies for responses, a chunk at a time.
READERS = 8
#: The niceness added to the media threads (Linux: per thread): decoding and hashing take
#: the CPU only when ``/api/status``, searches and the database do not want it.
MEDIA_NICE = 10


def busy() -> HTTPException:
    """The 503 of a full (or too slow) media pool."""
    return HTTPException(503, BUSY, headers={"Retry-After": str(RETRY_AFTER_S)})


def _lower_priority() -> None:
    """Run by each media thread as it starts: lower its own scheduling priority (a no-op
    where threads have no priority of their own)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MEDIA_NICE)


def _consume(future) -> None:  # nobody may be left to read it: no "never retrieved" warning
    if not future.cancelled():
        future.exception()


class MediaPool:
    """A bounded pool for media work: ``threads`` threads, at most ``queue`` jobs waiting,
    jobs of the same key shared while they run; awaited from the event loop."""

    def __init__(self, threads: int = MEDIA_THREADS, queue: int = MEDIA_QUEUE,
                 wait_s: float = MEDIA_WAIT_S, readers: int = READERS):
        self.threads, self.limit, self.wait_s = threads, threads + queue, wait_s
        self._executor = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="clipsql-media", initializer=_lower_priority)
        self._readers = concurrent.futures.ThreadPoolExecutor(
            readers, thread_name_prefix="clipsql-read")
        self._lock = threading.Lock()
        self._jobs: dict = {}  # key -> the Future of the job running for it
        self.pending = 0  # jobs submitted and not finished (running or waiting)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)

    def submit(self, key, fn, *args) -> concurrent.futures.Future:
        """The Future of ``fn(*args)``: the running job of ``key`` if there is one (None: never
        shared), else a new one; a 503 (:func:`busy`) when the pool holds all it takes."""
        with self._lock:
            if key is not None and (found := self._jobs.get(key)) is not None:
                return found
            if self.pending >= self.limit:
                raise busy()
            self.pending += 1
            future = self._executor.submit(fn, *args)
            if key is not None:
                self._jobs[key] = future
        future.add_done_callback(partial(self._done, key))
        return future

    def _done(self, key, future) -> None:
        with self._lock:
            self.pending -= 1
            if key is not None and self._jobs.get(key) is future:
                del self._jobs[key]

    async def wait(self, future, timeout: float | None = None):
        """The result of a thread's Future, awaited without a thread; 503 past ``timeout``."""
        waited = asyncio.wrap_future(future)
        waited.add_done_callback(_consume)
        try:
            return await asyncio.wait_for(asyncio.shield(waited), timeout or self.wait_s)
        except TimeoutError:
            raise busy() from None

    async def run(self, key, fn, *args):
        """``fn(*args)`` in the pool (shared with a running job of the same ``key``). A job
        that finds its file being hashed by another ends at once (``HashPending``); this
        waits for that hash here, holding no thread, and runs the job again."""
        for _ in range(3):
            try:
                return await self.wait(self.submit(key, fn, *args))
            except files.HashPending as pending:
                if await self.wait(pending.future, files.HASH_DEADLINE_S) is None:
                    raise HTTPException(503, files.SLOW_HASH, headers={
                        "Retry-After": str(RETRY_AFTER_S)}) from None
        raise busy()

    async def read(self, fn, *args):
        """``fn(*args)`` (a file read) on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def stream(self, f, size: int):
        """The first ``size`` bytes of ``f`` in chunks read by the reader threads (a response
        body); closes ``f`` at the end, also when the client goes away mid-way."""
        reading = None
        try:
            left = size
            while left > 0:
                reading = asyncio.get_running_loop().run_in_executor(
                    self._readers, f.read, min(files.CHUNK, left))
                chunk = await reading
                reading = None
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            if reading is not None and not reading.done():  # close once that read returns
                reading.add_done_callback(lambda _r: f.close())
            else:
                f.close()


def plain_path(request: Request) -> None:
    """404 unless the URL's path came as sent, without percent-encoding: the ASGI path is
    decoded before routing, so ``/images/%31`` would otherwise reach the route as ``1``."""
    raw = request.scope.get("raw_path")
    if raw is not None and b"%" in raw.split(b"?", 1)[0]:
        raise HTTPException(404, NOT_FOUND)


def add_file_routes(app, backend, thumbs: ThumbnailCache, pool: MediaPool) -> None:
    """``/thumbs/ID``, ``/images/ID`` and ``/videos/ID`` on ``app``, their work in ``pool``."""

    def _row(image_id: int):
        row = backend.row(image_id)
        if row is None:
            raise HTTPException(404, NOT_FOUND)
        if row.sha256 is None:  # imported embeddings (clipsql import-embeddings) have no file
            raise HTTPException(404, "this row was imported without an image file")
        # resolved now, inside a loaded folder: a file replaced by a link out of it is a 404
        return dataclasses.replace(row, path=files.resolve_inside(row.path, backend.holds))

    def _not_modified(request: Request, headers: dict):
        if headers["ETag"] in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return None

    def _jpeg_job(image_id: int, size: int, row=None):
        """``(row, JPEG bytes)``: the row's rendition at ``size`` px, made now if missing."""
        row = row or _row(image_id)
        moment = row.start_s is not None
        f, _ = files.open_verified(row.path, row.sha256, None if moment else files.MAX_BYTES,
                                   size=row.bytes, wait=False)
        with f:
            files.still_at(f, row.path)
            path = keyframe(thumbs, row, size, confine.source(f.fileno(), row.path)) \
                if moment else \
                thumbs.get(row.id, row.sha256, row.path, size, source=f)
            try:  # the name still leads to the checked file: the thumbnail shows its content
                files.still_at(f, row.path)
            except HTTPException:
                thumbs.file_for(row.id, moment_key(row) if moment else row.sha256,
                                size).unlink(missing_ok=True)
                raise
        try:
            return row, Path(path).read_bytes() if path is not None else None
        except OSError:
            return row, None

    def _file_job(image_id: int, video: bool):
        """``(row, rendition)``: the row checked (its hash remembered) for sending its file
        (``rendition`` None), or, for an image browsers cannot show, its JPEG preview."""
        row = _row(image_id)
        if video:
            if row.start_s is None:
                raise HTTPException(404, NOT_A_MOMENT)
        elif row.start_s is not None or BROWSER_FORMATS.get(row.format) is None:
            return _jpeg_job(image_id, PREVIEW_SIZE, row)
        f, _ = files.open_verified(row.path, row.sha256, None if video else files.MAX_BYTES,
                                   size=row.bytes, wait=False)
        f.close()
        return row, None

    async def _open(row, video: bool):
        """The row's file, opened again for this request (its hash is remembered now)."""
        try:
            return await pool.read(partial(
                files.open_verified, row.path, row.sha256, None if video else files.MAX_BYTES,
                size=row.bytes, wait=False))
        except files.HashPending:  # replaced meanwhile, and being checked by another
            raise busy() from None

    def _jpeg_answer(row, data, size: int, request: Request, v: str | None):
        fresh = v is not None and row.sha256.startswith(v) and len(v) >= 8
        key = moment_key(row) if row.start_s is not None else row.sha256
        headers = {"ETag": f'"{key[:32]}-{size}"', **_FILE_HEADERS,
                   "Cache-Control": _IMMUTABLE if fresh else _REVALIDATE}
        if (not_modified := _not_modified(request, headers)) is not None:
            return not_modified
        if data is None:
            raise HTTPException(404, files.GONE)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/thumbs/{image_id}", response_class=Response, tags=["images"],
             responses={**_FILE_ERRORS, 200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(image_id: str, request: Request, v: str | None = None):
        """A JPEG thumbnail (320 px), made once and cached on disk."""
        image = row_id(image_id, request)
        row, data = await pool.run(("jpeg", image, THUMB_SIZE), _jpeg_job, image, THUMB_SIZE)
        return _jpeg_answer(row, data, THUMB_SIZE, request, v)

    @app.get("/images/{image_id}", response_class=Response, tags=["images"],
             responses=_FILE_ERRORS)
    async def full_image(image_id: str, request: Request, v: str | None = None):
        """The image itself (formats browsers cannot show come as a 2048 px JPEG).

        404 when the file is gone, or is no longer the regular file with the loaded content."""
        image = row_id(image_id, request)
        row, data = await pool.run(("image", image), _file_job, image, False)
        media = None if row.start_s is not None else BROWSER_FORMATS.get(row.format)
        if media is None:  # and a video moment: its keyframe
            return _jpeg_answer(row, data, PREVIEW_SIZE, request, v)
        headers = {"ETag": f'"{row.sha256[:32]}"', "Cache-Control": _REVALIDATE, **_FILE_HEADERS}
        if (not_modified := _not_modified(request, headers)) is not None:
            return not_modified
        f, size = await _open(row, False)
        return StreamingResponse(pool.stream(f, size), media_type=media, headers={
            **headers, "Content-Length": str(size), "Content-Disposition": "inline"})

    @app.get("/videos/{image_id}", response_class=Response, tags=["images"],
             responses=_VIDEO_ANSWERS)
    async def video(image_id: str, request: Request,
                    byte_range: Annotated[str | None, Header(
                        alias="range", max_length=1000, description="bytes=FIRST-LAST, FIRST- or "
                        "-SUFFIX; of several ranges only the first within the file is sent")] = None,
                    v: str | None = None):
        """The video file of a video moment's row (a still image's id: 404), whole (200) or
        the byte range asked for (206, ``Content-Range``; 416 when it lies outside the
        file), while the file is still the one that was loaded. The page plays it from the
        moment's start (``#t=START_S``)."""
        image = row_id(image_id, request)
        row, _ = await pool.run(("video", image), _file_job, image, True)
        etag = f'"{row.sha256[:32]}"'
        headers = {"ETag": etag, "Cache-Control": _REVALIDATE, "Accept-Ranges": "bytes",
                   "Content-Disposition": "inline", **_FILE_HEADERS}
        if (not_modified := _not_modified(request, headers)) is not None:
            return not_modified
        f, size = await _open(row, True)
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range.strip() != etag:
            byte_range = None  # the client's copy is another version: the whole file
        try:
            span = files.byte_range(byte_range, size)
        except files.RangeNotSatisfiable:
            f.close()
            raise HTTPException(416, "the requested range lies outside the file", headers={
                "Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}) from None
        media = files.video_type(row.path)
        if span is None:
            return StreamingResponse(pool.stream(f, size), media_type=media, headers={
                **headers, "Content-Length": str(size)})
        first, last = span
        try:
            f.seek(first)
        except OSError:
            f.close()
            raise HTTPException(404, files.GONE) from None
        return StreamingResponse(pool.stream(f, last - first + 1), status_code=206,
                                 media_type=media, headers={
                                     **headers, "Content-Length": str(last - first + 1),
                                     "Content-Range": f"bytes {first}-{last}/{size}"})


def moment_key(row) -> str:
    """A moment's rendition key: the video's content and the moment's start."""
    return hashlib.sha256(f"{row.sha256}@{row.start_s!r}".encode()).hexdigest()


def keyframe(thumbs: ThumbnailCache, row, size: int, source=None) -> Path | None:
    """The cached JPEG (``size`` px) of a video moment's keyframe, made now if missing
    (:func:`clipsql.ingest.video.frame_at` of ``source``, a path to the file the caller
    checked against the row's hash and the loaded folders, else the row's path); None when
    the frame cannot be read. Called in the media pool, which bounds how many decode at
    once."""
    from PIL import Image

    from clipsql.ingest.video import frame_at

    target = thumbs.file_for(row.id, moment_key(row), size)
    if target.is_file():
        return target
    try:
        frame = frame_at(source or row.path, row.start_s, max_side=size)
        with frame:
            rgb = frame.convert("RGB")
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=82, optimize=True)
    except Exception:  # ImageError, or a decoder's failure on a hostile file: "not found"
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(buf.getvalue())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in target.parent.glob(f"{row.id}-*.jpg"):  # an earlier version of this row
        if old != target:
            with contextlib.suppress(OSError):
                old.unlink(missing_ok=True)
    return target


def row_id(text: str, request: Request | None = None) -> int:
    """A row id from a URL segment: plain ASCII digits only, anything else is "not found";
    with the ``request``, also one that came percent-encoded (:func:`plain_path`)."""
    if request is not None:
        plain_path(request)
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise HTTPException(404, NOT_FOUND)
    return int(text)
