"""A small wrapper around an OpenCLIP model: lazy loading, normalised embeddings.

Which model is a :class:`~clipsql.models.spec.ModelSpec` (``ARCH/PRETRAINED``, see spec.py).

>>> m = ClipModel("ViT-B-32/laion2b_s34b_b79k")     # nothing is loaded yet
>>> str(m.spec)
'ViT-B-32/laion2b_s34b_b79k'
"""

from __future__ import annotations

import os
import socket
import threading
from functools import cached_property
from pathlib import Path

import numpy as np

from clipsql import config
from clipsql.errors import ConfigError, ModelError
from clipsql.models.device import PRECISIONS, pick_device, quantize_int8, resolve_precision
from clipsql.models.spec import (
    ModelSpec,
    checkpoint_fingerprint,
    config_without_open_clip,
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
        self._loaded = None
        self._text_tower = _UNSET
        self._export_tried = False

    # --- identity, available without loading weights -------------------------------------
    @cached_property
    def model_config(self) -> dict:
        cfg = config_without_open_clip(self.spec.arch)
        if cfg is not None:
            return cfg
        import open_clip

        register_extra_configs()
        if self.spec.arch.startswith("hf-hub:"):
            cfg = None
            try:
                from open_clip.factory import _get_hf_config

                cfg = _get_hf_config(self.spec.arch[len("hf-hub:"):])["model_cfg"]
            except Exception as exc:
                raise ModelError(f"cannot read the config of {self.spec.arch}: {exc}") from None
        else:
            cfg = open_clip.get_model_config(self.spec.arch)
        if cfg is None:
            raise ModelError(
                f"unknown model architecture {self.spec.arch!r}; `python -c \"import open_clip; "
                f"print(open_clip.list_models())\"` lists them (custom configs: set "
                f"{config.ENV_MODEL_CONFIGS} to a folder of open_clip JSON configs)"
            )
        return cfg

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
    def device(self) -> str:
        return self._load()[3]

    @property
    def preprocess(self):
        return self._load()[1]

    @property
    def image_size(self) -> int:
        size = self._load()[0].visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

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
            self._check_downloadable(pretrained)
        precision = resolve_precision(self._precision_request, device)
        try:
            # pretrained_hf=False (open_clip 3 also calls it pretrained_text): a Hugging Face
            # text tower is built from its config alone; the CLIP weights replace its own
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.spec.arch, pretrained=pretrained, device=device,
                precision=precision if precision in ("fp16", "bf16") else "fp32",
                pretrained_hf=False,
            )
        except Exception as exc:
            raise ModelError(self._load_error_message(exc)) from None
        model.eval()
        if precision == "int8":
            model = quantize_int8(model)
        self.precision = precision
        try:
            tokenizer = open_clip.get_tokenizer(self.spec.arch)
        except Exception as exc:
            raise ModelError(hub.tokenizer_error(self.spec, self.model_config, exc)) from None
        if device == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        return model, preprocess, tokenizer, device

    def _check_downloadable(self, tag: str) -> None:
        """Fail in seconds, not after a minute of retries, when weights are neither cached nor reachable."""
        import open_clip

        cfg = open_clip.get_pretrained_cfg(self.spec.arch, tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(self.spec.arch)
            raise ModelError(
                f"{self.spec.arch} has no pretrained weights named {tag!r}; known tags: "
                f"{', '.join(tags) or 'none'}; or give a local checkpoint: {self.spec.arch}/PATH"
            )
        hub = (cfg.get("hf_hub") or "").rstrip("/")
        if not hub or os.environ.get("HF_HUB_OFFLINE"):
            return
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hub, filename), str):
                return
        try:
            socket.create_connection(("huggingface.co", 443), timeout=5).close()
        except OSError:
            raise ModelError(
                f"cannot download the weights of {self.spec} (huggingface.co is unreachable and "
                f"they are not in the local cache). Download them where you have internet, or "
                f"point clipsql at a local checkpoint: the model {self.spec.arch}/PATH/TO/weights.bin"
            ) from None

    def _load_error_message(self, exc: Exception) -> str:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Failed to download" in text or "connection" in text.lower():
            return (
                f"cannot download the weights of {self.spec}: {text}. Point clipsql at a local "
                f"checkpoint instead: the model {self.spec.arch}/PATH/TO/weights.bin"
            )
        return f"cannot load model {self.spec}: {text}"

    # --- encoding --------------------------------------------------------------------------
    def encode_images(self, batch) -> np.ndarray:
        """Embed a preprocessed image tensor batch (N, 3, H, W)."""
        import torch

        model, _, _, device = self._load()
        with torch.inference_mode():
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)
            out = model.encode_image(batch.to(device, dtype=dtype))
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Embed a list of strings; one row per string.

        Before the model is loaded, an exported text tower (:mod:`clipsql.models.text_numpy`)
        answers without torch; after the first full-model call the tower is exported for
        next time.
        """
        texts = list(texts)
        if self._loaded is None and (tower := self.text_tower()) is not None:
            #: "exported", "trimmed" or "full": which path the last call took (tests check it).
            self.last_text_path = "exported"
            return tower.encode(texts)
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
        if not self._export_tried:
            self._export_tried = True
            from clipsql.models import text_numpy

            text_numpy.export_for(self)

    def encode_text_torch(self, texts: list[str]) -> np.ndarray:
        """Embed texts with the loaded torch model (trimmed to the real tokens when possible)."""
        model, _, tokenizer, device = self._load()  # first: its errors come before torch loads
        import torch

        from clipsql.models.text_torch import encode_trimmed

        with torch.inference_mode():
            tokens = tokenizer(texts).to(device)
            out = encode_trimmed(model, tokens)
            self.last_text_path = "full" if out is None else "trimmed"
            if out is None:
                out = model.encode_text(tokens)
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()
