"""Files that come from outside the server: collection files it sends, images users upload.

A collection file is opened once per request and checked on the open descriptor before a
byte of it is sent: it must still be a regular file (not a FIFO or a device that a symlink
now points at) whose SHA-256 equals the row's, so a photo swapped for a symlink to
``/etc/passwd`` (or to another image) is "the file changed since it was loaded", never
its new content. Thumbnails, which the thumbnail cache renders from the path, are kept
only when the path leads to that same checked file before and after rendering. Hashes are read in bounded chunks and remembered per (device, inode,
size, mtime, ctime), which any change to the file's content alters.

An upload is refused from its headers alone when it, or any frame it holds (the PNG inside
an ICO or ICNS entry, a TIFF page), would decode to more than :data:`UPLOAD_MAX_PIXELS`,
well below the loader's cap, so a tiny file that unpacks into gigabytes never gets decoded.
One that passes is decoded first in a process of its own limited to
:data:`UPLOAD_DECODE_BYTES`, at most :data:`UPLOAD_SLOTS` at a time, so what a decoder needs
is known before the server decodes the file itself.

>>> UPLOAD_MAX_PIXELS < 180_000_000
True
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
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
_KNOWN_MAX = 4096

_known: OrderedDict = OrderedDict()  # stat identity -> sha256 seen for it
_known_lock = threading.Lock()
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


def _digest(f, limit: int) -> str | None:
    """The SHA-256 of the rest of ``f``, or None when it is longer than ``limit`` bytes."""
    h, total = hashlib.sha256(), 0
    while chunk := f.read(CHUNK):
        total += len(chunk)
        if total > limit:
            return None
        h.update(chunk)
    return h.hexdigest()


def open_verified(path: str, sha256: str):
    """``(file, size)``: ``path`` opened for reading, checked to be the loaded regular file.

    Raises ``HTTPException(404)`` when it is gone, unreadable, not a regular file, or its
    content differs from ``sha256``. The caller closes the file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO must not hang the request
    except OSError:
        raise HTTPException(404, GONE) from None
    try:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode) and st.st_size <= MAX_BYTES
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        raise HTTPException(404, CHANGED)
    f = os.fdopen(fd, "rb")
    try:
        key = _identity(st)
        if _remembered(key) != sha256:
            found = _digest(f, st.st_size)
            if found != sha256:
                raise HTTPException(404, CHANGED)
            _remember(key, found)
        f.seek(0)
    except HTTPException:
        f.close()
        raise
    except OSError:
        f.close()
        raise HTTPException(404, GONE) from None
    return f, st.st_size


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


def check_upload(path: str) -> None:
    """Refuse an uploaded query image unless it decodes within bounds, before the server
    decodes it: 413 when its headers give it, or any frame it holds, more than
    :data:`UPLOAD_MAX_PIXELS`, 400 when they cannot be read; then a trial decode in a
    process of its own (:func:`~clipsql.ingest.decoder_pool.decode_isolated`, at most
    :data:`UPLOAD_DECODE_BYTES` of memory: 413 past it, 400 when it fails), one of
    :data:`UPLOAD_SLOTS` at a time (503 when none comes free). Decoding is deterministic: the
    server's own decode of a file that passed needs what the trial did."""
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
            decoder_pool.decode_isolated(path, UPLOAD_DECODE_BYTES)
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
