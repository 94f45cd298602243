"""The image side of a model: preprocessing, and the encoders that embed pixels.

Preprocessing is open_clip's eval image transform done in PIL and numpy, so a load that runs
on ONNX Runtime never imports torch (seconds of a small load's start). For the transform
almost every CLIP model uses (``resize_mode="shortest"`` to a square: resize the short side with PIL, center-crop,
scale to [0, 1], normalise) this module does the same steps with the same PIL calls and
rounding as torchvision, so the pixels equal open_clip's (tests: within 1e-6). Other
configs return None from :func:`for_config` and open_clip's own transform is used.

Encoders: :class:`OnnxImageEncoder` (the CPU runtime) and :class:`TorchImageEncoder` (CUDA
fp16, and torch fp32 for the rare tower ONNX cannot run); both give L2-normalised float32
rows from a preprocessed batch (N, 3, H, W).

>>> t = for_config({"size": [224, 224], "mode": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3,
...                 "interpolation": "bicubic", "resize_mode": "shortest"})
>>> from PIL import Image
>>> t(Image.new("RGB", (640, 480), (255, 0, 0))).shape
(3, 224, 224)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clipsql.models import runtime

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


class NumpyTransform:
    """Resize (short side), center-crop, ToTensor and Normalize, as torchvision does them."""

    def __init__(self, size: int, mean, std, resample):
        self.size, self.resample = size, resample
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __call__(self, img: Image.Image) -> np.ndarray:
        w, h = img.size
        s = self.size
        # torchvision's Resize(int): the short side becomes s, the long one int(s * long / short)
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), self.resample)
            w, h = nw, nh
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        if (w, h) != (s, s):
            img = img.crop((left, top, left + s, top + s))
        if img.mode != "RGB":
            img = img.convert("RGB")
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return (x - self.mean) / self.std


def for_config(cfg: dict) -> NumpyTransform | None:
    """The numpy transform for an open_clip preprocessing config, or None if it is not the
    common case (short-side resize to a square, RGB)."""
    size = cfg.get("size")
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            return None
        size = size[0]
    resample = _RESAMPLE.get(cfg.get("interpolation", "bicubic"))
    if (not isinstance(size, int) or cfg.get("resize_mode", "shortest") != "shortest"
            or cfg.get("mode", "RGB") != "RGB" or resample is None):
        return None
    return NumpyTransform(size, cfg["mean"], cfg["std"], resample)


def stack(items):
    """One batch from preprocessed images: numpy arrays stay numpy (no torch import)."""
    if items and isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(list(items))


def transform(cfg: dict):
    """open_clip's eval transform for a preprocessing config (no model built): the numpy one
    where it applies, else open_clip's own (which imports torch)."""
    if (numpy_transform := for_config(cfg)) is not None:
        return numpy_transform
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


class OnnxImageEncoder:
    """``encode(pixels)`` with an exported image tower on ONNX Runtime, on every core.

    An int8 tower quantises its activations with one scale per input tensor, so in a batch
    an image's embedding would depend on the other images in it; it runs one image at a time
    (as fast per image: ``benchmarks/load.py``), so a row is a function of its pixels alone.
    """

    def __init__(self, path: Path, per_image: bool = False):
        self.path = Path(path)
        self.per_image = per_image
        self._session = runtime.session(self.path)

    def encode(self, pixels) -> np.ndarray:
        array = pixels.numpy() if hasattr(pixels, "numpy") else np.asarray(pixels)
        return runtime.normalised(runtime.run(self._session, array.astype(np.float32, copy=False),
                                              self.per_image))


class TorchImageEncoder:
    """``encode(pixels)`` with open_clip's torch model in one dtype (CUDA fp16, or fp32)."""

    def __init__(self, net, dtype, device: str):
        self.net, self.dtype, self.device = net, dtype, device

    def encode(self, pixels) -> np.ndarray:
        import torch

        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        with torch.inference_mode():
            out = self.net.encode_image(pixels.to(self.device, dtype=self.dtype))
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()


def reference_images(size: int, n: int = 16):
    """``n`` deterministic photo-like PIL images (smooth colour fields, shapes, noise): the
    fixed set every export is checked on."""
    from PIL import ImageDraw

    rng = np.random.default_rng(1234)
    images = []
    for _ in range(n):
        field_ = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(field_).resize((size * 3 // 2, size), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=fill)
        noise = rng.normal(0, 12, (size, size * 3 // 2, 3))
        pixels = np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    return images
