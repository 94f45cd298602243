"""The numpy image transform gives open_clip's pixels exactly; device choice without torch."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from clipsql.models.image import for_config, stack

SIZES = [(640, 480), (480, 640), (224, 224), (225, 300), (1000, 223), (224, 500), (99, 77),
         (3000, 2000), (1, 900)]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [224, 256, 64])
def test_equal_to_open_clips_transform(size, interpolation):
    cfg = {**asdict(PreprocessCfg()), "size": [size, size], "interpolation": interpolation}
    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    ours = for_config(cfg)
    rng = np.random.default_rng(size)
    for w, h in SIZES:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))
        expected = theirs(img).numpy()
        got = ours(img)
        assert got.shape == expected.shape == (3, size, size) and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-6, (w, h)


def test_equal_on_real_photos(exif_samples):
    cfg = {**asdict(PreprocessCfg()), "size": [224, 224]}
    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    ours = for_config(cfg)
    files = sorted((exif_samples / "jpg").rglob("*.jpg"))[:8]
    assert files
    for f in files:
        img = Image.open(f).convert("RGB")
        assert np.abs(ours(img) - theirs(img).numpy()).max() <= 1e-6, f


def test_unusual_configs_keep_open_clips_transform():
    base = asdict(PreprocessCfg())
    assert for_config({**base, "size": [224, 256]}) is None
    assert for_config({**base, "resize_mode": "squash"}) is None
    assert for_config({**base, "interpolation": "lanczos"}) is None
    assert for_config({**base, "mode": "L"}) is None


def test_stack_keeps_numpy_numpy():
    batch = stack([np.zeros((3, 4, 4), np.float32)] * 2)
    assert isinstance(batch, np.ndarray) and batch.shape == (2, 3, 4, 4)


@pytest.mark.skipif(not sys.platform.startswith("linux") or any(Path("/dev").glob("nvidia*")),
                    reason="needs Linux without NVIDIA devices")
def test_auto_device_is_cpu_without_importing_torch():
    code = ("import json, sys; from clipsql.models.checkpoint import pick_device; "
            "print(json.dumps([pick_device(), 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["cpu", False]
