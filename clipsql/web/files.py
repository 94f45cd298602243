"""Files that come from outside the server: collection files it sends, images users upload.

A collection file is opened once per request and checked on the open descriptor before a
byte of it is sent: it must still be a regular file (not a FIFO or a device that a symlink
now points at) whose SHA-256 equals the row's, so a photo swapped for a symlink to
``/etc/passwd`` (or to another image) is "the file changed since it was loaded", never
its new content. Thumbnails, which the thumbnail cache renders from the path, are kept
only when the path leads to that same checked file before and after rendering. Hashes are
read in bounded chunks and remembered per (device, inode, size, mtime, ctime), which any
change to the file's content alters (a file that is no longer the loaded one is remembered
too, so it is not read again on every request); requests that find the same unknown file at
once wait for one hash rather than each reading it. Images are bounded by the loader's
:data:`~clipsql.ingest.decode.MAX_BYTES`; videos (one row per moment, all with the video's
sha256) have no size bound: a multi-gigabyte video is hashed once per file identity, and
its ranges (:func:`byte_range`) are served from the checked descriptor.

An upload is refused from its headers alone when it, or any frame it holds (the PNG inside
an ICO or ICNS entry, a TIFF page), would decode to more than :data:`UPLOAD_MAX_PIXELS`,
well below the loader's cap, so a tiny file that unpacks into gigabytes never gets decoded.
One that passes is decoded in a process of its own limited to :data:`UPLOAD_DECODE_BYTES`,
at most :data:`UPLOAD_SLOTS` at a time, which hands back a small upright picture: the server
never decodes an upload itself.

>>> UPLOAD_MAX_PIXELS < 180_000_000
True
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict

from fastapi import HTTPException

from clipsql.errors import ImageError
from clipsql.ingest import decoder_pool, formats
from clipsql.ingest.decode import MAX_BYTES
from clipsql.ingest.reasons import Reason

#: Uploaded query images above this many pixels are refused before decoding (413).
UPLOAD_MAX_PIXELS = 40_000_000
#: Memory the trial decode of one upload may use (its own process): 16 bytes a pixel of the
#: largest upload, room for the decoded frame, a rotated copy and a JPEG decoder's buffers.
UPLOAD_DECODE_BYTES = 16 * UPLOAD_MAX_PIXELS
#: Uploads decoded at once; more wait up to UPLOAD_WAIT_S seconds for a place, then get 503.
UPLOAD_SLOTS = 2
UPLOAD_WAIT_S = 5.0
UPLOADS = threading.BoundedSemaphore(UPLOAD_SLOTS)
BUSY = ("the server is decoding as many uploaded images as it takes at once; "
        "try again in a moment")
#: Bytes read at a time while hashing or sending a file.
CHUNK = 1 << 20
CHANGED = "the file changed since it was loaded"
GONE = "the image file cannot be read any more"
#: Seconds one hash of a file may read for (a slow disk, a huge file): past it the answer is
#: a 503 ("try again"), and whoever waits for that hash stops waiting too.
HASH_DEADLINE_S = 60.0
SLOW_HASH = "the file is taking too long to check; try again later"
_KNOWN_MAX = 4096

_known: OrderedDict = OrderedDict()  # stat identity -> sha256 seen for it
_known_lock = threading.Lock()
_hashing: dict = {}  # stat identity -> the Future of the one request hashing it now
_holding = threading.local()  # how deep this thread is in upload_slot()


def _identity(st) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _remembered(key) -> str | None:
    with _known_lock:
        return _known.get(key)


def _remember(key, sha: str) -> None:
    with _known_lock:
        _known[key] = sha
        _known.move_to_end(key)
        while len(_known) > _KNOWN_MAX:
            _known.popitem(last=False)


class HashPending(Exception):
    """Raised by :func:`open_verified` with ``wait=False`` when another request is hashing
    the same file now: ``future`` gives its SHA-256 (None: it could not be read whole in
    time). Await it without holding a thread, then open again (the hash is remembered)."""

    def __init__(self, future):
        super().__init__("the file is being checked by another request")
        self.future = future


class _TooSlow(Exception):
    pass


def _digest(f, limit: int, deadline: float | None = None) -> str | None:
    """The SHA-256 of the rest of ``f``, or None when it is longer than ``limit`` bytes;
    :class:`_TooSlow` once ``time.monotonic()`` passes ``deadline``. Never reads more than
    ``limit + 1`` bytes."""
    h, total = hashlib.sha256(), 0
    while chunk := f.read(min(CHUNK, limit + 1 - total)):
        total += len(chunk)
        if total > limit:
            return None
        h.update(chunk)
        if deadline is not None and time.monotonic() > deadline:
            raise _TooSlow
    return h.hexdigest()


def _hash_claim(key):
    """``(future, mine)``: the Future of the one hash of this file identity, and whether
    this caller is the one who computes it (and then resolves it with :func:`_hashed`)."""
    with _known_lock:
        found = _hashing.get(key)
        if found is not None:
            return found, False
        _hashing[key] = future = concurrent.futures.Future()
        return future, True


def _hashed(key, future, sha: str | None) -> None:
    with _known_lock:
        _hashing.pop(key, None)
    future.set_result(sha)


def _slow() -> HTTPException:
    return HTTPException(503, SLOW_HASH, headers={"Retry-After": "10"})


def open_verified(path: str, sha256: str, max_bytes: int | None = MAX_BYTES, *,
                  size: int | None = None, wait: bool = True,
                  deadline_s: float = HASH_DEADLINE_S):
    """``(file, size)``: ``path`` opened for reading, checked to be the loaded regular file.

    Raises ``HTTPException(404)`` when it is gone, unreadable, not a regular file (of at
    most ``max_bytes``; None: any size; of exactly ``size`` bytes when the row knows its
    size: then a file of another size is refused before a byte of it is read), or its
    content differs from ``sha256``. A hash reads at most the file's size and stops after
    ``deadline_s`` seconds (``HTTPException(503)``, ``Retry-After``). Requests that find the
    same unknown file share one hash: with ``wait=False`` a request that finds another
    hashing it gets :class:`HashPending` (its file closed) instead of waiting in a thread.
    The caller closes the file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO must not hang the request
    except OSError:
        raise HTTPException(404, GONE) from None
    if _opened_elsewhere(fd, path):  # a link swapped in since resolve_inside
        os.close(fd)
        raise HTTPException(404, CHANGED)
    try:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode) and (max_bytes is None or st.st_size <= max_bytes) \
            and (size is None or st.st_size == size)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        raise HTTPException(404, CHANGED)
    f = os.fdopen(fd, "rb")
    try:
        key = _identity(st)
        found = _remembered(key)
        if found is None:
            future, mine = _hash_claim(key)  # one hash per file identity, however many ask
            if not mine:
                if not wait:
                    raise HashPending(future)
                try:
                    found = future.result(timeout=deadline_s)
                except concurrent.futures.TimeoutError:
                    raise _slow() from None
                if found is None:
                    raise _slow()
            else:
                found = None
                try:
                    found = _digest(f, st.st_size, deadline=time.monotonic() + deadline_s)
                    if found is None:  # it grew while being read: not the file that was stat-ed
                        found = ""
                    _remember(key, found)  # a changed file's too: no hash again
                except _TooSlow:
                    raise _slow() from None
                finally:
                    _hashed(key, future, found)
        if found != sha256:
            raise HTTPException(404, CHANGED)
        f.seek(0)
    except (HTTPException, HashPending):
        f.close()
        raise
    except OSError:
        f.close()
        raise HTTPException(404, GONE) from None
    return f, st.st_size


def resolve_inside(path: str, holds) -> str:
    """``path`` resolved now (:func:`os.path.realpath`), when ``holds(resolved)`` says it lies
    inside a place a load was given (:mod:`clipsql.ingest.roots`); else ``HTTPException(404)``,
    as for a file that changed since it was loaded: a row's file replaced by a link to a place
    outside the loaded folders is never sent. Give the resolved path to
    :func:`open_verified`, which refuses a descriptor that lies anywhere else."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        raise HTTPException(404, GONE) from None
    if not holds(real):
        raise HTTPException(404, CHANGED)
    return real


def _opened_elsewhere(fd: int, path: str) -> bool:
    """Whether the system says (Linux: ``/proc/self/fd``) that the file open as ``fd`` lies
    elsewhere than at ``path``: a link swapped in between resolving a path and opening it."""
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False  # no /proc: resolve_inside's check alone
    return where != path


def still_at(f, path: str) -> None:
    """Raise 404 unless ``path`` (followed) still names the file open as ``f``, unchanged."""
    try:
        same = _identity(os.stat(path)) == _identity(os.fstat(f.fileno()))
    except OSError:
        same = False
    if not same:
        raise HTTPException(404, CHANGED)


def stream(f, size: int):
    """The first ``size`` bytes of ``f`` in chunks (a response body); closes ``f`` at the end."""
    try:
        left = size
        while left > 0 and (chunk := f.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk
    finally:
        f.close()


class RangeNotSatisfiable(Exception):
    """A ``Range`` header none of whose ranges lies within the file (answered with 416)."""


#: Video types by file extension (a video's Content-Type); others are sent as octet-stream.
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
               ".qt": "video/quicktime", ".3gp": "video/3gpp", ".3g2": "video/3gpp2",
               ".mkv": "video/x-matroska", ".webm": "video/webm", ".avi": "video/x-msvideo",
               ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".vob": "video/mpeg",
               ".mts": "video/mp2t", ".m2ts": "video/mp2t", ".wmv": "video/x-ms-wmv",
               ".asf": "video/x-ms-asf", ".flv": "video/x-flv", ".ogv": "video/ogg"}


def video_type(path: str) -> str:
    """The Content-Type of a video file, by its extension.

    >>> video_type("/v/Clip.MP4"), video_type("/v/a.webm"), video_type("/v/x.bin")
    ('video/mp4', 'video/webm', 'application/octet-stream')
    """
    return VIDEO_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte of a ``Range`` header for a file of ``size``
    bytes, or None to send the whole file (no header, another unit, or one that cannot be
    parsed: RFC 9110 lets a server ignore those). Of several ranges only the first that
    lies within the file is served (a single part, its Content-Range says which). Raises
    :class:`RangeNotSatisfiable` when none does.

    >>> byte_range("bytes=0-99", 1000), byte_range("bytes=900-", 1000), byte_range("bytes=-10", 1000)
    ((0, 99), (900, 999), (990, 999))
    >>> byte_range("bytes=990-5000", 1000), byte_range("bytes=5-1,0-1", 1000), byte_range("items=0-1", 1000)
    ((990, 999), None, None)
    >>> byte_range("bytes=2000-, 0-9", 1000)
    (0, 9)
    >>> byte_range("bytes=1000-", 1000)
    Traceback (most recent call last):
    clipsql.web.files.RangeNotSatisfiable
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip() or len(header) > 1000:
        return None
    wanted = []
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not dash or not (first.isdigit() or last.isdigit()) or \
                not all(x == "" or (x.isascii() and x.isdigit()) for x in (first, last)):
            return None  # malformed: ignore the header
        if first == "":  # the last N bytes
            wanted.append((max(size - int(last), 0), size - 1) if int(last) > 0 else None)
            continue
        a = int(first)
        if last and int(last) < a:
            return None  # an invalid range-spec makes the whole header invalid
        wanted.append((a, min(int(last), size - 1) if last else size - 1) if a < size else None)
    for found in wanted:
        if found is not None and found[0] <= found[1]:
            return found
    raise RangeNotSatisfiable


def check_upload(path: str, shrink_to: int):
    """An uploaded query image, decoded outside the server: refused (413) when its headers
    give it, or any frame it holds, more than :data:`UPLOAD_MAX_PIXELS`, 400 when they
    cannot be read; then decoded in a process of its own
    (:func:`~clipsql.ingest.decoder_pool.decode_isolated`, at most
    :data:`UPLOAD_DECODE_BYTES` of memory: 413 past it, 400 when it fails), one of
    :data:`UPLOAD_SLOTS` at a time (503 when none comes free), which hands back the picture
    upright and shrunk to a shorter side of ``shrink_to`` pixels: the server never decodes
    the file itself."""
    from PIL import Image

    try:
        with open(path, "rb") as f:  # headers only: no pixel is decoded here
            formats.frame_sizes(f, UPLOAD_MAX_PIXELS)
    except Image.DecompressionBombError:
        raise HTTPException(413, "the uploaded image has too many pixels to decode") from None
    except ImageError as exc:
        raise _refused(exc) from None
    except Exception:
        raise HTTPException(400, "cannot use the uploaded file as a query image: not an image "
                                 "format Pillow can read") from None
    with upload_slot():
        try:
            return decoder_pool.decode_isolated(path, UPLOAD_DECODE_BYTES,
                                                shrink_to=shrink_to)[1]
        except ImageError as exc:
            raise _refused(exc) from None


def _refused(exc: ImageError) -> HTTPException:
    """An upload's :class:`ImageError` as the answer: 413 for too many pixels or too much
    memory (send a smaller copy), 400 for anything else."""
    if exc.reason is Reason.DECOMPRESSION_BOMB:
        return HTTPException(413, f"cannot use the uploaded file as a query image: "
                                  f"{exc.detail}; send a smaller copy")
    return HTTPException(400, f"cannot use the uploaded file as a query image: {exc.detail}")


@contextlib.contextmanager
def upload_slot():
    """Hold one of the :data:`UPLOAD_SLOTS` places for decoding an upload (a thread that holds
    one already goes on): a 503 with a readable message when none comes free within
    :data:`UPLOAD_WAIT_S`. ``with upload_slot():`` around the check and the server's own
    decode keeps both within the cap."""
    if getattr(_holding, "depth", 0):
        _holding.depth += 1
        try:
            yield
        finally:
            _holding.depth -= 1
        return
    if not UPLOADS.acquire(timeout=UPLOAD_WAIT_S):
        raise HTTPException(503, BUSY)
    _holding.depth = 1
    try:
        yield
    finally:
        _holding.depth = 0
        UPLOADS.release()
