"""Decoding: draft-mode JPEG decoding stays within a small error of the exact path; every
failure has a reason of the one list (:class:`clipsql.ingest.reasons.Reason`)."""

import ast
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsql.errors import ImageError
from clipsql.ingest import decode
from clipsql.ingest.reasons import Ignored, Reason


def camera_like_jpeg(path, size=(4032, 3024), orientation=None):
    rng = np.random.default_rng(0)
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x / w) * 255, (y / h) * 255, ((x + y) % 512) / 2], axis=-1)
    noise = rng.normal(0, 12, size=(h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    img.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def psnr(a, b, data_range):
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


@pytest.mark.parametrize("orientation", [None, 6])
def test_draft_decode_psnr_against_exact_decode(tmp_path, orientation):
    import open_clip

    preprocess = open_clip.image_transform(224, is_train=False)
    path = str(camera_like_jpeg(tmp_path / "cam.jpg", orientation=orientation))
    exact = decode.read(path, preprocess, draft_size=None)
    fast = decode.read(path, preprocess, draft_size=decode.draft_size(224))
    a, b = exact.pixels.numpy(), fast.pixels.numpy()
    data_range = float(a.max() - a.min())
    assert psnr(a, b, data_range) >= 40
    assert (fast.width, fast.height) == (exact.width, exact.height)
    if orientation == 6:
        assert (exact.width, exact.height) == (3024, 4032)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"), (b"hello, not an image", "unsupported"),
])
def test_bad_files_get_a_reason(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError) as info:
        decode.read(str(p), lambda img: img)
    assert info.value.reason is Reason.of(reason)


def test_vanished_file(tmp_path):
    with pytest.raises(ImageError) as info:
        decode.read(str(tmp_path / "gone.jpg"), lambda img: img)
    assert info.value.reason is Reason.VANISHED


#: The codes stored in clipsql.failures and clipsql.ignored of existing databases: a member
#: may be added, none renamed or removed.
STORED = {"empty", "too_large", "unreadable", "vanished", "bad_name", "broken_link",
          "unsupported", "truncated", "corrupt", "decompression_bomb"}


def test_the_reasons_keep_their_stored_values_and_say_what_they_mean():
    assert {r.value for r in Reason} >= STORED
    assert {r.value for r in Ignored} >= {"not_image", "hidden"}
    for code in [*Reason, *Ignored]:
        assert code == code.value and f"{code}" == code.value and code.description
    with pytest.raises(ValueError):
        Reason.of("disappeared")


PACKAGE = Path(__file__).resolve().parents[2] / "clipsql"


def _reason_arguments():
    """(where, argument) of every reason given to ``ImageError(reason, ...)`` or to a walk's
    ``fail(path, reason, ...)`` anywhere in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            index = {"ImageError": 0, "fail": 1}.get(name)
            if index is not None and len(node.args) > index:
                yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", node.args[index]


def test_every_reason_written_is_a_member():
    """Writers name members (``Reason.VANISHED``) or pass one on (``exc.reason``), never a
    string of their own: a new code must be added to the list first."""
    given = list(_reason_arguments())
    assert len(given) >= 15  # the scan sees the decoders and the walk
    for where, arg in given:
        assert not isinstance(arg, ast.Constant), f"{where}: a reason as a literal string"
    for path in sorted(PACKAGE.rglob("*.py")):  # and every member named exists
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in ("Reason", "Ignored") and node.attr.isupper():
                members = (Reason if node.value.id == "Reason" else Ignored).__members__
                assert node.attr in members, f"{path.name}:{node.lineno}: {node.attr}?"


def test_concurrent_decodes_stay_within_the_memory_budget(tmp_path, monkeypatch):
    """Large images decoded by many threads at once: what they hold together stays under the
    budget plus one image (the oldest decode always goes on, so none waits forever)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from clipsql.ingest import decode

    paths = []
    for i in range(8):  # 3000x2500 PNGs: small files, 7.5 MP each (60 MB counted each)
        path = tmp_path / f"big{i}.png"
        Image.new("RGB", (3000, 2500), (i * 30, 0, 0)).save(path)
        paths.append(str(path))
    budget = decode.MemoryBudget(100 << 20)
    monkeypatch.setattr(decode, "BUDGET", budget)
    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(lambda p: decode.read(p, lambda img: img.resize((8, 8))), paths))
    assert [d.width for d in out] == [3000] * 8
    one = 8 * 3000 * 2500 + max(os.path.getsize(p) for p in paths)
    assert one < budget.peak <= budget.limit + one
    assert budget.used == 0


@pytest.mark.filterwarnings("ignore:Image was not the expected size")
def test_an_icons_real_frame_counts_against_the_budget(tmp_path, monkeypatch):
    """The directory of an ICO says 256x256; the PNG inside is 2000x1500 and Pillow decodes it
    as it opens the file: the budget is taken for the real frame, before it is opened."""
    import struct

    png = tmp_path / "inner.png"
    Image.new("RGB", (2000, 1500), (9, 9, 9)).save(png)
    frame = png.read_bytes()
    ico = tmp_path / "icon.ico"
    ico.write_bytes(struct.pack("<HHH", 0, 1, 1)
                    + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(frame), 22) + frame)
    budget = decode.MemoryBudget(1 << 40)
    monkeypatch.setattr(decode, "BUDGET", budget)
    assert decode.read(str(ico), lambda img: img.size).pixels == (2000, 1500)
    assert budget.peak >= 8 * 2000 * 1500


def test_an_isolated_decode_cannot_pass_its_memory_limit(tmp_path):
    """decode_isolated runs the loader's decode in a process of its own: past its memory limit
    the decode fails there (a readable decompression_bomb), this process never holds it."""
    from clipsql.ingest.decoder_pool import decode_isolated

    path = tmp_path / "big.png"
    Image.new("RGB", (6000, 5000), (1, 2, 3)).save(path)  # 30 Mpx: 120 MB decoded
    assert decode_isolated(str(path), 400 << 20) == (6000, 5000)
    # asked for the picture: it comes back upright, RGB, its shorter side shrunk
    tall = tmp_path / "tall.jpg"
    with_exif = Image.new("RGB", (900, 300), (250, 10, 10))
    exif = with_exif.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees: 300 wide, 900 tall
    with_exif.save(tall, exif=exif)
    size, picture = decode_isolated(str(tall), 400 << 20, shrink_to=150)
    assert size == (300, 900) and picture.mode == "RGB" and picture.size == (150, 450)
    assert picture.getpixel((75, 225))[0] > 200
    with pytest.raises(ImageError) as info:
        decode_isolated(str(path), 50 << 20)
    assert info.value.reason is Reason.DECOMPRESSION_BOMB
    assert info.value.detail == "decoding it needs more than 50 MB of memory"
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    with pytest.raises(ImageError) as info:
        decode_isolated(str(tmp_path / "junk.png"), 400 << 20)
    assert info.value.reason in (Reason.CORRUPT, Reason.UNSUPPORTED, Reason.TRUNCATED)


def test_a_failed_decode_keeps_none_of_the_decoders_frames(tmp_path):
    """A failure waits in its Future until the loader takes it (up to 64 files ahead): its
    exception must not hold the decoder's frames, whose locals are the file's buffers
    (Pillow's corpus: 3.3 GB peak from a few BLP files queued, 0.8 GB without)."""
    import traceback

    from clipsql.errors import ImageError
    from clipsql.ingest.decoder_pool import Decoders

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with Decoders(lambda img: img, None, 1) as pool:
        exc = pool.submit(str(bad)).exception()
        row_exc = pool.submit_row(str(bad), None).exception()
    for e in (exc, row_exc):
        assert isinstance(e, ImageError) and e.reason in ("corrupt", "unsupported", "truncated")
        assert e.__context__ is None and e.__cause__ is None
        frames = [frame.f_code for frame, _ in traceback.walk_tb(e.__traceback__)]
        assert frames[-1].co_name == "_light", frames  # the decoder's own frames are gone
        assert not [f for f in frames if f.co_filename.endswith(("decode.py", "video.py"))
                    or "PIL" in f.co_filename], frames
