"""The collection's files over HTTP: thumbnails, images and video moments' videos.

Every file is found by row id (never by a path from the request) and sent only while it is
still the loaded file (:func:`clipsql.web.files.open_verified`). A video is one row per
moment (``start_s``/``end_s``, migration 0015): a moment's thumbnail and image are its
keyframe, the frame at ``start_s`` (:func:`clipsql.ingest.video.frame_at`), rendered once
and cached like images' thumbnails; ``/videos/ID`` sends the video file itself, whole or
one byte range (:func:`clipsql.web.files.byte_range`), only for rows that are moments.
"""

import hashlib
import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Annotated

from fastapi import Header, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from clipsql.ingest.thumbnails import BROWSER_FORMATS, PREVIEW_SIZE, THUMB_SIZE, ThumbnailCache
from clipsql.web import files
from clipsql.web import schemas as m

__all__ = ["KEYFRAME_SLOTS", "add_file_routes", "keyframe", "row_id"]

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
#: Video keyframes decoded at once (thumbnails of moments not yet cached); others wait.
KEYFRAME_SLOTS = max(2, min(8, os.cpu_count() or 2))
KEYFRAMES = threading.BoundedSemaphore(KEYFRAME_SLOTS)


def add_file_routes(app, backend, thumbs: ThumbnailCache) -> None:
    """``/thumbs/ID``, ``/images/ID`` and ``/videos/ID`` on ``app``."""

    def _row(image_id: str):
        row = backend.row(row_id(image_id))
        if row is None:
            raise HTTPException(404, "no such image")
        if row.sha256 is None:  # imported embeddings (clipsql import-embeddings) have no file
            raise HTTPException(404, "this row was imported without an image file")
        return row

    def _not_modified(request: Request, headers: dict):
        if headers["ETag"] in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return None

    def _jpeg(row, size: int, request: Request, v: str | None):
        """A cached JPEG rendition of ``row`` at ``size`` px, or 304 when the client has it;
        a video moment's is its keyframe (the frame at ``start_s``)."""
        fresh = v is not None and row.sha256.startswith(v) and len(v) >= 8
        moment = row.start_s is not None
        key = moment_key(row) if moment else row.sha256
        headers = {"ETag": f'"{key[:32]}-{size}"', **_FILE_HEADERS,
                   "Cache-Control": _IMMUTABLE if fresh else _REVALIDATE}
        f, _ = files.open_verified(row.path, row.sha256, None if moment else files.MAX_BYTES)
        with f:
            if (not_modified := _not_modified(request, headers)) is not None:
                return not_modified
            files.still_at(f, row.path)
            path = keyframe(thumbs, row, size) if moment else \
                thumbs.get(row.id, row.sha256, row.path, size)
            try:  # the name still leads to the checked file: the thumbnail shows its content
                files.still_at(f, row.path)
            except HTTPException:
                thumbs.file_for(row.id, key, size).unlink(missing_ok=True)
                raise
        if path is None:
            raise HTTPException(404, files.GONE)
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    @app.get("/thumbs/{image_id}", response_class=Response, tags=["images"],
             responses={**_FILE_ERRORS, 200: {"content": {"image/jpeg": {}}}})
    def thumbnail(image_id: str, request: Request, v: str | None = None):
        """A JPEG thumbnail (320 px), made once and cached on disk."""
        return _jpeg(_row(image_id), THUMB_SIZE, request, v)

    @app.get("/images/{image_id}", response_class=Response, tags=["images"],
             responses=_FILE_ERRORS)
    def full_image(image_id: str, request: Request, v: str | None = None):
        """The image itself (formats browsers cannot show come as a 2048 px JPEG).

        404 when the file is gone, or is no longer the regular file with the loaded content."""
        row = _row(image_id)
        media = None if row.start_s is not None else BROWSER_FORMATS.get(row.format)
        if media is None:  # and a video moment: its keyframe
            return _jpeg(row, PREVIEW_SIZE, request, v)
        f, size = files.open_verified(row.path, row.sha256)
        headers = {"ETag": f'"{row.sha256[:32]}"', "Cache-Control": _REVALIDATE, **_FILE_HEADERS}
        if (not_modified := _not_modified(request, headers)) is not None:
            f.close()
            return not_modified
        return StreamingResponse(files.stream(f, size), media_type=media, headers={
            **headers, "Content-Length": str(size), "Content-Disposition": "inline"})

    @app.get("/videos/{image_id}", response_class=Response, tags=["images"],
             responses=_VIDEO_ANSWERS)
    def video(image_id: str, request: Request,
              byte_range: Annotated[str | None, Header(
                  alias="range", max_length=1000, description="bytes=FIRST-LAST, FIRST- or -SUFFIX; of "
                  "several ranges only the first within the file is sent")] = None,
              v: str | None = None):
        """The video file of a video moment's row (a still image's id: 404), whole (200) or
        the byte range asked for (206, ``Content-Range``; 416 when it lies outside the
        file), while the file is still the one that was loaded. The page plays it from the
        moment's start (``#t=START_S``)."""
        row = _row(image_id)
        if row.start_s is None:
            raise HTTPException(404, NOT_A_MOMENT)
        f, size = files.open_verified(row.path, row.sha256, max_bytes=None)
        etag = f'"{row.sha256[:32]}"'
        headers = {"ETag": etag, "Cache-Control": _REVALIDATE, "Accept-Ranges": "bytes",
                   "Content-Disposition": "inline", **_FILE_HEADERS}
        if (not_modified := _not_modified(request, headers)) is not None:
            f.close()
            return not_modified
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
            return StreamingResponse(files.stream(f, size), media_type=media, headers={
                **headers, "Content-Length": str(size)})
        first, last = span
        try:
            f.seek(first)
        except OSError:
            f.close()
            raise HTTPException(404, files.GONE) from None
        return StreamingResponse(files.stream(f, last - first + 1), status_code=206,
                                 media_type=media, headers={
                                     **headers, "Content-Length": str(last - first + 1),
                                     "Content-Range": f"bytes {first}-{last}/{size}"})


def moment_key(row) -> str:
    """A moment's rendition key: the video's content and the moment's start."""
    return hashlib.sha256(f"{row.sha256}@{row.start_s!r}".encode()).hexdigest()


def keyframe(thumbs: ThumbnailCache, row, size: int) -> Path | None:
    """The cached JPEG (``size`` px) of a video moment's keyframe, made now if missing
    (:func:`clipsql.ingest.video.frame_at`); None when the frame cannot be read."""
    from PIL import Image

    from clipsql.ingest.video import frame_at

    target = thumbs.file_for(row.id, moment_key(row), size)
    if target.is_file():
        return target
    try:
        with KEYFRAMES:  # a grid of moments must not decode dozens of videos at once
            if target.is_file():  # made while this request waited
                return target
            frame = frame_at(row.path, row.start_s, max_side=size)
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
            old.unlink(missing_ok=True)
    return target


def row_id(text: str) -> int:
    """A row id from a URL segment: plain ASCII digits only, anything else is "not found"."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise HTTPException(404, "no such image")
    return int(text)
