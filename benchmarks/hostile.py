"""Hostile image files for benchmarks/memory.py: small files that claim, or unpack into, huge
images, broken ones, and files that are not what their name says.

Every generator is ``make(index) -> (bytes, extension)``; ``index`` varies a few bytes so
that no two files are identical. :data:`KINDS` maps a kind to (weight, generator, what it
is). Run as a script to write a corpus: ``python benchmarks/hostile.py DIR --count 100``.
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import zlib
from functools import cache, lru_cache
from pathlib import Path

#: Sides of images "just under the limits": 13000 x 13000 = 169 Mpx, under Pillow's error
#: (2 x MAX_IMAGE_PIXELS = 179 Mpx) and clipsql's MAX_PIXELS (180 Mpx): they are decoded.
UNDER = 13_000
#: Sides far over every limit (refused from the header).
HUGE = 100_000


# --- building blocks -------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes, *, color_type: int = 2, depth: int = 8,
        extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A PNG from its parts (``idat``: the zlib stream, whatever it holds)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + b"".join(_chunk(k, d) for k, d in extra)
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


@cache
def giant_png(side: int = UNDER) -> bytes:
    """A complete ``side`` x ``side`` RGB PNG of black pixels (0.5 MB at 13000: 676 MB once
    decoded), whose data is all there: only a frame-size check refuses it."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)
    return png(side, side, b"".join(z.compress(row) for _ in range(side)) + z.flush())


def icns_with(frame: bytes) -> bytes:
    """An ICNS whose one ``ic10`` element holds ``frame`` (a PNG of any size)."""
    element = b"ic10" + struct.pack(">I", 8 + len(frame)) + frame
    return b"icns" + struct.pack(">I", 8 + len(element)) + element


def ico_with(frame: bytes) -> bytes:
    """An ICO whose directory says 256x256 but whose one entry holds ``frame``."""
    return (struct.pack("<HHH", 0, 1, 1)
            + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(frame), 22) + frame)


def _text(index: int) -> tuple[bytes, bytes]:
    return b"tEXt", b"Comment\x00hostile file %d" % index


def _image(index: int, size=(320, 240)):
    """A small photo-like PIL image (a smooth random colour field), different per index."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    field = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(field).resize(size, Image.BICUBIC)


def _saved(img, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


@cache
def _zeros_stream(rows: int, row_bytes: int) -> bytes:
    """zlib of ``rows`` PNG scanlines of zeros (filter byte 0), compressed once per size."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + row_bytes)
    return b"".join(z.compress(row) for _ in range(rows)) + z.flush()


def _tiff(width: int, height: int, strip: bytes, index: int) -> bytes:
    """A little-endian grey 8-bit TIFF with one uncompressed strip of ``strip`` bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height),
               (279, 4, 1, len(strip)), (305, 2, 4, int.from_bytes(b"%03d" % (index % 1000) + b"\x00", "little"))]
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_at
        fmt = "<HHIHH" if typ == 3 else "<HHII"
        out += struct.pack(fmt, tag, typ, count, value, 0) if typ == 3 else \
            struct.pack(fmt, tag, typ, count, value)
    out += struct.pack("<I", 0)
    return bytes(out) + strip


def _exif_tiff(description: bytes, huge_count: bool) -> bytes:
    """An EXIF (TIFF) block: IFD0 with an ImageDescription of ``description`` and, if
    ``huge_count``, a MakerNote-like UNDEFINED tag that declares 1 GB of data past the end."""
    entries = [(0x010E, 2, len(description) + 1)]
    if huge_count:
        entries.append((0x927C, 7, 1 << 30))
    header = b"II*\x00" + struct.pack("<I", 8)
    ifd_len = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_len
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count in entries:
        offset = data_at if tag == 0x010E else 0x7FFF0000
        ifd += struct.pack("<HHII", tag, typ, count, offset)
    ifd += struct.pack("<I", 0)
    return header + ifd + description + b"\x00"


def _jpeg_segments(jpeg: bytes, segments: list[bytes]) -> bytes:
    """``jpeg`` with ``segments`` (whole marker segments) put right after SOI."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def _app(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


# --- the kinds ---------------------------------------------------------------------------------
def ordinary_jpeg(i):
    return _saved(_image(i), "JPEG", quality=85), ".jpg"


def ordinary_png(i):
    return _saved(_image(i, (256, 192)), "PNG"), ".png"


def png_huge_declared(i):
    """IHDR says 100000 x 100000 RGB; the data is a few bytes."""
    return png(HUGE, HUGE, zlib.compress(b"\x00" * 64), extra=[_text(i)]), ".png"


def png_under_limit_truncated(i):
    """IHDR says 13000 x 13000 RGB (under every limit: 507 MB once decoded); the data stops
    after a few rows."""
    return png(UNDER, UNDER, _zeros_stream(4, UNDER * 3), extra=[_text(i)]), ".png"


def png_bomb_1bit(i):
    """A real 13000 x 13000 1-bit PNG, all pixels present, about 25 KB: 169 MB as Pillow's
    mode 1, 507 MB as RGB."""
    return png(UNDER, UNDER, _zeros_stream(UNDER, (UNDER + 7) // 8), color_type=0, depth=1,
               extra=[_text(i)]), ".png"


@cache
def _zeros_zlib(megabytes: int) -> bytes:
    z = zlib.compressobj(9)
    return b"".join(z.compress(b"\x00" * (1 << 20)) for _ in range(megabytes)) + z.flush()


def png_ztxt_bomb(i):
    """A small image with a zTXt chunk that unpacks to 64 MB."""
    blob = _zeros_zlib(64)
    img = _image(i, (64, 48))
    raw = b"".join(b"\x00" + img.tobytes()[r * 64 * 3:(r + 1) * 64 * 3] for r in range(48))
    return png(64, 48, zlib.compress(raw), extra=[(b"zTXt", b"Comment\x00\x00" + blob)]), ".png"


def png_exif_huge(i):
    """A small PNG with a 1 MB eXIf chunk (an ImageDescription of 1 MB)."""
    img = _image(i, (64, 48))
    raw = b"".join(b"\x00" + img.tobytes()[r * 64 * 3:(r + 1) * 64 * 3] for r in range(48))
    exif = _exif_tiff(b"A" * (1 << 20), huge_count=True)
    return png(64, 48, zlib.compress(raw), extra=[(b"eXIf", exif)]), ".png"


def jpeg_exif_huge(i):
    """A small JPEG with a 64 KB EXIF segment declaring a 1 GB tag, and 15 more 64 KB APP
    segments (1 MB of metadata)."""
    exif = b"Exif\x00\x00" + _exif_tiff(b"B" * 60_000, huge_count=True)
    junk = [_app(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + b"<x>" * 21_000)]
    junk += [_app(0xE2 + k % 12, bytes([k]) * 65_000) for k in range(14)]
    return _jpeg_segments(ordinary_jpeg(i)[0], [_app(0xE1, exif), *junk]), ".jpg"


def jpeg_truncated(i):
    """A 640 x 480 JPEG cut at 40% of its bytes."""
    data = _saved(_image(i, (640, 480)), "JPEG", quality=90)
    return data[: int(len(data) * 0.4)], ".jpg"


def jpeg_huge_declared(i):
    """A JPEG whose frame header says 65000 x 65000 (the data is a 320 x 240 image's)."""
    data = bytearray(ordinary_jpeg(i)[0])
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data), ".jpg"


def zero_bytes(i):
    return b"", (".jpg", ".png", ".gif", ".tif")[i % 4]


def wrong_ext_png_as_jpg(i):
    return ordinary_png(i)[0], ".jpg"


def wrong_ext_jpg_as_gif(i):
    return ordinary_jpeg(i)[0], ".gif"


def wrong_ext_text_as_png(i):
    return b"<html><body>not an image %d</body></html>\n" % i * 20, ".png"


def gif_huge_screen(i):
    """A GIF whose logical screen is 65535 x 65535 (one 1 x 1 frame)."""
    head = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    comment = b"\x21\xfe" + bytes([len(b"%d" % i)]) + b"%d" % i + b"\x00"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return head + comment + frame + b"\x3b", ".gif"


@lru_cache(maxsize=1)
def _animated_frames():
    from PIL import Image

    return [Image.new("P", (96, 96), k % 256) for k in range(400)]


def gif_many_frames(i):
    """An animated GIF of 400 frames (96 x 96)."""
    frames = _animated_frames()
    return _saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10,
                  loop=0, comment=b"%d" % i, optimize=False), ".gif"


def tiff_huge_declared(i):
    """A TIFF whose tags say 100000 x 100000 grey, with 16 bytes of pixels."""
    return _tiff(HUGE, HUGE, b"\x80" * 16, i), ".tif"


def tiff_under_limit_truncated(i):
    """A TIFF that says 13000 x 13000 grey (169 MB once decoded), with 16 bytes of pixels."""
    return _tiff(UNDER, UNDER, b"\x80" * 16, i), ".tif"


def ico_giant_frame(i):
    """An ICO whose one entry (256 x 256 in the directory) is a PNG that says 13000 x 13000."""
    frame = png_under_limit_truncated(i)[0]
    head = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(frame), 22)
    return head + frame, ".ico"


def icns_giant_frame(i):
    """An ICNS with an ic10 (1024 x 1024) element holding a PNG that says 100000 x 100000."""
    frame = png_huge_declared(i)[0]
    element = b"ic10" + struct.pack(">I", 8 + len(frame)) + frame
    return b"icns" + struct.pack(">I", 8 + len(element)) + element, ".icns"


def psd_under_limit_truncated(i):
    """A PSD header that says 13000 x 13000 RGB, raw data of a few bytes."""
    head = b"8BPS" + struct.pack(">H", 1) + b"\x00" * 6 + struct.pack(">HIIHH", 3, UNDER, UNDER, 8, 3)
    return head + struct.pack(">I", 0) * 3 + struct.pack(">H", 0) + bytes([i % 256]) * 64, ".psd"


def raw_garbage(i):
    """Random bytes named as a camera RAW file (.nef)."""
    return random.Random(i).randbytes(64 << 10), ".nef"


#: kind -> (weight, generator). Ordinary photos take what the weights leave.
KINDS = {
    "ordinary_jpeg": (30, ordinary_jpeg),
    "ordinary_png": (8, ordinary_png),
    "png_huge_declared": (5, png_huge_declared),
    "png_under_limit_truncated": (2, png_under_limit_truncated),
    "png_bomb_1bit": (1, png_bomb_1bit),
    "png_ztxt_bomb": (2, png_ztxt_bomb),
    "png_exif_huge": (3, png_exif_huge),
    "jpeg_exif_huge": (3, jpeg_exif_huge),
    "jpeg_truncated": (6, jpeg_truncated),
    "jpeg_huge_declared": (3, jpeg_huge_declared),
    "zero_bytes": (5, zero_bytes),
    "wrong_ext_png_as_jpg": (2, wrong_ext_png_as_jpg),
    "wrong_ext_jpg_as_gif": (2, wrong_ext_jpg_as_gif),
    "wrong_ext_text_as_png": (3, wrong_ext_text_as_png),
    "gif_huge_screen": (4, gif_huge_screen),
    "gif_many_frames": (3, gif_many_frames),
    "tiff_huge_declared": (4, tiff_huge_declared),
    "tiff_under_limit_truncated": (3, tiff_under_limit_truncated),
    "ico_giant_frame": (1, ico_giant_frame),
    "icns_giant_frame": (3, icns_giant_frame),
    "psd_under_limit_truncated": (2, psd_under_limit_truncated),
    "raw_garbage": (2, raw_garbage),
}


def counts(n: int) -> dict[str, int]:
    """How many files of each kind make ``n``: by weight, at least one of each when ``n``
    allows, ordinary JPEGs making up the rest."""
    total = sum(w for w, _ in KINDS.values())
    out = {k: max(1 if n >= len(KINDS) else 0, round(n * w / total)) for k, (w, _) in KINDS.items()}
    out["ordinary_jpeg"] = 0
    out["ordinary_jpeg"] = max(0, n - sum(out.values()))
    return out


def write_corpus(folder: Path, n: int, seed: int = 0) -> dict[str, str]:
    """``n`` files in ``folder`` (some in nested folders, 1 to 24 deep), in a shuffled order of
    kinds; path -> kind."""
    order = [k for k, c in counts(n).items() for _ in range(c)]
    random.Random(seed).shuffle(order)
    kinds = {}
    for i, kind in enumerate(order):
        data, ext = KINDS[kind][1](i)
        depth = i % 25 if i % 7 == 0 else 0
        where = folder.joinpath(*[f"n{d}" for d in range(depth)])
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{i:05d}-{kind}{ext}"
        path.write_bytes(data)
        kinds[str(path)] = kind
    return kinds


def write_ordinary(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:05d}.jpg").write_bytes(ordinary_jpeg(100_000 + i)[0])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=100)
    args = ap.parse_args()
    written = write_corpus(args.folder, args.count)
    print(f"{len(written)} files in {args.folder}")
