"""Decoding: draft-mode JPEG decoding stays within a small error of the exact path."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from clipsql.errors import ImageError
from clipsql.ingest import decode


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
    fast = decode.read(path, preprocess, draft_size=448)
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
    assert info.value.reason == reason


def test_vanished_file(tmp_path):
    with pytest.raises(ImageError) as info:
        decode.read(str(tmp_path / "gone.jpg"), lambda img: img)
    assert info.value.reason == "vanished"


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
