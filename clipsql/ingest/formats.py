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
"""

from __future__ import annotations

import os

from PIL import EpsImagePlugin, Image, ImageFile

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
