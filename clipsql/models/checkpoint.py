"""Checkpoints: building open_clip's torch model from its weights, and failing in seconds,
with the way out, when the weights cannot be had.

torch and open_clip are needed here only: to build the model once per checkpoint for its
export (:mod:`clipsql.models.export`), on CUDA, and for the few towers ONNX cannot run.

Weights named by a tag (``ViT-B-32/laion2b_s34b_b79k``) come from the Hugging Face hub on
first use and from its local cache after that. Offline, open_clip would retry for a minute
and then print a stack trace; these checks say what to do instead.

>>> load_error_message("ViT-B-32/x", ValueError("Failed to download file"))[:34]
'cannot download the weights of ViT'
>>> type(load_error("ViT-B-32/x", ValueError("Failed to download file"))).__name__
'WeightsUnavailableError'
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from clipsql.errors import ModelError, WeightsUnavailableError


def check_downloadable(spec, tag: str) -> None:
    """Fail in seconds, not after a minute of retries, when weights are neither cached nor reachable."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        raise ModelError(
            f"{spec.arch} has no pretrained weights named {tag!r}; known tags: "
            f"{', '.join(tags) or 'none'}; or give a local checkpoint: {spec.arch}/PATH"
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
        raise WeightsUnavailableError(
            f"cannot download the weights of {spec} (huggingface.co is unreachable and "
            "they are not in the local cache)", spec.arch) from None


def load_error(spec, exc: Exception) -> ModelError:
    """One readable error for an exception of open_clip's model loading: weights that could
    not be downloaded are a :class:`~clipsql.errors.WeightsUnavailableError`, which names
    the way out (a local checkpoint)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Failed to download" in text or "connection" in text.lower() \
            or type(exc).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        arch = str(spec).split("/")[0] if isinstance(spec, str) else spec.arch
        return WeightsUnavailableError(f"cannot download the weights of {spec}: "
                                       f"{text.rstrip('.')}", arch)
    return ModelError(f"cannot load model {spec}: {text}")


def load_error_message(spec, exc: Exception) -> str:
    """:func:`load_error`'s message."""
    return str(load_error(spec, exc))


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "orthogonal_", "constant_", "zeros_",
                   "ones_", "eye_", "dirac_")
_init_lock = threading.Lock()


@contextmanager
def skipped_init(enabled: bool = True):
    """Build a model without torch's random initialisation, for weights a checkpoint replaces.

    Building ViT-B-32 spends about 2 s filling 150M parameters with random numbers that the
    checkpoint then overwrites (measured: ``uniform_``/``normal_`` 1.9 s of a 3.1 s build).
    open_clip loads checkpoints with ``strict=True``, so every parameter is overwritten or
    the load fails; only then is skipping the initialisation safe (``ClipModel`` uses this
    only when it loads weights). ``torch.nn.init``'s functions are module attributes looked
    up at call time, so they are swapped for no-ops here, one build at a time.
    """
    from torch.nn import init

    if not enabled:
        yield
        return
    with _init_lock:
        saved = {n: getattr(init, n) for n in _INIT_FUNCTIONS if hasattr(init, n)}
        for name in saved:
            setattr(init, name, _keep)
        try:
            yield
        finally:
            for name, fn in saved.items():
                setattr(init, name, fn)


def _keep(tensor, *args, **kwargs):
    return tensor


def pick_device(requested: str = "auto") -> str:
    """``auto``: cuda if available, then mps, then cpu; anything else is returned as given.

    On Linux without NVIDIA device nodes the answer is cpu without importing torch (seconds
    saved for everything that runs on ONNX Runtime)."""
    if requested != "auto":
        return requested
    if sys.platform.startswith("linux") and "torch" not in sys.modules \
            and not any(Path("/dev").glob("nvidia*")):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def precheck(spec, model_config: dict) -> str | None:
    """The cheap checks, before torch is imported: the checkpoint file exists, the Hugging
    Face parts can be had (:func:`clipsql.models.hub.check`). The ``pretrained`` to build with."""
    from clipsql.models import hub

    hub.check(spec.arch, model_config)
    pretrained = spec.pretrained
    if spec.is_file:
        pretrained = str(Path(pretrained).expanduser())
        if not Path(pretrained).is_file():
            raise ModelError(f"checkpoint file {pretrained} does not exist")
    return pretrained


def build(spec, model_config: dict, device: str = "cpu", precision: str = "fp32"):
    """(net, preprocess, tokenizer) of open_clip's model for ``spec`` (a ModelSpec).

    Every failure is one ModelError: unknown tags, weights that cannot be downloaded, missing
    Hugging Face parts (checked before torch loads), a checkpoint of another architecture.
    """
    from clipsql.models import hub
    from clipsql.models.spec import register_extra_configs

    pretrained = precheck(spec, model_config)
    import open_clip

    register_extra_configs()  # the config may have been read without open_clip
    if pretrained and not spec.is_file and not spec.arch.startswith("hf-hub:"):
        check_downloadable(spec, pretrained)
    try:
        # pretrained_hf=False (open_clip 3 also calls it pretrained_text): a Hugging Face text
        # tower is built from its config alone; the CLIP weights replace its own
        with skipped_init(enabled=bool(pretrained)):
            net, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=pretrained, device=device, precision=precision,
                pretrained_hf=False)
    except Exception as exc:
        raise load_error(spec, exc) from None
    net.eval()
    try:
        tokenizer = open_clip.get_tokenizer(spec.arch)
    except Exception as exc:
        raise ModelError(hub.tokenizer_error(spec, model_config, exc)) from None
    return net, preprocess, tokenizer
