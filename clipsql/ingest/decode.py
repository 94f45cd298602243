"""Read one image file: bytes, hash, metadata, and the pixels ready for the model.

Decoding is where broken files show up, so every failure becomes an :class:`ImageError`
with a reason code of :class:`~clipsql.ingest.reasons.Reason`; nothing else escapes. Which files are images, and the plugins
behind them, is :mod:`clipsql.ingest.formats`; camera RAW goes through
:mod:`clipsql.ingest.raw`. Multi-frame files (GIF, APNG, TIFF, ICO, WebP) give their
first frame. No frame over :data:`MAX_PIXELS` is decoded: every frame a file holds is
measured by its own header first (:func:`~clipsql.ingest.formats.frame_sizes`).

>>> EXTENSIONS >= {".jpg", ".png", ".heic", ".avif", ".jxl", ".jp2", ".dng"}
True
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from struct import error as struct_error

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clipsql.errors import ImageError
from clipsql.ingest import exif, formats, raw
from clipsql.ingest.formats import EXTENSIONS, is_raw
from clipsql.ingest.reasons import Reason

__all__ = ["EXTENSIONS", "MAX_BYTES", "MAX_PIXELS", "Decoded", "decode_bytes", "read"]
#: A JPEG is decoded at a reduced scale (DCT scaling, 1/2 to 1/8) whose shorter side stays at
#: least this many times the model's input: the load's decode cost nearly halves from twice
#: the input, and the embedding stays within cosine 0.9999 of a full decode (docs/performance.md,
#: "Loading").
DRAFT_FACTOR = 1.3
#: Refuse images above this many pixels (a 20000x20000 PNG is 400 MP): decompression bombs.
MAX_PIXELS = 180_000_000
#: Files above this size are not read at all.
MAX_BYTES = 512 << 20
#: Bytes the decodes of one process may hold at once (file bytes plus decoded pixels).
DECODE_MEMORY = 1 << 30
#: The detail of a decode whose memory ran out (a process with a limit: decoder_pool).
OUT_OF_MEMORY = "decoding it needs more memory than this process may use"

ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class Decoded:
    path: str
    sha256: str
    bytes: int
    mtime: datetime
    width: int
    height: int
    format: str
    meta: dict
    pixels: object  # the preprocessed tensor (3, S, S)
    embedding: object = None  # filled in by the loader after inference
    #: A video moment's time range in seconds (:mod:`clipsql.ingest.video`); None for a still image.
    start_s: float | None = None
    end_s: float | None = None


class MemoryBudget:
    """Bytes that concurrent decodes may hold together; a decode takes its share as it learns
    it (the file's size, then its pixels' once the header is read) and gives it all back at
    the end. One that does not fit waits, unless it is the oldest decode running: that one
    always goes on, so decodes never wait on each other in a circle, and what they hold stays
    under ``limit`` plus the one oversized image the pixel limit allows.

    >>> budget = MemoryBudget(100)
    >>> with budget.reservation() as r:
    ...     budget.take(r, 150)    # the oldest (here the only) decode is never held up
    ...     budget.used
    150
    >>> budget.used, budget.peak
    (0, 150)
    """

    def __init__(self, limit: int):
        self.limit, self.used, self.peak = int(limit), 0, 0
        self._cond = threading.Condition()
        self._running: list = []

    @contextmanager
    def reservation(self):
        ticket = _Ticket()
        with self._cond:
            self._running.append(ticket)
        try:
            yield ticket
        finally:
            with self._cond:
                self.used -= ticket.held
                self._running.remove(ticket)
                self._cond.notify_all()

    def take(self, ticket: _Ticket, n: int) -> None:
        with self._cond:
            while self.used + n > self.limit and self._running[0] is not ticket:
                self._cond.wait()
            self.used += n
            self.peak = max(self.peak, self.used)
            ticket.held += n


class _Ticket:
    """One decode's share of a :class:`MemoryBudget` (compared by identity)."""

    __slots__ = ("held",)

    def __init__(self):
        self.held = 0


#: The budget of this process's decodes (decoder processes get a share each).
BUDGET = MemoryBudget(DECODE_MEMORY)
#: Allocations from this size up get pages of their own, given back to the system when freed.
MMAP_THRESHOLD = 1 << 20
_heap_bounded: list = []


def bound_heap() -> bool:
    """Make large allocations (decoded pixels) go back to the system when freed; once per
    process, on glibc (elsewhere nothing to do: False).

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), so
    after a few big images their buffers come from the heap of whichever decoder thread ran
    them and stay there: a load of 1000 hostile files peaked at 10.0 GB RSS that way, 1.45 GB
    with the threshold fixed at 1 MB (benchmarks/memory.py, docs/performance.md).
    """
    if _heap_bounded:
        return _heap_bounded[0]
    ok = False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
    _heap_bounded.append(ok)
    return ok


def draft_size(image_size: int) -> int:
    """The shorter side a load decodes images and video keyframes to, for a model whose input
    is ``image_size`` pixels (:data:`DRAFT_FACTOR`): one rule for the loader, Ray, reembeds.

    >>> draft_size(224)
    292
    """
    return math.ceil(DRAFT_FACTOR * image_size)


def read(path: str, preprocess, draft_size: int | None = None, *, places=None) -> Decoded:
    """Decode ``path`` and run ``preprocess`` (open_clip's transform) on the oriented RGB image.

    ``draft_size`` lets JPEG decoding use DCT scaling so that both sides stay at least this
    large (:func:`draft_size` of the model input keeps the embedding close to a full decode). The
    file's bytes and decoded pixels count against :data:`BUDGET` until the pixels are
    preprocessed. ``places``: the file opened must lie inside them
    (:func:`clipsql.ingest.confine.open_inside`), else ``link_outside``.
    """
    from clipsql.ingest.confine import opened

    bound_heap()
    with BUDGET.reservation() as ticket:
        try:
            with opened(path, places) as f:
                st = os.fstat(f.fileno())
                if st.st_size > MAX_BYTES:
                    raise ImageError(Reason.TOO_LARGE,
                                     f"{st.st_size} bytes is over the {MAX_BYTES} byte limit")
                _refuse_by_header(path, f)  # before the file is read whole, or hashed
                BUDGET.take(ticket, st.st_size)
                data = f.read()
        except OSError as exc:
            raise read_error(exc) from None
        except (ImageError, MemoryError):
            raise
        except Exception as exc:  # a plugin's bug on a hostile header must not stop the load
            raise ImageError(Reason.CORRUPT, f"{type(exc).__name__}: {exc}") from None
        return decode_bytes(path, data, st, preprocess, draft_size, ticket)


def _refuse_by_header(path: str, f) -> None:
    """Refuse, from its first bytes, a file Pillow would refuse: no format it knows
    (``unsupported``) or more pixels than :data:`MAX_PIXELS` (``decompression_bomb``). Any
    other doubt is left to the decode. RAW files are LibRaw's to judge."""
    if is_raw(path) or f.read(4) == formats.ICO_MAGIC:  # Pillow decodes an ICO as it opens it
        f.seek(0)
        return
    f.seek(0)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                w, h = img.size
    except UnidentifiedImageError:
        raise ImageError(Reason.UNSUPPORTED, "not an image format Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(Reason.DECOMPRESSION_BOMB, str(exc)) from None
    except Exception:  # damaged, or a PNG text chunk past Pillow's limits: the decode tells
        w = h = 0
    finally:
        if f.closed:  # a reader that closes the file it was given (Pillow's FTEX)
            raise ImageError(Reason.UNSUPPORTED, "Pillow's reader of this format closes the "
                             "file it reads: not read")
        f.seek(0)
    if w * h > MAX_PIXELS:
        raise ImageError(Reason.DECOMPRESSION_BOMB,
                         f"{w}x{h} is over the {MAX_PIXELS:,} pixel limit")


def read_error(exc: OSError) -> ImageError:
    """The :class:`ImageError` of an ``OSError`` met while reading a file (an image or a
    video): gone meanwhile, no permission, or not readable."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(Reason.VANISHED, "the file disappeared before it could be read")
    if isinstance(exc, PermissionError):
        return ImageError(Reason.UNREADABLE, "permission denied")
    return ImageError(Reason.UNREADABLE, exc.strerror or str(exc))


def decode_bytes(path, data: bytes, st, preprocess, draft_size=None, ticket=None) -> Decoded:
    """:func:`read` for bytes already in memory (``ticket``: the budget reservation they
    are counted in, if any; else one is made for the pixels)."""
    if ticket is None:
        bound_heap()
        with BUDGET.reservation() as own:
            return decode_bytes(path, data, st, preprocess, draft_size, own)
    try:
        if is_raw(path):
            width, height, fmt, meta, img = _open_raw(path, data, draft_size)
        else:
            width, height, fmt, meta, img = _open_pillow_or_without_text(data, draft_size, ticket)
        pixels = preprocess(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(Reason.DECOMPRESSION_BOMB, str(exc)) from None
    except MemoryError:
        raise ImageError(Reason.DECOMPRESSION_BOMB, OUT_OF_MEMORY) from None
    except UnidentifiedImageError:
        raise ImageError(Reason.UNSUPPORTED, "not an image format Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as exc:
        text = str(exc) or type(exc).__name__
        reason = Reason.TRUNCATED if "truncated" in text.lower() else Reason.CORRUPT
        raise ImageError(reason, text) from None
    except Exception as exc:  # a decoder bug on a hostile file must not stop the load
        raise ImageError(Reason.CORRUPT, f"{type(exc).__name__}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()  # hashed once decoded: never a refused file
    return Decoded(
        path=path, sha256=digest, bytes=st.st_size,
        mtime=mtime_of(st),
        width=width, height=height, format=_format_name(fmt), meta=meta, pixels=pixels,
    )


def _open_pillow_or_without_text(data: bytes, draft_size, ticket):
    try:
        return _open_pillow(data, draft_size, ticket)
    except ValueError as exc:
        # A PNG text chunk past PngImagePlugin's limits is still an image: read it without
        # its text chunks (the limits stay: they guard memory against zlib bombs).
        if not data.startswith(_PNG_SIGNATURE) or "text" not in str(exc).lower():
            raise
        return _open_pillow(_without_png_text(data), draft_size, ticket)


def _open_pillow(data: bytes, draft_size, ticket):
    """(width, height, format, meta, upright RGB image) of a file Pillow reads."""
    # every frame by its own header, none decoded: over MAX_PIXELS is refused here
    sizes = formats.frame_sizes(io.BytesIO(data), MAX_PIXELS)
    if len(sizes) > 1:  # frames inside a container (an ICO is decoded as Pillow opens it)
        BUDGET.take(ticket, 8 * max(map(formats.area, sizes[1:])))
    img = Image.open(io.BytesIO(data))
    fmt = img.format or "UNKNOWN"
    width, height = img.size
    meta = exif.extract(img)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if draft_size and fmt == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    # the decoded frame, and one converted or rotated copy of it, 4 bytes a pixel at most
    BUDGET.take(ticket, 8 * img.size[0] * img.size[1])
    img = ImageOps.exif_transpose(img)
    img = img.convert("RGB") if img.mode != "RGB" else img
    if meta["orientation"] in (5, 6, 7, 8):
        width, height = height, width
    return width, height, fmt, meta, img


def _open_raw(path: str, data: bytes, draft_size):
    """The same for a camera RAW file: LibRaw's picture, EXIF from Pillow where it can."""
    picture = raw.open_raw(data, min_side=(draft_size or 0) // 2, max_pixels=MAX_PIXELS)
    meta = exif.from_tiff_bytes(data)
    if meta["exif"] is None and picture.meta_source is not None:
        meta = exif.extract(picture.meta_source)
    fmt = os.path.splitext(path)[1].lstrip(".").upper() or "RAW"
    return picture.width, picture.height, fmt, meta, picture.image


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}


def _without_png_text(data: bytes) -> bytes:
    """The PNG with its text chunks left out (the pixels and other chunks untouched)."""
    out, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length
        if data[pos + 4:pos + 8] not in _PNG_TEXT_CHUNKS:
            out.append(data[pos:end])
        pos = end
    out.append(data[pos:])
    return b"".join(out)


def mtime_of(st) -> datetime:
    """A stat result's mtime as an aware datetime, truncated to PostgreSQL's microseconds."""
    seconds, nanos = divmod(st.st_mtime_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=timezone.utc) + timedelta(microseconds=nanos // 1000)


def _format_name(fmt: str) -> str:
    return {"MPO": "JPEG", "HEIF": "HEIF", "AVIF": "AVIF"}.get(fmt, fmt)

