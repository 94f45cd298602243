"""Files that come from outside the server: collection files it sends, images users upload.

A collection file is opened once per request and checked on the open descriptor before a
byte of it is sent: it must still be a regular file (not a FIFO or a device that a symlink
now points at) whose SHA-256 equals the row's, so a photo swapped for a symlink to
``/etc/passwd`` (or to another image) is "the file changed since it was loaded", never
its new content. Thumbnails, which the thumbnail cache renders from the path, are kept
only when the path leads to that same checked file before and after rendering. Hashes are read in bounded chunks and remembered per (device, inode,
size, mtime, ctime), which any change to the file's content alters.

An upload is refused from its header alone when it would decode to more than
:data:`UPLOAD_MAX_PIXELS`, well below the loader's cap, so a tiny file that unpacks into
gigabytes never gets decoded.

>>> UPLOAD_MAX_PIXELS < 180_000_000
True
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict

from fastapi import HTTPException

from clipsql.ingest.decode import MAX_BYTES

#: Uploaded query images above this many pixels are refused before decoding (413).
UPLOAD_MAX_PIXELS = 40_000_000
#: Bytes read at a time while hashing or sending a file.
CHUNK = 1 << 20
CHANGED = "the file changed since it was loaded"
GONE = "the image file cannot be read any more"
_KNOWN_MAX = 4096

_known: OrderedDict = OrderedDict()  # stat identity -> sha256 seen for it
_known_lock = threading.Lock()


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
    """Refuse an uploaded query image from its header: 400 if unreadable, 413 if too large."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
    except Image.DecompressionBombError:
        raise HTTPException(413, "the uploaded image has too many pixels to decode") from None
    except Exception:
        raise HTTPException(400, "cannot use the uploaded file as a query image: not an image "
                                 "format Pillow can read") from None
    if width * height > UPLOAD_MAX_PIXELS:
        raise HTTPException(413, f"the uploaded image is {width}x{height}, over the "
                                 f"{UPLOAD_MAX_PIXELS:,} pixel limit for query images; "
                                 "send a smaller copy")
