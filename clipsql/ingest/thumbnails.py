"""Thumbnails: small JPEGs of collection images, made once and cached on disk.

A thumbnail is keyed by the image's row id and content hash, so an edited photo gets a
fresh one and an unchanged photo is never decoded twice. Files are written atomically
(temporary name, then rename), so concurrent requests for the same image are safe.

>>> from pathlib import Path
>>> cache = ThumbnailCache(Path("/tmp/clipsql-doctest-thumbs"))
>>> cache.file_for(7, "ab" * 32, 320).name
'7-abababababababababababababababababababababababababababababababab.jpg'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from clipsql.ingest import formats  # registers the HEIF and JPEG XL plugins

#: Long side of a grid thumbnail, in pixels (sharp on 2x screens at ~160 CSS px).
THUMB_SIZE = 320
#: Long side of a full-size preview for formats browsers cannot show (TIFF, HEIF).
PREVIEW_SIZE = 2048
#: Formats every current browser displays natively; others are served as a JPEG preview.
BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
                   "WEBP": "image/webp", "BMP": "image/bmp"}


def render(path: str, size: int = THUMB_SIZE, quality: int = 82, *,
           source=None) -> bytes | None:
    """JPEG bytes of the oriented image scaled to fit ``size`` x ``size``, or None if unreadable.

    The file is read once: ``source``, a binary file already open (the web server's
    hash-checked file, so the thumbnail shows exactly the bytes it checked), else ``path``.

    >>> render("/nonexistent.jpg") is None
    True
    """
    from clipsql.ingest import decode

    try:
        with decode.BUDGET.reservation() as ticket, _opened(path, source) as f:
            return _render(path, f, size, quality, ticket)
    except Exception:  # a vanished, changed or hostile file: the caller answers "not found"
        return None


@contextlib.contextmanager
def _opened(path: str, source):
    if source is not None:
        source.seek(0)
        yield source
        return
    with open(path, "rb") as f:
        yield f


def _render(path: str, f, size: int, quality: int, ticket) -> bytes:
    """:func:`render` of the open file ``f`` within a reservation of the decode budget:
    every frame's size is read from its header first (none over the pixel limit), and the
    decoded picture with its copies is taken from the budget before it is decoded."""
    import io

    from PIL import Image, ImageOps

    from clipsql.ingest import decode

    decode.bound_heap()
    if formats.is_raw(path):
        from clipsql.ingest.raw import open_raw

        data = f.read(decode.MAX_BYTES + 1)
        if len(data) > decode.MAX_BYTES:
            raise ValueError("over the size limit")
        decode.BUDGET.take(ticket, len(data))
        img = open_raw(data, min_side=size, max_pixels=decode.MAX_PIXELS).image
    else:
        sizes = formats.frame_sizes(f, decode.MAX_PIXELS)
        f.seek(0)
        decode.BUDGET.take(ticket, 8 * max(map(formats.area, sizes)))
        with Image.open(f) as opened:
            if getattr(opened, "n_frames", 1) > 1:
                opened.seek(0)
            opened.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
            img = ImageOps.exif_transpose(opened)  # a loaded copy
    with img:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Shrunk first (Pillow resizes transparent pixels premultiplied), then the
            # transparent pixels go on white rather than on whatever colour they hide.
            if img.mode != "RGBA":
                img = img.convert("RGBA")
            img.thumbnail((size, size), Image.Resampling.LANCZOS)
            rgba = img
            img = Image.new("RGB", rgba.size, (255, 255, 255))
            img.paste(rgba, mask=rgba.getchannel("A"))
        else:
            img = img.convert("RGB")
            img.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


class ThumbnailCache:
    """Thumbnails under ``root`` (default: ``clipsql.config.home() / "thumbnails"``)."""

    def __init__(self, root: Path | None = None):
        if root is None:
            from clipsql import config

            root = config.home() / "thumbnails"
        self.root = Path(root)

    def file_for(self, image_id: int, sha256: str, size: int) -> Path:
        """Where the thumbnail of this row and content lives (whether or not it exists yet)."""
        if not (isinstance(image_id, int) and len(sha256) == 64 and sha256.isalnum()):
            raise ValueError("thumbnails are keyed by an integer id and a hex sha256")
        return self.root / str(size) / str(image_id // 1000) / f"{image_id}-{sha256}.jpg"

    def get(self, image_id: int, sha256: str, path: str, size: int = THUMB_SIZE, *,
            source=None) -> Path | None:
        """The cached thumbnail file, made now if missing (:func:`render`: from ``source`` if
        given, else ``path``); None if the image cannot be read."""
        target = self.file_for(image_id, sha256, size)
        if target.is_file():
            return target
        data = render(path, size, source=source)
        if data is None:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._drop_stale(target)
        return target

    @staticmethod
    def _drop_stale(current: Path) -> None:
        """Remove thumbnails of earlier versions of the same row (its file was edited)."""
        prefix = current.name.split("-", 1)[0] + "-"
        for old in current.parent.glob(prefix + "*.jpg"):
            if old != current:
                old.unlink(missing_ok=True)
