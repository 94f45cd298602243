"""Which OpenCLIP model: spec parsing, architecture configs, checkpoint fingerprints.

A spec is ``ARCH/PRETRAINED``: an open_clip architecture and either a pretrained tag
(downloaded by open_clip on first use) or a path to a local checkpoint file. Nothing here
imports torch or open_clip unless it has to.

>>> spec = ModelSpec.parse("ViT-B-32/laion2b_s34b_b79k")
>>> spec.arch, spec.pretrained
('ViT-B-32', 'laion2b_s34b_b79k')
>>> ModelSpec.parse("ViT-B-32//models/my.pt").pretrained
'/models/my.pt'
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from clipsql import config
from clipsql.errors import ConfigError, ModelError


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    pretrained: str | None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        spec = spec.strip()
        if not spec:
            raise ConfigError("empty model spec; use ARCH/PRETRAINED, e.g. ViT-B-32/laion2b_s34b_b79k")
        if spec.startswith("hf-hub:"):
            return cls(spec, None)
        arch, _, pretrained = spec.partition("/")
        if not arch:
            raise ConfigError(f"model spec {spec!r} has no architecture; use ARCH/PRETRAINED")
        return cls(arch, pretrained or None)

    @property
    def is_file(self) -> bool:
        return bool(self.pretrained) and (
            os.sep in self.pretrained or self.pretrained.endswith((".pt", ".bin", ".safetensors", ".pth"))
        )

    def resolved(self) -> str:
        """The spec with a checkpoint path made absolute, as recorded in the database."""
        if self.is_file:
            return f"{self.arch}/{Path(self.pretrained).expanduser().resolve()}"
        return str(self)

    def __str__(self) -> str:
        return f"{self.arch}/{self.pretrained}" if self.pretrained else self.arch


def register_extra_configs() -> None:
    folder = os.environ.get(config.ENV_MODEL_CONFIGS)
    if folder:
        import open_clip

        open_clip.add_model_config(Path(folder))


def config_without_open_clip(arch: str) -> dict | None:
    """The architecture's JSON config read straight from disk, or None to ask open_clip.

    Importing open_clip costs seconds (torch, torchvision); a search whose text embedding is
    cached, or a status call, only needs the config's ``embed_dim``. Once open_clip is
    imported its own registry is used (it also knows configs added at run time).
    """
    import importlib.util
    import json
    import sys

    if "open_clip" in sys.modules or arch.startswith("hf-hub:") or "/" in arch or os.sep in arch:
        return None
    folders = [os.environ.get(config.ENV_MODEL_CONFIGS)]
    spec = importlib.util.find_spec("open_clip")
    if spec and spec.submodule_search_locations:
        folders += [os.path.join(p, "model_configs") for p in spec.submodule_search_locations]
    for folder in filter(None, folders):
        path = Path(folder) / f"{arch}.json"
        if path.is_file():
            try:
                cfg = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            # open_clip's own rule for what counts as a model config
            if all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
                return cfg
    return None


def checkpoint_fingerprint(path: Path) -> str:
    """A cheap content fingerprint of a checkpoint: size plus hashes of its head and tail."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(4 << 20))
        if size > 8 << 20:
            f.seek(-(4 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()[:16]


def architecture_config(arch: str) -> dict:
    """open_clip's model config of ``arch`` (read without importing open_clip where possible)."""
    cfg = config_without_open_clip(arch)
    if cfg is not None:
        return cfg
    import open_clip

    register_extra_configs()
    if arch.startswith("hf-hub:"):
        try:
            from open_clip.factory import _get_hf_config

            cfg = _get_hf_config(arch[len("hf-hub:"):])["model_cfg"]
        except Exception as exc:
            raise ModelError(f"cannot read the config of {arch}: {exc}") from None
    else:
        cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ModelError(
            f"unknown model architecture {arch!r}; `python -c \"import open_clip; "
            f"print(open_clip.list_models())\"` lists them (custom configs: set "
            f"{config.ENV_MODEL_CONFIGS} to a folder of open_clip JSON configs)"
        )
    return cfg
