"""open_clip's eval image transform in PIL and numpy, so an ONNX Runtime load needs no torch.

Importing torch and torchvision takes seconds, which is most of the fixed cost of a small
load once the model itself runs in ONNX Runtime. For the transform almost every CLIP model
uses (``resize_mode="shortest"`` to a square: resize the short side with PIL, center-crop,
scale to [0, 1], normalise) this module does the same steps with the same PIL calls and
rounding as torchvision, so the pixels equal open_clip's (tests: within 1e-6). Other
configs return None from :func:`for_config` and open_clip's own transform is used.

>>> t = for_config({"size": [224, 224], "mode": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3,
...                 "interpolation": "bicubic", "resize_mode": "shortest"})
>>> from PIL import Image
>>> t(Image.new("RGB", (640, 480), (255, 0, 0))).shape
(3, 224, 224)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

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
