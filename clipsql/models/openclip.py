"""A small wrapper around an OpenCLIP model: lazy loading, normalised embeddings.

Which model is a :class:`~clipsql.models.spec.ModelSpec` (``ARCH/PRETRAINED``, see spec.py).

>>> m = ClipModel("ViT-B-32/laion2b_s34b_b79k")     # nothing is loaded yet
>>> str(m.spec)
'ViT-B-32/laion2b_s34b_b79k'
"""

from __future__ import annotations

import os
import threading
import time
from functools import cached_property
from pathlib import Path

import numpy as np

from clipsql import config
from clipsql.errors import ConfigError, ModelError
from clipsql.models import weights
from clipsql.models.device import PRECISIONS, pick_device, resolve_precision
from clipsql.models.spec import (
    ModelSpec,
    architecture_config,
    checkpoint_fingerprint,
    register_extra_configs,
)

__all__ = ["ClipModel", "ModelSpec"]
_UNSET = object()


class ClipModel:
    """An OpenCLIP model loaded on first use. Outputs are L2-normalised float32 numpy arrays.

    >>> m = ClipModel("ViT-B-32/laion2b_s34b_b79k")     # nothing is loaded yet
    >>> m.dim
    512
    """

    def __init__(self, spec: str | ModelSpec | None = None, device: str | None = None,
                 precision: str | None = None):
        self.spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec or config.DEFAULT_MODEL)
        self._device_request = config.device(device)
        self._precision_request = config.precision(precision)
        if self._precision_request not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"not {self._precision_request!r}")
        self._lock = threading.Lock()
        self._backend_lock = threading.Lock()  # calibrating loads the model (under _lock)
        self._loaded = None
        self._text_tower = _UNSET
        self._export_tried = False
        self._backend = None      # (name, reason, calibration), resolved on first image use
        self._light = _UNSET      # preprocessing config of a cached ONNX export, if used
        self._encoder = None
        #: how many images the current use embeds, as told by :meth:`plan` (None: unknown)
        self.workload = None
        #: seconds create_model_and_transforms took (the calibration's start-up cost)
        self.build_seconds = None

    # --- identity, available without loading weights -------------------------------------
    @cached_property
    def model_config(self) -> dict:
        return architecture_config(self.spec.arch)

    @property
    def dim(self) -> int:
        return int(self.model_config["embed_dim"])

    @cached_property
    def pretrained_id(self) -> str:
        """What is recorded in the database for the weights: the tag, or the file's fingerprint."""
        p = self.spec.pretrained
        if p is None:
            return "hf-hub" if self.spec.arch.startswith("hf-hub:") else "random"
        if self.spec.is_file:
            path = Path(p).expanduser()
            if not path.is_file():
                raise ModelError(f"checkpoint file {path} does not exist")
            return f"file:{path.name}#{checkpoint_fingerprint(path)}"
        return p

    def identity(self) -> dict:
        return {"arch": self.spec.arch, "pretrained": self.pretrained_id, "dim": self.dim}

    # --- loading ---------------------------------------------------------------------------
    @property
    def requested_precision(self) -> str:
        """The precision asked for (``auto``, ``fp32``...), before the device resolves it."""
        return self._precision_request

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (nothing loads them but first use)."""
        return self._loaded is not None

    @property
    def device_request(self) -> str:
        return self._device_request

    @property
    def device(self) -> str:
        if self._loaded is None and self._light_config() is not None:
            return "cpu"  # an ONNX Runtime path: no torch model needed
        return self._load()[3]

    @property
    def preprocess(self):
        """The eval image transform (from a cached ONNX export's config, without building
        the torch model, where the chosen backend is an ONNX one)."""
        if self._loaded is None and (cfg := self._light_config()) is not None:
            from clipsql.models.runner import transform

            return transform(cfg)
        return self._load()[1]

    @property
    def image_size(self) -> int:
        size = (cfg["size"] if self._loaded is None and (cfg := self._light_config())
                else self._load()[0].visual.image_size)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    # --- backend: which runtime and precision embed the images (models/runner.py) ----------
    @property
    def backend(self) -> str:
        """``torch-fp32``, ``onnx-int8``...: resolved (auto: calibrated) on first use."""
        return self._resolved()[0]

    @property
    def backend_known(self) -> bool:
        return self._backend is not None

    @property
    def backend_reason(self) -> str:
        """Why :attr:`backend` was chosen, with the measured rates for ``auto``."""
        return self._resolved()[1]

    @property
    def calibration(self):
        """The :class:`~clipsql.models.calibrate.Choice` behind ``auto``, or None."""
        return self._resolved()[2]

    def plan(self, images: int) -> None:
        """Tell ``auto`` that about ``images`` images are to be embedded now, before it picks
        a backend: for a few images a path that starts faster can finish first
        (:func:`clipsql.models.calibrate.for_workload`). No effect once the backend is chosen.

        >>> m = ClipModel("ViT-B-32/laion2b_s34b_b79k", precision="fp32")
        >>> m.plan(100); m.workload
        100
        """
        if self._backend is None:
            self.workload = int(images)
            self._light = _UNSET

    def _resolved(self):
        if self._backend is None:
            from clipsql.models import runner

            with self._backend_lock:
                if self._backend is None:
                    self._backend = runner.resolve(self)
        return self._backend

    def _light_config(self) -> dict | None:
        """The preprocessing config of a cached ONNX export the backend will use, or None."""
        from clipsql.models import runner

        if self._light is _UNSET:
            self._light = runner.light_config(self)
        return self._light

    @property
    def logit_scale(self) -> float:
        return float(self._load()[0].logit_scale.exp().item())

    @property
    def logit_bias(self) -> float | None:
        """SigLIP's learned bias: ``sigmoid(logit_scale * cos + logit_bias)`` per label; None
        for CLIP models, whose probabilities are a softmax over the labels."""
        bias = getattr(self._load()[0], "logit_bias", None)
        return None if bias is None else float(bias.detach().float().reshape(-1)[0].item())

    @property
    def torch_model(self):
        return self._load()[0]

    @property
    def tokenizer(self):
        return self._load()[2]

    def _load(self):
        if self._loaded is not None:
            return self._loaded
        with self._lock:
            if self._loaded is None:
                self._loaded = self._do_load()
        return self._loaded

    def _do_load(self):
        from clipsql.models import hub

        # The architecture first, then its Hugging Face parts: clear errors before torch loads
        hub.check(self.spec.arch, self.model_config)
        import open_clip
        import torch

        register_extra_configs()  # the config may have been read without open_clip
        device = pick_device(self._device_request)
        pretrained = self.spec.pretrained
        if self.spec.is_file:
            pretrained = str(Path(pretrained).expanduser())
            self.pretrained_id  # checks the file exists
        elif pretrained and not self.spec.arch.startswith("hf-hub:"):
            weights.check_downloadable(self.spec, pretrained)
        precision = resolve_precision(self._precision_request, device)
        try:
            # pretrained_hf=False (open_clip 3 also calls it pretrained_text): a Hugging Face
            # text tower is built from its config alone; the CLIP weights replace its own
            started = time.perf_counter()
            with weights.skipped_init(enabled=bool(pretrained)):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.spec.arch, pretrained=pretrained, device=device, precision=precision,
                    pretrained_hf=False)
            self.build_seconds = round(time.perf_counter() - started, 3)
        except Exception as exc:
            raise ModelError(weights.load_error_message(self.spec, exc)) from None
        model.eval()
        #: The precision the torch weights were loaded in; others are made from a copy.
        self.precision = precision
        try:
            tokenizer = open_clip.get_tokenizer(self.spec.arch)
        except Exception as exc:
            raise ModelError(hub.tokenizer_error(self.spec, self.model_config, exc)) from None
        if device == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        return model, preprocess, tokenizer, device

    # --- encoding --------------------------------------------------------------------------
    def encode_images(self, batch) -> np.ndarray:
        """Embed a preprocessed image tensor batch (N, 3, H, W) with :attr:`backend`."""
        if self._encoder is None:
            from clipsql.models import runner

            backend = self.backend
            encoder = runner.encoder(self, backend)
            if encoder is None:  # an ONNX path whose export failed its check: the reference
                self._backend = ("torch-fp32", f"{backend} unavailable (its export failed the "
                                 "check against torch): torch-fp32", self._backend[2])
                encoder = runner.encoder(self, "torch-fp32")
            self._encoder = encoder
        return self._encoder.encode(batch)

    def encode_text(self, texts: list[str], exact: bool = False) -> np.ndarray:
        """Embed a list of strings; one row per string.

        Before the model is loaded, an exported text tower (:mod:`clipsql.models.text_numpy`)
        answers without torch (on ONNX Runtime where that was measured faster); after the
        first full-model call the tower is exported for next time. Once the model is loaded,
        the torch path answers unless the tower has an ONNX Runtime engine (measured faster
        than numpy, and so than torch: benchmarks/text.py). ``exact``: fp32 only, never an
        int8 engine (labels and other stored embeddings).
        """
        from clipsql.models.text_choice import answering

        texts = list(texts)
        if (tower := answering(self.text_tower(), self.loaded, exact)) is not None:
            #: "exported", "trimmed" or "full": which path the last call took (tests check it).
            self.last_text_path = "exported"
            return tower.encode(texts, exact)
        out = self.encode_text_torch(texts)
        self.export_text_tower()
        return out

    def text_tower(self):
        """The exported numpy text tower of these weights, or None (looked up once)."""
        if self._text_tower is _UNSET:
            from clipsql.models import text_numpy

            self._text_tower = text_numpy.open_for(self)
        return self._text_tower

    def export_text_tower(self) -> None:
        """Export the loaded text tower for later processes (once per instance)."""
        from clipsql.models import text_numpy

        if not self._export_tried:
            self._export_tried = True
            text_numpy.export_for(self)

    def encode_text_torch(self, texts: list[str]) -> np.ndarray:
        """Embed texts with the loaded torch model (trimmed to the real tokens when possible)."""
        model, _, tokenizer, device = self._load()  # first: its errors come before torch loads
        from clipsql.models.text_torch import encode_texts

        out, self.last_text_path = encode_texts(model, tokenizer, device, texts)
        return out
