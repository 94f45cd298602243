"""Every format Pillow can write here is detected as an image by name and decodes to RGB;
AVIF, JPEG XL, HEIF and camera RAW (a DNG written with tifffile) too; multi-frame files
give their first frame; PNG text chunks past Pillow's limits and huge EXIF are survived."""

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from clipsql.errors import ImageError
from clipsql.ingest import decode, formats

RED, BLUE = (220, 30, 30), (30, 30, 220)

# Formats Pillow lists as writable that cannot round-trip here, with the reason.
CANNOT = {
    "PDF": "Pillow writes PDF but cannot read it",
    "PALM": "Pillow writes Palm bitmaps but cannot read them",
    "SPIDER": "Pillow registers no file extension for SPIDER",
    "BUFR": "a stub plugin: writing needs a BUFR handler",
    "GRIB": "a stub plugin: writing needs a GRIB handler",
    "HDF5": "a stub plugin: writing needs an HDF5 handler",
    "WMF": "a stub plugin: writing needs a WMF handler",
}
if "EPS" not in {formats.pillow_extensions().get(e) for e in (".eps", ".ps")}:
    CANNOT["EPS"] = "reading EPS needs Ghostscript, not installed here"


def rgb_array(img):
    """A tiny preprocess: the RGB image as an array (the loader gives open_clip's transform)."""
    assert img.mode == "RGB"
    return np.asarray(img)


def extension_for(fmt: str) -> str | None:
    exts = sorted(e for e, f in Image.registered_extensions().items() if f == fmt)
    preferred = {"JPEG": ".jpg", "TIFF": ".tif", "JPEG2000": ".jp2", "HEIF": ".heic",
                 "PNG": ".png", "PPM": ".ppm", "SGI": ".sgi", "TGA": ".tga", "AVIF": ".avif", "MPO": ".mpo"}
    return preferred.get(fmt) or (exts[0] if exts else None)


def picture(size=(64, 48)):
    img = Image.new("RGB", size, RED)
    img.paste(BLUE, (0, 0, size[0] // 4, size[1]))
    return img


def write(fmt: str, path) -> None:
    """Save a small picture as ``fmt`` in the first mode the writer takes."""
    errors = []
    for mode in ("RGB", "RGBA", "L", "1", "P"):
        try:
            picture().convert(mode).save(path, format=fmt)
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            errors.append(f"{mode}: {exc}")
    raise AssertionError(f"Pillow could not write {fmt}: {errors}")


@pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fmt", sorted(Image.SAVE))
def test_every_writable_format_is_an_image_and_decodes_to_rgb(tmp_path, fmt):
    if fmt in CANNOT:
        pytest.skip(CANNOT[fmt])
    ext = extension_for(fmt)
    assert ext, f"{fmt} has no registered extension"
    path = tmp_path / f"picture{ext}"
    write(fmt, path)
    assert formats.is_image(path.name) and formats.is_image(path.name.upper())
    decoded = decode.read(str(path), rgb_array)
    h, w, channels = decoded.pixels.shape
    assert channels == 3 and (decoded.width, decoded.height) == (w, h)
    assert (w, h) == (64, 48) or fmt in ("ICNS", "ICO"), (w, h)  # icons: their own sizes
    assert len(decoded.sha256) == 64 and decoded.format


def test_the_modern_formats_are_written_and_read_here(tmp_path):
    """AVIF (Pillow), JPEG XL (pillow-jxl-plugin) and HEIF (pillow-heif) are all present."""
    for fmt, name in (("AVIF", "a.avif"), ("JXL", "a.jxl"), ("HEIF", "a.heic"),
                      ("JPEG2000", "a.jp2"), ("WEBP", "a.webp")):
        path = tmp_path / name
        picture().save(path, format=fmt, quality=95)
        decoded = decode.read(str(path), rgb_array)
        assert decoded.pixels.shape == (48, 64, 3)
        assert abs(int(decoded.pixels[24, 40, 0]) - RED[0]) < 40, fmt  # red where it was red


@pytest.mark.parametrize("fmt, name", [("GIF", "a.gif"), ("PNG", "a.apng"), ("TIFF", "a.tiff"),
                                       ("WEBP", "a.webp")])
def test_multi_frame_files_give_their_first_frame(tmp_path, fmt, name):
    first, second = Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), BLUE)
    path = tmp_path / name
    first.save(path, format=fmt, save_all=True, append_images=[second])
    assert Image.open(path).n_frames == 2
    pixel = decode.read(str(path), rgb_array).pixels[15, 20]
    assert pixel[0] > 150 and pixel[2] < 100, pixel


def test_ico_with_several_sizes_decodes(tmp_path):
    path = tmp_path / "favicon.ico"
    picture((64, 64)).save(path, sizes=[(16, 16), (32, 32), (64, 64)])
    assert decode.read(str(path), rgb_array).pixels.shape[2] == 3


def test_extensions_come_from_pillows_registry():
    registered = set(Image.registered_extensions())
    assert registered >= formats.PILLOW_EXTENSIONS
    expected = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".bmp", ".avif", ".jp2",
                ".ico", ".tga", ".ppm", ".pgm", ".psd", ".heic", ".heif", ".jxl", ".qoi"}
    assert expected <= formats.EXTENSIONS
    # registered but not pictures Pillow decodes: video, save-only, stubs without a handler
    assert not {".mpg", ".pdf", ".h5", ".grib", ".bufr"} & formats.EXTENSIONS
    assert not formats.is_image(".DS_Store") and not formats.is_image("notes.txt")


@pytest.mark.parametrize("ext", [".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2",
                                 ".raf", ".pef", ".srw", ".NEF"])
def test_camera_raw_is_detected_and_garbage_raw_is_a_readable_failure(tmp_path, ext):
    assert formats.is_image(f"DSC_0001{ext}") and formats.is_raw(f"DSC_0001{ext}")
    path = tmp_path / f"garbage{ext}"
    path.write_bytes(b"this is not a raw file at all " * 40)
    with pytest.raises(ImageError) as info:
        decode.read(str(path), rgb_array)
    assert info.value.reason in ("unsupported", "corrupt")
    assert "LibRaw" in info.value.detail or "raw" in info.value.detail.lower()


def write_dng(path, size=(256, 192), preview=None):
    """A minimal DNG: a 12-bit RGGB Bayer mosaic, optionally with an RGB preview in IFD0."""
    tifffile = pytest.importorskip("tifffile", reason="tifffile writes the test DNG")
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    cfa = np.where((y % 2 == 0) & (x % 2 == 0), 3000, 600).astype(np.uint16)  # red sites bright
    camera = [(50706, "B", 4, (1, 4, 0, 0)), (50707, "B", 4, (1, 1, 0, 0)),
              (271, "s", 0, "clipsql"), (272, "s", 0, "test camera"),
              (50708, "s", 0, "clipsql test camera"), (50778, "H", 1, 21),
              (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1))]
    mosaic = [(33421, "H", 2, (2, 2)), (33422, "B", 4, (0, 1, 1, 2)), (50717, "I", 1, 4095)]
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=camera + mosaic)
        else:
            tif.write(preview, photometric="rgb", subfiletype=1, subifds=1, extratags=camera)
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=mosaic)
    return path


def open_with_libraw_or_skip(path):
    rawpy = pytest.importorskip("rawpy")
    try:
        rawpy.imread(str(path)).close()
    except rawpy.LibRawError as exc:
        pytest.skip(f"LibRaw does not open the minimal DNG written here: {exc}")


def test_dng_without_a_preview_is_demosaiced_at_half_size(tmp_path):
    path = write_dng(tmp_path / "sensor.dng")
    open_with_libraw_or_skip(path)
    decoded = decode.read(str(path), rgb_array)
    assert decoded.pixels.shape == (96, 128, 3)  # half size
    assert (decoded.width, decoded.height) == (256, 192) and decoded.format == "DNG"
    assert decoded.meta["camera_make"] == "clipsql"  # EXIF read by Pillow's TIFF parser


def test_dng_with_a_large_preview_uses_the_preview(tmp_path):
    preview = np.zeros((400, 600, 3), np.uint8)
    preview[..., 1] = 200   # green: unlike the mosaic, which demosaics to red-ish
    path = write_dng(tmp_path / "preview.dng", preview=preview)
    open_with_libraw_or_skip(path)
    decoded = decode.read(str(path), rgb_array)
    assert decoded.pixels.shape == (400, 600, 3)
    assert tuple(decoded.pixels[200, 300]) == (0, 200, 0)
    assert (decoded.width, decoded.height) == (256, 192)  # the photo's own size
    small = write_dng(tmp_path / "small.dng", preview=preview[:100, :150].copy())
    assert decode.read(str(small), rgb_array).pixels.shape == (96, 128, 3)  # preview too small


def test_png_with_a_text_chunk_past_pillows_limit_is_an_image(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("huge", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 10), zip=True)
    path = tmp_path / "big-text.png"
    picture().save(path, pnginfo=info)
    with pytest.raises(ValueError):
        Image.open(path)   # what Pillow does by itself
    decoded = decode.read(str(path), rgb_array)
    assert decoded.pixels.shape == (48, 64, 3) and decoded.format == "PNG"
    # the same chunk after the pixels, where Pillow meets it only when it loads them
    import struct
    import zlib

    picture().save(tmp_path / "plain.png")
    data = (tmp_path / "plain.png").read_bytes()
    body = b"huge\x00\x00" + zlib.compress(b"x" * (PngImagePlugin.MAX_TEXT_CHUNK + 10))
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(
        ">I", zlib.crc32(b"zTXt" + body))
    end = data.rindex(b"IEND") - 4
    (tmp_path / "late-text.png").write_bytes(data[:end] + chunk + data[end:])
    late = decode.read(str(tmp_path / "late-text.png"), rgb_array)
    assert late.pixels.shape == (48, 64, 3)


def test_exif_stored_per_image_is_capped(tmp_path):
    import json

    from clipsql.ingest.exif import MAX_EXIF_BYTES

    info = PngImagePlugin.PngInfo()
    for i in range(20_000):
        info.add_text(f"key{i}", "y" * 500)
    many = tmp_path / "many-text.png"
    picture().save(many, pnginfo=info)
    assert many.stat().st_size > 10_000_000
    decoded = decode.read(str(many), rgb_array)
    assert len(json.dumps(decoded.meta["exif"])) <= MAX_EXIF_BYTES
    exif = Image.Exif()
    exif[0x010F] = "clipsql"
    for tag in range(1000, 6000):
        exif[tag] = "z" * 400
    huge = tmp_path / "huge-exif.png"
    picture().save(huge, exif=exif.tobytes())
    meta = decode.read(str(huge), rgb_array).meta
    stored = json.dumps(meta["exif"]).encode()
    assert len(stored) <= MAX_EXIF_BYTES and meta["exif"]["_dropped"] > 4000
    assert meta["camera_make"] == "clipsql" and meta["exif"]["Make"] == "clipsql"


# --- frames measured by their own headers before decoding ------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, rows: int | None = None, bits: int = 24) -> bytes:
    """A PNG of black pixels, RGB (or 1-bit grey: ``bits=1``), that says ``width`` x
    ``height``; ``rows``: only that many rows of data (a cleanly ended zlib stream, cut)."""
    import struct
    import zlib

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (width * bits + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8 if bits == 24 else 1, 2 if bits == 24 else 0,
                       0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def ico_holding(frame: bytes) -> bytes:
    """An ICO of one entry that its directory calls 256x256."""
    import struct

    return (struct.pack("<HHH", 0, 1, 1)
            + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(frame), 22) + frame)


def icns_holding(frame: bytes) -> bytes:
    """An ICNS of one ic10 element (1024x1024 by its type)."""
    import struct

    element = b"ic10" + struct.pack(">I", 8 + len(frame)) + frame
    return b"icns" + struct.pack(">I", 8 + len(element)) + element


def sizes_of(path) -> list:
    with open(path, "rb") as f:
        return formats.frame_sizes(f)


def test_frame_sizes_come_from_each_frames_own_header(tmp_path):
    giant = png_bytes(13000, 13000, bits=1)  # complete: 20 KB
    (tmp_path / "a.ico").write_bytes(ico_holding(giant))
    assert sizes_of(tmp_path / "a.ico") == [(256, 256), (13000, 13000)]
    (tmp_path / "b.icns").write_bytes(icns_holding(giant))
    assert sizes_of(tmp_path / "b.icns") == [(1024, 1024), (13000, 13000)]
    picture((48, 48)).save(tmp_path / "c.ico", sizes=[(16, 16), (48, 48)], bitmap_format="bmp")
    assert sorted(sizes_of(tmp_path / "c.ico")) == [(16, 16), (48, 48), (48, 48)]  # DIB headers
    pages = [Image.new("L", (40, 30)), Image.new("L", (3000, 2000)), Image.new("L", (7, 5))]
    pages[0].save(tmp_path / "d.tif", save_all=True, append_images=pages[1:])
    assert sizes_of(tmp_path / "d.tif") == [(40, 30), (3000, 2000), (7, 5)]
    with pytest.raises(ImageError) as info, open(tmp_path / "d.tif", "rb") as f:
        formats.frame_sizes(f, max_pixels=1_000_000)
    assert info.value.reason == "decompression_bomb"
    assert "it holds a frame of 3000x2000, over the 1,000,000 pixel limit" in str(info.value)


@pytest.mark.parametrize("make", [lambda png: png, ico_holding, icns_holding],
                         ids=["png", "ico", "icns"])
def test_a_png_whose_data_is_too_short_for_its_size_is_truncated_not_black(tmp_path, make):
    """265 bytes that said 13000x13000 decoded to a black 169 MP picture, and were embedded;
    deflate packs at most 1032 bytes into one, so the size alone shows the data is cut."""
    path = tmp_path / "cut.img"
    path.write_bytes(make(png_bytes(13000, 13000, rows=4)))
    assert path.stat().st_size < 1000
    with pytest.raises(ImageError) as info:
        decode.read(str(path), rgb_array)
    assert info.value.reason == "truncated" and "13000x13000" in info.value.detail


def test_a_complete_highly_compressed_png_is_not_called_truncated(tmp_path):
    """The bound is deflate's best ratio: an all-black PNG at level 9 stays above it."""
    path = tmp_path / "black.png"
    path.write_bytes(png_bytes(3000, 2000))
    assert path.stat().st_size < 3000 * 2000 * 3 / 900  # near deflate's limit
    assert decode.read(str(path), rgb_array).pixels.shape == (2000, 3000, 3)
