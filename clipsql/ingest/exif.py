"""EXIF metadata people filter on: date taken, camera, GPS in decimal degrees, orientation.

The rest of the EXIF is kept as a JSON document, capped at :data:`MAX_EXIF_BYTES` of JSON
per image (texts at 500 characters, lists at 64 items): a file with thousands of tags
keeps its first tags that fit and records how many were dropped under ``"_dropped"``.

>>> dms_to_decimal((52, 22, 12.0), "N")
52.37
>>> dms_to_decimal((4, 53, 24.0), "W")
-4.89
"""

from __future__ import annotations

import json
import math
from datetime import datetime

from PIL import ExifTags, Image

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_SKIP_TAGS = {"MakerNote", "UserComment", "PrintImageMatching", "ComponentsConfiguration"}
_MAX_TEXT = 500
#: The most JSON the ``exif`` column holds for one image.
MAX_EXIF_BYTES = 64 * 1024


def _number(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if math.isfinite(f) else None


def dms_to_decimal(dms, ref) -> float | None:
    """Degrees/minutes/seconds (three rationals) plus N/S/E/W to signed decimal degrees."""
    try:
        d, m, s = (_number(x) for x in dms)
    except (TypeError, ValueError):
        return None
    if d is None or m is None or s is None:
        return None
    value = d + m / 60 + s / 3600
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    if str(ref).strip().upper() in ("S", "W"):
        value = -value
    return round(value, 7)


def _clean_text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:_MAX_TEXT] or None


def parse_exif_datetime(value) -> datetime | None:
    text = _clean_text(value)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            parsed = datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
        return parsed if 1800 <= parsed.year <= 2200 else None
    return None


def _jsonable(value):
    """EXIF values as JSON: rationals to floats, text cleaned, binary blobs dropped."""
    if isinstance(value, bytes):
        return None
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_jsonable(v) for v in value[:64]]
        return items if all(v is not None for v in items) else None
    return _number(value)


def _named(ifd, names: dict) -> dict:
    out = {}
    for tag, value in ifd.items():
        name = names.get(tag, f"Tag{tag}")
        if name in _SKIP_TAGS or tag in (_EXIF_IFD, _GPS_IFD):
            continue
        cleaned = _jsonable(value)
        if cleaned is not None:
            out[name] = cleaned
    return out


def extract(img) -> dict:
    """Metadata columns of an opened (not yet transposed) PIL image."""
    try:
        exif = img.getexif()
    except Exception:  # broken EXIF must never cost the image
        exif = None
    return from_exif(exif)


def from_tiff_bytes(data: bytes) -> dict:
    """Metadata of a TIFF-based file (DNG, NEF, CR2, ARW, PEF, ...) from its IFD0 and EXIF
    IFD alone, without opening the pixels (Pillow cannot decode a Bayer mosaic)."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return from_exif(None)
    try:
        exif = Image.Exif()
        exif.load(data)
    except Exception:
        return from_exif(None)
    return from_exif(exif)


def from_exif(exif) -> dict:
    """Metadata columns of a PIL ``Image.Exif`` (None or empty: all None)."""
    meta = {"taken_at": None, "camera_make": None, "camera_model": None,
            "latitude": None, "longitude": None, "orientation": None, "exif": None}
    try:
        return _fill(meta, exif) if exif else meta
    except Exception:  # broken EXIF must never cost the image
        return {k: None for k in meta}


def _fill(meta: dict, exif) -> dict:
    try:
        exif_ifd = exif.get_ifd(_EXIF_IFD)
    except Exception:
        exif_ifd = {}
    try:
        gps = exif.get_ifd(_GPS_IFD)
    except Exception:
        gps = {}
    base_names = ExifTags.TAGS
    meta["camera_make"] = _clean_text(exif.get(0x010F))
    meta["camera_model"] = _clean_text(exif.get(0x0110))
    orientation = exif.get(0x0112)
    meta["orientation"] = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None
    meta["taken_at"] = (
        parse_exif_datetime(exif_ifd.get(0x9003))       # DateTimeOriginal
        or parse_exif_datetime(exif_ifd.get(0x9004))    # DateTimeDigitized
        or parse_exif_datetime(exif.get(0x0132))        # DateTime
    )
    if gps:
        lat = dms_to_decimal(gps.get(2), gps.get(1, "N")) if gps.get(2) else None
        lon = dms_to_decimal(gps.get(4), gps.get(3, "E")) if gps.get(4) else None
        # 0,0 is what cameras write when they have no fix
        if (lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180
                and not (lat == 0 and lon == 0)):
            meta["latitude"], meta["longitude"] = lat, lon
    doc = _named(exif, base_names)
    if exif_ifd:
        doc.update(_named(exif_ifd, base_names))
    if gps:
        doc["GPS"] = _named(gps, ExifTags.GPSTAGS)
    meta["exif"] = capped(doc) or None
    return meta


def capped(doc: dict, limit: int = MAX_EXIF_BYTES) -> dict:
    """``doc`` with the entries that fit in ``limit`` bytes of JSON, in order; the number of
    entries left out under ``"_dropped"``.

    >>> capped({"a": "x" * 10, "b": "y" * 100}, limit=60)
    {'a': 'xxxxxxxxxx', '_dropped': 1}
    """
    out, used, dropped = {}, 2, 0
    for key, value in doc.items():
        size = len(json.dumps({key: value}))  # the entry and its ", " (for the braces)
        if used + size + 20 > limit:  # 20: room for the "_dropped" entry
            dropped += 1
            continue
        out[key], used = value, used + size
    if dropped:
        out["_dropped"] = dropped
    return out
