"""Which files are images: whatever Pillow opens (its own plugins plus pillow-heif and
pillow-jxl-plugin, registered here) and camera RAW files, which rawpy (LibRaw) decodes.

The set is read from Pillow's registry, not written by hand, so a Pillow that learns a
format reads it without a change here. Left out are the extensions Pillow registers but
cannot decode into pixels: stub plugins without a handler (BUFR, GRIB, HDF5, WMF off
Windows), MPEG (video: Pillow only identifies it) and EPS/PS without Ghostscript.

>>> is_image("IMG_0001.JPG"), is_image("a.heic"), is_image("b.nef"), is_image("notes.txt")
(True, True, True, False)
>>> is_raw("DSC_0042.NEF"), is_raw("a.tif")
(True, False)

:func:`frame_sizes` reads the size of every frame a file holds from the frame's own header,
before anything is decoded: a container's directory can say less than the picture inside.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

from PIL import EpsImagePlugin, Image, ImageFile

from clipsql.errors import ImageError
from clipsql.ingest.reasons import Reason

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
    if hasattr(pillow_heif, "register_avif_opener") and "AVIF" not in Image.OPEN:
        pillow_heif.register_avif_opener()  # older Pillow without AVIF built in
except ImportError:  # pragma: no cover - a dependency, but HEIC stays optional at runtime
    pillow_heif = None

try:
    import pillow_jxl  # importing it registers the JPEG XL plugin
except ImportError:  # pragma: no cover - a dependency, but JPEG XL stays optional at runtime
    pillow_jxl = None

#: Camera RAW extensions; decoded by rawpy (LibRaw), see :mod:`clipsql.ingest.raw`.
RAW_EXTENSIONS = frozenset({
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".iiq", ".kdc", ".mef",
    ".mos", ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2",
    ".srf", ".srw", ".x3f",
})

#: Formats Pillow registers that are not pictures it can decode.
_NOT_PICTURES = {"MPEG"}
#: Formats opened by another format's plugin.
_OPENED_AS = {"MPO": "JPEG"}


def _decodable(fmt: str) -> bool:
    fmt = _OPENED_AS.get(fmt, fmt)
    if fmt in _NOT_PICTURES or fmt not in Image.OPEN:  # e.g. PDF: Pillow writes it, never reads
        return False
    factory = Image.OPEN[fmt][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        return getattr(factory, "_handler", None) is not None
    if fmt == "EPS":
        return bool(EpsImagePlugin.has_ghostscript())
    return True


def pillow_extensions() -> dict:
    """Extension (lower case, with the dot) -> Pillow format, for formats Pillow decodes."""
    return {ext: fmt for ext, fmt in Image.registered_extensions().items() if _decodable(fmt)}


#: Every extension loaded as an image; computed once, after the plugins above registered.
PILLOW_EXTENSIONS = frozenset(pillow_extensions())
EXTENSIONS = PILLOW_EXTENSIONS | RAW_EXTENSIONS


def extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def is_image(name: str) -> bool:
    """Whether a file of this name is loaded as an image (decided by its extension)."""
    return extension(name) in EXTENSIONS


def is_raw(name: str) -> bool:
    return extension(name) in RAW_EXTENSIONS


#: Video extension -> the FFmpeg demuxer that reads it (:mod:`clipsql.ingest.video`, which
#: a walk need not import to know a video by its name). ``.ts`` is left out: in most folders
#: it is TypeScript source, not MPEG-TS (camcorders write ``.mts``/``.m2ts``).
VIDEO_DEMUXERS = {
    ".mp4": "mov", ".m4v": "mov", ".mov": "mov", ".qt": "mov", ".3gp": "mov", ".3g2": "mov",
    ".mkv": "matroska", ".webm": "matroska",
    ".avi": "avi",
    ".mpg": "mpeg", ".mpeg": "mpeg", ".vob": "mpeg",
    ".mts": "mpegts", ".m2ts": "mpegts",
    ".wmv": "asf", ".asf": "asf",
    ".flv": "flv",
    ".ogv": "ogg",
}
#: Every extension loaded as a video.
VIDEO_EXTENSIONS = frozenset(VIDEO_DEMUXERS)


def is_video(name: str) -> bool:
    """Whether a file of this name is loaded as a video (decided by its extension)."""
    return extension(name) in VIDEO_EXTENSIONS


# --- the frames a file holds, by their own headers ------------------------------------------
#: Pages of a multi-page TIFF whose headers are read (pages past it are never decoded).
PAGES_CHECKED = 1000
#: The first bytes of an ICO file (Pillow decodes one as it opens it).
ICO_MAGIC = b"\x00\x00\x01\x00"
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG2000 = (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")
#: Deflate packs at most 1032 bytes into one (a margin added): PNG pixel data shorter than
#: its rows' bytes divided by this is cut short, though zlib's stream may end cleanly.
DEFLATE_MAX_RATIO = 1100
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def frame_sizes(fp, max_pixels: int | None = None) -> list[tuple[int, int]]:
    """The (width, height) of the frames of the image in ``fp`` (a binary file, seekable)
    that headers tell, read without decoding a pixel: first the size the file says it has,
    then each picture inside an ICO or ICNS by its own header (an entry the directory calls
    256x256 or 1024x1024 may hold a PNG of 13000x13000, which Pillow decodes at its real
    size), and each page of a TIFF. GIF, APNG and WebP frames stay within the first size;
    only the first frame of a file is ever decoded.

    Errors are Pillow's, as from ``open``, then :class:`ImageError`: ``decompression_bomb``
    when a frame is over ``max_pixels``, ``truncated`` for a PNG whose pixel data is too short
    for its size (Pillow would fill the rest with black: 265 bytes that decode to 169 MP).
    An ICO is read here, not by Pillow: opening one with Pillow decodes its largest frame.
    """
    cut: list = []  # PNGs whose data is too short, told after the pixel limit
    fp.seek(0)
    head = fp.read(6)
    if head[:4] == ICO_MAGIC:
        sizes = _icon_sizes(fp, int.from_bytes(head[4:6], "little"), cut)
    else:
        fp.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                sizes = [tuple(img.size)]
                if img.format == "PNG":
                    _png(fp, 0, cut)
                elif img.format == "ICNS":
                    sizes += [_embedded(fp, start, length, cut)
                              for start, length in img.icns.dct.values()]
                elif img.format == "TIFF" and getattr(img, "n_frames", 1) > 1:
                    for page in range(1, min(img.n_frames, PAGES_CHECKED)):
                        img.seek(page)  # reads the page's tags, not its pixels
                        sizes.append(tuple(img.size))
        sizes = [s for s in sizes if s is not None]
    big = max(sizes, key=area)
    if max_pixels is not None and area(big) > max_pixels:
        size = f"{big[0]}x{big[1]}"
        raise ImageError(Reason.DECOMPRESSION_BOMB, (
            f"{size} is over" if big == sizes[0] else f"it holds a frame of {size}, over")
            + f" the {max_pixels:,} pixel limit")
    if cut:
        raise ImageError(Reason.TRUNCATED, cut[0])
    return sizes


def _icon_sizes(fp, count: int, cut: list) -> list[tuple[int, int]]:
    """An ICO's largest size by its directory, then each entry's by the picture's header."""
    entries = fp.read(16 * count)
    listed, inside = [], []
    for i in range(0, len(entries) - 15, 16):
        listed.append((entries[i] or 256, entries[i + 1] or 256))
        length, offset = struct.unpack("<II", entries[i + 8:i + 16])
        inside.append(_embedded(fp, offset, length, cut, dib=True))
    return [s for s in [max(listed, key=area, default=(0, 0)), *inside] if s is not None]


def _embedded(fp, start: int, length: int, cut: list, dib: bool = False):
    """The size a picture inside a container says it has: a PNG's IHDR, a JPEG 2000's header,
    an ICO bitmap's DIB header (whose height counts the mask's rows too); None for other
    data (an ICNS element of a fixed size)."""
    fp.seek(start)
    head = fp.read(32)
    if head.startswith(_PNG):
        return _png(fp, start, cut)
    if head.startswith(_JPEG2000):
        fp.seek(start)
        with Image.open(io.BytesIO(fp.read(length)), formats=["JPEG2000"]) as sub:
            return tuple(sub.size)
    if dib and len(head) >= 12:
        if int.from_bytes(head[:4], "little") == 12:  # BITMAPCOREHEADER
            width, height = struct.unpack("<HH", head[4:8])
        else:
            width, height = struct.unpack("<ii", head[4:12])
        return abs(width), abs(height) // 2
    return None


def _png(fp, start: int, cut: list):
    """(width, height) of the PNG at ``start`` by its IHDR; a line in ``cut`` when its IDAT
    chunks hold too little data for that many pixels."""
    fp.seek(start + 8)
    ihdr = fp.read(25)
    if len(ihdr) < 25 or ihdr[4:8] != b"IHDR":
        return None
    width, height, depth, color = struct.unpack(">IIBB", ihdr[8:18])
    row = (width * depth * _PNG_CHANNELS.get(color, 1) + 7) // 8
    need, found, pos = height * row // DEFLATE_MAX_RATIO, 0, start + 8
    while found < need:
        fp.seek(pos)
        chunk = fp.read(8)
        if len(chunk) < 8 or chunk[4:8] == b"IEND":
            cut.append(f"{width}x{height} pixels, but only {found:,} bytes of image data: "
                       "cut short")
            break
        length = int.from_bytes(chunk[:4], "big")
        found += length if chunk[4:8] == b"IDAT" else 0
        pos += 12 + length
    return width, height
