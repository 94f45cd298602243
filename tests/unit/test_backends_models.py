"""Every backend, forced, keeps the accuracy bar; auto calibrates once and reuses its choice;
an ONNX choice embeds images without building the torch model. Real open_clip models (random
weights), real ONNX Runtime."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from clipsql.models import calibrate, onnx_export, runner
from clipsql.models.machine import has_native_bf16
from clipsql.models.openclip import ClipModel

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'clipsql[onnx]')")
FORCED = ["fp32", "bf16", "int8", "onnx-fp32", "onnx-int8"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSQL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def reference(spec, pixels):
    return ClipModel(spec, device="cpu", precision="fp32").encode_images(pixels)


def check_forced(spec):
    fp32 = ClipModel(spec, device="cpu", precision="fp32")
    pixels = runner.sample_batch(fp32)
    ref = fp32.encode_images(pixels)
    for precision in FORCED:
        model = ClipModel(spec, device="cpu", precision=precision)
        out = model.encode_images(pixels)
        cos = onnx_export.cosines(out, ref)
        assert cos.min() >= onnx_export.ACCURACY_BAR, (precision, cos.min())
        expected = precision if precision.startswith("onnx-") else f"torch-{precision}"
        if model.backend != expected:  # only an export that failed its check falls back
            meta = onnx_export.read_meta(onnx_export.cache_dir(model))
            assert not meta["files"]["image-" + precision[5:]]["ok"], model.backend_reason
            assert model.backend == "torch-fp32"


def test_each_forced_backend_keeps_the_bar_tiny(tiny_model, home):
    check_forced(tiny_model)


@pytest.mark.slow
def test_each_forced_backend_keeps_the_bar_vitb32(vitb32_model, home):
    """The real ViT-B-32 architecture: exports, int8 quantisation and bf16 all within 0.999."""
    check_forced(vitb32_model)
    meta = onnx_export.read_meta(onnx_export.cache_dir(ClipModel(vitb32_model)))
    assert meta["files"]["image-fp32"]["ok"] and meta["files"]["image-fp32"]["max_diff"] <= 1e-4
    assert meta["files"]["text-fp32"]["ok"]


def test_the_export_is_checked_cached_and_reused(tiny_model, home):
    model = ClipModel(tiny_model, device="cpu", precision="onnx-fp32")
    model.encode_images(runner.sample_batch(ClipModel(tiny_model, precision="fp32")))
    folder = onnx_export.cache_dir(model)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["files"]["image-fp32"]["max_diff"] <= onnx_export.FP32_TOLERANCE
    assert meta["files"]["text-fp32"]["ok"] and meta["preprocess"]["size"] == [64, 64]
    stamp = (folder / "image-fp32.onnx").stat().st_mtime_ns
    again = ClipModel(tiny_model, device="cpu", precision="onnx-fp32")
    assert runner.ensure_export(again) == meta
    assert (folder / "image-fp32.onnx").stat().st_mtime_ns == stamp


def test_an_export_that_failed_its_check_is_not_used(tiny_model, home):
    model = ClipModel(tiny_model, device="cpu", precision="onnx-int8")
    pixels = runner.sample_batch(ClipModel(tiny_model, precision="fp32"))
    runner.ensure_export(model)
    folder = onnx_export.cache_dir(model)
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["image-int8"] = {"ok": False, "min_cosine": 0.98}
    (folder / "meta.json").write_text(json.dumps(meta))
    out = model.encode_images(pixels)
    assert model.backend == "torch-fp32" and "failed" in model.backend_reason
    assert np.abs(out - reference(tiny_model, pixels)).max() <= 1e-5


def test_auto_calibrates_once_and_keeps_a_path_that_is_not_slower(tiny_model, home, monkeypatch):
    model = ClipModel(tiny_model, device="cpu")
    assert model.requested_precision == "auto"
    choice = model.calibration
    assert choice is not None and model.backend == choice.backend
    assert choice.rates[choice.backend] >= choice.rates["torch-fp32"]
    assert choice.cosines[choice.backend] >= onnx_export.ACCURACY_BAR
    assert set(choice.rates) >= {"torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"}
    assert ("torch-bf16" in choice.rates) == has_native_bf16()
    assert not model.torch_model.training  # the ONNX exporter leaves the model in eval mode
    monkeypatch.setattr(calibrate, "measure", lambda *a: pytest.fail("measured again"))
    again = ClipModel(tiny_model, device="cpu")
    assert again.backend == choice.backend and again.calibration == choice


def test_the_chooser_does_not_keep_a_path_made_slow_or_wrong(tiny_model, home, monkeypatch):
    real = runner.encoder

    class Slow:
        def __init__(self, inner):
            self.inner = inner

        def encode(self, pixels):
            time.sleep(0.2)
            return self.inner.encode(pixels)

    class Wrong(Slow):
        def encode(self, pixels):
            out = self.inner.encode(pixels)
            return out + np.random.default_rng(0).normal(0, 0.05, out.shape).astype(np.float32)

    def rigged(model, backend):
        enc = real(model, backend)
        return Slow(enc) if backend == "onnx-fp32" else Wrong(enc) if backend == "onnx-int8" \
            else Slow(enc) if backend != "torch-fp32" else enc

    monkeypatch.setattr(runner, "encoder", rigged)
    choice = runner.run_calibration(ClipModel(tiny_model, device="cpu"))
    assert choice.backend == "torch-fp32", choice
    assert choice.cosines["onnx-int8"] < onnx_export.ACCURACY_BAR


def test_an_onnx_choice_embeds_without_the_torch_model(tiny_model, home):
    first = ClipModel(tiny_model, device="cpu", precision="onnx-fp32")
    pixels = runner.sample_batch(ClipModel(tiny_model, precision="fp32"))
    ref = first.encode_images(pixels)
    fresh = ClipModel(tiny_model, device="cpu", precision="onnx-fp32")
    light = fresh.preprocess
    out = fresh.encode_images(pixels)
    assert not fresh.loaded and fresh.image_size == 64 and fresh.device == "cpu"
    assert np.abs(out - ref).max() <= 1e-5
    # the light transform (numpy, from the export's config) gives open_clip's own pixels
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(5).integers(0, 255, (90, 120, 3), np.uint8))
    full = ClipModel(tiny_model, device="cpu", precision="fp32").preprocess
    assert isinstance(light(img), np.ndarray)
    assert np.abs(light(img) - full(img).numpy()).max() <= 1e-6


def test_text_queries_use_the_faster_checked_engine(tiny_model, home):
    model = ClipModel(tiny_model, device="cpu", precision="onnx-fp32")
    model.encode_images(runner.sample_batch(ClipModel(tiny_model, precision="fp32")))
    runner.run_calibration(ClipModel(tiny_model, device="cpu"))  # exports the numpy tower too
    fresh = ClipModel(tiny_model, device="cpu")
    texts = ["two dogs playing in the snow", "雪の中で遊ぶ2匹の犬", "invoice"]
    out = fresh.encode_text(texts)
    assert fresh.last_text_path == "exported" and not fresh.loaded
    folder = onnx_export.cache_dir(fresh)
    (record,) = folder.glob("text-choice-*.json")
    assert json.loads(record.read_text())["engine"] in ("numpy", "onnx-fp32", "onnx-int8")
    ref = ClipModel(tiny_model, device="cpu", precision="fp32").encode_text_torch(texts)
    assert onnx_export.cosines(out, ref).min() >= onnx_export.ACCURACY_BAR


def test_without_onnxruntime_auto_measures_the_torch_paths(tiny_model, home, monkeypatch):
    monkeypatch.setattr(onnx_export, "available", lambda: False)
    choice = ClipModel(tiny_model, device="cpu").calibration
    assert not any(n.startswith("onnx") for n in choice.rates)
    assert runner.describe(ClipModel(tiny_model, device="cpu"))["backend"] == choice.backend


def test_a_checkpoint_builds_without_random_init_and_loads_every_weight(tiny_model):
    from torch.nn import init

    normal = init.normal_
    model = ClipModel(tiny_model, device="cpu", precision="fp32")
    saved = torch.load(tiny_model.split("/", 1)[1], map_location="cpu")
    got = model.torch_model.state_dict()
    assert set(got) == set(saved)
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    assert init.normal_ is normal  # torch's initialisers are back for everyone else
