"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, ORF, RW2, RAF, PEF, SRW, ...) through rawpy.

Most RAW files carry a full-size JPEG preview rendered by the camera: when its longer side
is at least :data:`MIN_PREVIEW` (and at least the size the model needs) that preview is the
picture, which is fast and looks like what the camera showed. Otherwise the sensor data is
demosaiced at half size with the camera's white balance (``postprocess(half_size=True,
use_camera_wb=True)``), plenty for a 224 px model input.

>>> picture = open_raw(data, min_side=224)         # doctest: +SKIP
>>> picture.image.mode, picture.width, picture.height      # doctest: +SKIP
('RGB', 6000, 4000)
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from clipsql.errors import ImageError
from clipsql.ingest.reasons import Reason

#: Use the embedded preview when its longer side is at least this many pixels.
MIN_PREVIEW = 512

# LibRaw's flip code -> the PIL transpose that shows the picture upright.
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90,
         6: Image.Transpose.ROTATE_270}


@dataclass
class RawPicture:
    image: Image.Image      # RGB, upright
    width: int              # of the full picture, upright
    height: int
    meta_source: object     # the opened JPEG preview (its EXIF describes the photo), or None
    source: str             # "preview" or "sensor"


def open_raw(data: bytes, min_side: int = 0, max_pixels: int | None = None) -> RawPicture:
    """Decode a RAW file's bytes; every LibRaw failure becomes an :class:`ImageError`."""
    try:
        import rawpy
    except ImportError:  # pragma: no cover - a dependency
        raise ImageError(Reason.UNSUPPORTED, "camera RAW needs rawpy (pip install rawpy)") from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if max_pixels and width * height > max_pixels:
                raise ImageError(Reason.DECOMPRESSION_BOMB,
                                 f"{width}x{height} is over the {max_pixels:,} pixel limit")
            if sizes.flip in (5, 6):
                width, height = height, width
            preview, original = _preview(raw, rawpy, max(MIN_PREVIEW, min_side))
            if preview is not None:
                return RawPicture(preview, width, height, original, "preview")
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    except ImageError:
        raise
    except rawpy.LibRawFileUnsupportedError:
        raise ImageError(Reason.UNSUPPORTED,
                         "LibRaw cannot read this file: unsupported format or not RAW data") from None
    except rawpy.LibRawError as exc:
        text = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        reason = Reason.TRUNCATED if "eof" in text.lower() or "truncat" in text.lower() \
            else Reason.CORRUPT
        raise ImageError(reason, f"LibRaw: {text or type(exc).__name__}") from None
    image = Image.fromarray(rgb).convert("RGB")  # postprocess already applied the flip
    return RawPicture(image, width, height, None, "sensor")


def _preview(raw, rawpy, min_long_side: int):
    """(upright RGB preview, the JPEG as opened for its EXIF or None), or (None, None) when
    the preview is absent, broken or small."""
    try:
        thumb = raw.extract_thumb()
    except rawpy.LibRawError:
        return None, None
    original = None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            img = original = Image.open(io.BytesIO(thumb.data))
            if max(img.size) < min_long_side:
                return None, None
            oriented = img.getexif().get(0x0112) not in (None, 1)
            img.load()
            if oriented:
                img = ImageOps.exif_transpose(img)
            elif raw.sizes.flip in _FLIP:
                img = img.transpose(_FLIP[raw.sizes.flip])
        else:
            img = Image.fromarray(thumb.data)
            if max(img.size) < min_long_side:
                return None, None
            if raw.sizes.flip in _FLIP:
                img = img.transpose(_FLIP[raw.sizes.flip])
        return img.convert("RGB"), original
    except Exception:  # a broken preview: fall back to the sensor data
        return None, None
