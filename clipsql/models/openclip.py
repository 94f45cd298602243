"""The model: an OpenCLIP checkpoint, its one-time export, and the engine that embeds with it.

Which model is a :class:`~clipsql.models.spec.ModelSpec` (``ARCH/PRETRAINED``, see spec.py).
On a CPU both towers run on ONNX Runtime. The first use of a checkpoint on a machine builds
open_clip's torch model once and exports it (:mod:`clipsql.models.export`, with a ``steps``
callback for progress); every later process embeds from the export without importing torch.

The backend follows a rule, never a measurement (:func:`clipsql.models.export.choose`): on
a CPU, int8 where the export's check on this checkpoint kept cosine >= 0.999 to fp32, else
fp32; on CUDA, torch fp16; a tower that cannot be exported, or weights without a checkpoint
(``ARCH`` alone: random), run on torch fp32. ``precision`` overrides it (``fp32``, ``int8``,
``fp16`` for GPUs). Stored text embeddings (``fp32=True``) are always fp32.

>>> m = ClipModel("ViT-B-32/laion2b_s34b_b79k")     # nothing is loaded yet
>>> str(m.spec), m.dim
('ViT-B-32/laion2b_s34b_b79k', 512)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from clipsql import config
from clipsql.errors import ConfigError, ModelError
from clipsql.models import checkpoint
from clipsql.models.spec import ModelSpec, architecture_config, checkpoint_fingerprint

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ClipModel", "ModelSpec"]
PRECISIONS = config.PRECISIONS


@dataclass
class Engine:
    """What embeds for a prepared model, and why (``clipsql status`` shows it)."""

    image: object             # .encode(pixels) -> rows
    text: object              # .encode(texts, fp32) -> rows
    backend: str              # onnx-int8, onnx-fp32, torch-fp16, torch-fp32
    reason: str
    text_backend: str
    preprocess: object
    image_size: int
    logit_scale: float
    logit_bias: float | None
    folder: Path | None       # the export's cache folder, if there is one


class ClipModel:
    """An OpenCLIP model, prepared on first use. Outputs are L2-normalised float32 rows.

    Thread-safe: preparing happens once under a lock, and ONNX Runtime sessions run calls
    from several threads at once.
    """

    def __init__(self, spec: str | ModelSpec | None = None, device: str | None = None,
                 precision: str | None = None):
        self.spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec or config.DEFAULT_MODEL)
        self._device_request = config.device(device)
        self._precision_request = config.precision(precision)
        if self._precision_request not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"not {self._precision_request!r}")
        self._lock = threading.RLock()
        self._torch = None    # (net, preprocess, tokenizer, device, precision), built on demand
        self._engine: Engine | None = None

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

    @property
    def requested_precision(self) -> str:
        """The precision asked for (``auto``, ``fp32``, ``int8``, ``fp16``)."""
        return self._precision_request

    @property
    def device_request(self) -> str:
        return self._device_request

    @cached_property
    def device(self) -> str:
        return checkpoint.pick_device(self._device_request)

    @property
    def loaded(self) -> bool:
        """Whether open_clip's torch model is in memory (an export, CUDA, or a torch tower)."""
        return self._torch is not None

    @property
    def prepared(self) -> bool:
        """Whether the engine is ready (the export done or found, sessions open)."""
        return self._engine is not None

    @property
    def export_folder(self) -> Path | None:
        """Where this checkpoint's export lives (None: random weights, nothing to key it by)."""
        from clipsql.models import export  # numpy and ONNX tools: not for a model only named

        return None if self.pretrained_id == "random" else export.folder_for(self.identity())

    # --- preparing: the one-time set-up ------------------------------------------------------
    def prepare(self, steps=None) -> ClipModel:
        """Make the engine now (export the towers if this machine has no export of them yet);
        ``steps(what)`` is told each step of an export. Returns the model."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._make_engine(steps or (lambda what: None))
        return self

    @property
    def engine(self) -> Engine:
        return self.prepare()._engine

    def _make_engine(self, steps) -> Engine:
        from clipsql.models import export
        from clipsql.models.image import OnnxImageEncoder, TorchImageEncoder, transform
        from clipsql.models.text import OnnxTextEncoder, TorchTextEncoder

        device, requested = self.device, self._precision_request
        if requested == "fp16" and not device.startswith("cuda"):
            raise ConfigError(f"precision fp16 is for CUDA GPUs; on {device} use auto or fp32"
                              + (" or int8" if device == "cpu" else ""))
        if requested == "int8" and device != "cpu":
            raise ConfigError(f"precision int8 runs on the CPU; on {device} use fp16 or fp32")
        meta = self._exported(steps)
        folder = self.export_folder
        image_tower = (meta or {}).get("image") or {}
        text_tower = (meta or {}).get("text") or {}
        why_torch = ("weights without a checkpoint (random): nothing to export" if meta is None
                     else image_tower.get("error", ""))
        if device != "cpu":
            half = device.startswith("cuda") and requested in ("auto", "fp16")
            net = self._torch_model(device, "fp16" if half else "fp32")[0]
            image = TorchImageEncoder(net, _dtype(half), device)
            backend = "torch-fp16" if half else "torch-fp32"
            reason = f"{'auto' if requested == 'auto' else 'asked for'} on {device}: {backend}"
        elif "fp32" in image_tower:
            precision, reason = export.choose(image_tower, requested)
            image = OnnxImageEncoder(folder / image_tower[precision]["file"],
                                     per_image=precision == "int8")
            backend = f"onnx-{precision}"
        else:
            image = TorchImageEncoder(self._torch_model("cpu", "fp32")[0], _dtype(False), "cpu")
            backend, reason = "torch-fp32", f"torch fp32 ({why_torch})"
        if "fp32" in text_tower:
            precision, _ = export.choose(text_tower, requested if requested != "fp16" else "auto")
            text = OnnxTextEncoder(folder, text_tower, self.spec.arch, int8=precision == "int8")
            text_backend = f"onnx-{precision}"
        else:
            net, _, tokenizer, dev, _ = self._torch_model(device, "fp32")
            text, text_backend = TorchTextEncoder(net, tokenizer, dev), "torch-fp32"
        if meta is not None:
            preprocess = transform(meta["preprocess"])
            size, scale, bias = meta["preprocess"]["size"], meta["logit_scale"], meta["logit_bias"]
        else:
            net, preprocess = self._torch_model(device, "fp32")[:2]
            size, scale, bias = net.visual.image_size, float(net.logit_scale.exp()), export.logit_bias(net)
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        return Engine(image, text, backend, reason, text_backend, preprocess, size, scale, bias,
                      folder if meta else None)

    def _exported(self, steps) -> dict | None:
        """The export's meta, exported now (in a subprocess: :func:`export.in_subprocess`)
        if this machine has none; None for weights without a checkpoint (random)."""
        from clipsql.models import export

        folder = self.export_folder
        if folder is None:
            return None
        meta = export.read(folder)
        if meta is None:
            checkpoint.precheck(self.spec, self.model_config)  # seconds, not a subprocess
            export.in_subprocess(self.spec.resolved(), steps)
            meta = export.read(folder)
        if meta is None:
            raise ModelError(f"the export of {self.spec} in {folder} is unreadable after it "
                             "was made: remove that folder and try again")
        return meta

    def _torch_model(self, device: str, precision: str):
        """open_clip's torch model on ``device`` in ``precision``, built once per pair."""
        with self._lock:
            if self._torch is None or self._torch[3:] != (device, precision):
                self._torch = None
                net, preprocess, tokenizer = checkpoint.build(
                    self.spec, self.model_config, device, precision)
                self._torch = (net, preprocess, tokenizer, device, precision)
            return self._torch

    # --- what the engine knows ---------------------------------------------------------------
    @property
    def backend(self) -> str:
        """``onnx-int8``, ``onnx-fp32``, ``torch-fp16`` or ``torch-fp32`` (the image tower)."""
        return self.engine.backend

    @property
    def backend_reason(self) -> str:
        return self.engine.reason

    @property
    def preprocess(self):
        """The eval image transform (PIL image -> (3, H, W) array)."""
        return self.engine.preprocess

    @property
    def image_size(self) -> int:
        return self.engine.image_size

    @property
    def logit_scale(self) -> float:
        return self.engine.logit_scale

    @property
    def logit_bias(self) -> float | None:
        """SigLIP's learned bias: ``sigmoid(logit_scale * cos + logit_bias)`` per label; None
        for CLIP models, whose probabilities are a softmax over the labels."""
        return self.engine.logit_bias

    @property
    def torch_model(self):
        """open_clip's torch model on this model's device (built on first use)."""
        half = self.device.startswith("cuda") and self._precision_request in ("auto", "fp16")
        return self._torch_model(self.device, "fp16" if half else "fp32")[0]

    @property
    def tokenizer(self):
        """open_clip's tokenizer for the architecture (imports open_clip and torch)."""
        import open_clip

        from clipsql.models.spec import register_extra_configs

        register_extra_configs()
        return open_clip.get_tokenizer(self.spec.arch)

    def describe(self) -> dict:
        """The backend as ``status`` reports it, exporting and loading nothing."""
        from clipsql.models import export

        if self._engine is not None:
            e = self._engine
            return {"backend": e.backend, "reason": e.reason, "text": e.text_backend,
                    "precision": self._precision_request,
                    "export": str(e.folder) if e.folder else None}
        folder = self.export_folder
        meta = export.read(folder)
        if meta is None or self.device != "cpu":
            why = ("the first use exports the model to ONNX (once per checkpoint)"
                   if folder is not None and self.device == "cpu" else "decided on first use")
            return {"backend": None, "reason": why, "text": None,
                    "precision": self._precision_request, "export": None}
        image = export.choose(meta["image"], self._precision_request) if "fp32" in meta["image"] \
            else ("fp32", f"torch fp32 ({meta['image'].get('error')})")
        text = export.choose(meta["text"], self._precision_request) if "fp32" in meta["text"] \
            else ("fp32", "")
        runtime = "onnx" if "fp32" in meta["image"] else "torch"
        return {"backend": f"{runtime}-{image[0]}", "reason": image[1],
                "text": f"{'onnx' if 'fp32' in meta['text'] else 'torch'}-{text[0]}",
                "precision": self._precision_request, "export": str(folder)}

    # --- encoding ----------------------------------------------------------------------------
    def encode_images(self, batch) -> np.ndarray:
        """Embed a preprocessed image batch (N, 3, H, W)."""
        return self.engine.image.encode(batch)

    def encode_text(self, texts: list[str], fp32: bool = False) -> np.ndarray:
        """Embed a list of strings; one row per string. ``fp32``: never int8, for
        embeddings that are stored (labels, texts kept for SQL)."""
        return self.engine.text.encode(list(texts), fp32)


def _dtype(half: bool):
    import torch

    return torch.float16 if half else torch.float32
