"""Which backend embeds a :class:`~clipsql.models.openclip.ClipModel`'s images, and its encoder.

``--precision auto`` on a CPU calibrates (:mod:`clipsql.models.calibrate`) the first time a
model embeds images on a machine; later processes read the stored choice. When the choice
is an ONNX Runtime path whose export is cached, a process needs neither the torch weights
nor their build: images are preprocessed with open_clip's transform made from the export's
preprocessing config, and embedded by ONNX Runtime.

>>> from clipsql.models.openclip import ClipModel
>>> resolve(ClipModel("ViT-B-32/laion2b_s34b_b79k", device="cpu", precision="int8"))[0]
'torch-int8'
"""

from __future__ import annotations

import datetime as dt
import time

from clipsql.errors import ConfigError
from clipsql.models import backends, calibrate, onnx_export, startup
from clipsql.models.device import pick_device


def resolve(model) -> tuple[str, str, calibrate.Choice | None]:
    """(backend, reason, stored calibration) for ``model``, measuring only if auto must."""
    requested = model.requested_precision
    device = pick_device(model.device_request)
    if requested != "auto":
        backend = backends.backend_for(requested)
        if backends.is_onnx(backend) and device != "cpu":
            raise ConfigError(f"precision {requested} runs on the CPU; on {device} use fp16")
        return backend, f"asked for ({requested})", None
    if device.startswith("cuda"):
        return "torch-fp16", "auto on CUDA: fp16", None
    if device != "cpu":
        return "torch-fp32", f"auto on {device}: fp32", None
    choice = calibrate.cached(model) or run_calibration(model)
    backend, reason = auto_backend(model, choice)
    if backends.is_onnx(backend) and onnx_file(model, backend) is None:
        # the choice outlived its export (cache cleared, onnxruntime uninstalled): measure again
        choice = run_calibration(model)
        backend, reason = auto_backend(model, choice)
    return backend, f"auto: {reason}", choice


def auto_backend(model, choice: calibrate.Choice) -> tuple[str, str]:
    """What auto uses for ``model``'s planned workload, given its stored calibration."""
    return calibrate.for_workload(choice, model.workload, startup.done_parts(model))


def onnx_file(model, backend: str):
    """The checked export file for an ONNX ``backend`` of ``model``, or None."""
    folder = onnx_export.cache_dir(model)
    meta = onnx_export.read_meta(folder) if onnx_export.available() and folder else None
    name = "image-" + backend.removeprefix("onnx-")
    if meta is None or not meta["files"].get(name, {}).get("ok"):
        return None
    return folder / onnx_export.FILES[name]


def ensure_export(model) -> dict | None:
    """Export ``model`` to ONNX (loading its fp32 torch weights) unless cached; its meta."""
    folder = onnx_export.cache_dir(model)
    if folder is None or not onnx_export.available():
        return None
    if (meta := onnx_export.read_meta(folder)) is not None:
        return meta
    pixels = sample_batch(model)
    return onnx_export.export(model, folder, pixels, reference_tokens(model))


def sample_batch(model):
    import torch

    size = model.image_size
    from clipsql.models.preprocess import stack

    return torch.as_tensor(stack([model.preprocess(img) for img in calibrate.sample_images(size)]))


def reference_tokens(model):
    tokens = model.tokenizer(onnx_export.REFERENCE_TEXTS)
    return tokens[:, :int(tokens.argmax(dim=-1).max()) + 1]


def run_calibration(model) -> calibrate.Choice:
    """Measure every candidate on this CPU and store the choice."""
    from clipsql.models.machine import fingerprint

    costs = {"torch_import": startup.import_seconds(startup.TORCH)}
    model.torch_model  # the reference (torch fp32) is always measured
    costs["torch_build"] = model.build_seconds
    if onnx_export.available():
        costs["onnx_import"] = startup.import_seconds(startup.ONNX)
    meta = ensure_export(model)
    model.export_text_tower()  # the weights are loaded: later text queries need no model
    onnx_ok = bool(meta and any(meta["files"].get(f"image-{p}", {}).get("ok")
                                for p in ("fp32", "int8")))
    encoders, costs["prepare"] = {}, {}
    for name in backends.cpu_candidates(onnx=onnx_ok):
        if not backends.is_onnx(name) or onnx_file(model, name) is not None:
            started = time.perf_counter()  # a session opened, a converted copy of the weights
            encoders[name] = encoder(model, name)
            costs["prepare"][name] = round(time.perf_counter() - started, 3)
    rates, cos = calibrate.measure(encoders, sample_batch(model))
    backend, reason = calibrate.decide(rates, cos)
    choice = calibrate.Choice(backend, reason, rates, cos, fingerprint(),
                              dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              {k: v for k, v in costs.items() if v is not None})
    calibrate.store(model, "cpu", choice)
    return choice


def encoder(model, backend: str):
    """The image encoder of ``backend`` for ``model`` (torch ones from its loaded weights)."""
    if backends.is_onnx(backend):
        from clipsql.models.onnx_runtime import ImageEncoder

        path = onnx_file(model, backend)
        if path is None:
            ensure_export(model)
            path = onnx_file(model, backend)
        if path is None:
            return None  # not exportable, or the export failed its check: the caller falls back
        return ImageEncoder(path)
    return backends.torch_encoder(model.torch_model, backend, model.device, model.precision)


def light_config(model) -> dict | None:
    """The preprocessing config of the cached ONNX export that ``model``'s backend will use,
    found without measuring or loading anything; None if the torch model is needed."""
    requested = model.requested_precision
    if requested == "auto":
        if model.device_request not in ("auto", "cpu") or pick_device(model.device_request) != "cpu":
            return None
        choice = calibrate.cached(model)
        backend = auto_backend(model, choice)[0] if choice else None
    else:
        backend = requested
    if not backend or not backends.is_onnx(backend) or onnx_file(model, backend) is None:
        return None
    return onnx_export.read_meta(onnx_export.cache_dir(model)).get("preprocess") or None


def transform(cfg: dict):
    """open_clip's eval image transform for a preprocessing config (no model built): in
    numpy where it can be (:mod:`clipsql.models.preprocess`: no torch import), else open_clip's."""
    from clipsql.models.preprocess import for_config

    if (numpy_transform := for_config(cfg)) is not None:
        return numpy_transform
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


def describe(model) -> dict:
    """The backend as ``status`` reports it, measuring and loading nothing: the resolved one,
    else what a stored calibration says, else what auto will do."""
    requested = model.requested_precision
    if model.backend_known:
        return {"backend": model.backend, "reason": model.backend_reason,
                "precision": requested}
    if requested != "auto":
        return {"backend": backends.backend_for(requested), "reason": "asked for",
                "precision": requested}
    choice = calibrate.cached(model)
    if choice is None:
        return {"backend": None, "precision": "auto",
                "reason": "not calibrated on this machine yet (the next load measures)"}
    return {"backend": choice.backend, "precision": "auto",
            "reason": f"measured {choice.measured}: {choice.reason}"}
