"""Export a checkpoint's towers to ONNX once, check them against torch, keep them in the cache.

This is the only place torch runs on a CPU machine: open_clip builds the model from its
checkpoint, torch's exporter writes each tower, and ONNX Runtime runs them from then on
(:mod:`clipsql.models.image`, :mod:`clipsql.models.text`). An export is kept only if ONNX
Runtime gives what torch gives on a fixed reference set (:func:`clipsql.models.image.
reference_images`, :data:`REFERENCE_TEXTS`): fp32 within :data:`FP32_TOLERANCE` of torch
per component, and each int8 quantisation with its worst cosine to torch fp32 recorded. The
precision rule (:func:`choose`) reads that record: the same checkpoint with the same
packages gives the same backend on every machine, without a measurement.

The files are those of :mod:`clipsql.models.cache` (``models/<key>/``):

- ``image-fp32.onnx``, ``image-int8.onnx``: ``encode_image`` on preprocessed pixels;
- ``text-fp32.onnx``, ``text-int8.onnx``: the text tower, on the real tokens only where the
  tower has a causal mask and argmax pooling (see :mod:`clipsql.models.text`), else on ids
  padded to the context length;
- ``meta.json``: the checks, the preprocessing config, the logit scale and bias, the token
  scheme: a later process embeds images and texts without building the torch model.

int8 is dynamic quantisation (int8 weights per output channel, activations quantised on the
fly) of the weight MatMuls (:mod:`clipsql.models.quantize`); the traced modules are those of
:mod:`clipsql.models.towers`. :func:`in_subprocess` runs an export in a process of its own
(``python -m clipsql.models export SPEC``).

>>> choose({"int8": {"min_cosine": 0.9995}}, "auto")
('int8', 'auto: int8 keeps cosine >= 0.999 to fp32 on the reference set (worst 0.99950)')
>>> choose({"int8": {"min_cosine": 0.998}}, "auto")[0]
'fp32'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clipsql.models import cache, runtime
from clipsql.models.image import reference_images
from clipsql.models.quantize import quantize
from clipsql.models.towers import image_tower, padded_text_tower, trimmable, trimmed_text_tower

#: 3: a CLIP text tower is exported with fused attention, and its attentions' output
#: projections are quantised too where the check keeps the bar; 4: its last block runs
#: past its attention on the end-of-text token only (the one pooled)
FORMAT = 4
#: The accuracy bar int8 must keep: worst cosine to the fp32 embedding on the reference set.
ACCURACY_BAR = 0.999
#: fp32 ONNX against torch fp32: largest difference of a unit-vector component.
FP32_TOLERANCE = 1e-4
FILES = {"image-fp32": "image-fp32.onnx", "image-int8": "image-int8.onnx",
         "text-fp32": "text-fp32.onnx", "text-int8": "text-int8.onnx"}
OPSET = 17
#: The texts an export is checked on: short and long, punctuation, non-Latin scripts.
REFERENCE_TEXTS = ["a photo of a dog", "two dogs playing in the snow, 2021!", "invoice",
                   "Ünïcödé café 🐕", "雪の中で遊ぶ2匹の犬", "a screenshot of a spreadsheet",
                   "a red car parked on a quiet street at night under a streetlight",
                   "unsafe", "sunset over the mountains with a lake in the foreground",
                   "portrait of an old man with a grey beard, black and white photograph"]
#: What an export does, in order (the ``steps`` callback gets these).
STEPS = ("exporting the image tower to ONNX", "checking the image tower against torch",
         "quantising the image tower to int8", "exporting the text tower to ONNX",
         "checking the text tower against torch", "quantising the text tower to int8")

Steps = Callable[[str], None]


def folder_for(identity: dict) -> Path:
    """The cache folder of the exports of weights with this ``identity``."""
    return cache.folder("models", [FORMAT, identity])


def read(folder: Path | None) -> dict | None:
    """The export's ``meta.json`` if the folder holds a whole, verified export of this
    format (:func:`check`), else None."""
    return check(folder)[0]


def check(folder: Path | None) -> tuple[dict | None, str]:
    """(meta, "") for a verified export in ``folder``, else (None, what is wrong); never
    raises on a bad entry. Verified: ``meta.json`` is of this format, sealed
    (:func:`~clipsql.models.cache.seal`: not edited since), names the checkpoint the folder
    is keyed by (its identity holds the checkpoint's fingerprint), has every field of the
    right type, and each ONNX file is the one exported (:func:`~clipsql.models.cache.changed`).
    """
    try:
        if folder is None or not (folder / "meta.json").exists():
            return None, "no export"
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None, "another format"
        if meta.get("seal") != cache.seal(meta):
            return None, "meta.json was changed after the export"
        if cache.folder("models", [FORMAT, meta["identity"]]).name != folder.name:
            return None, "it was exported from another checkpoint"
        problem = cache.malformed_export(meta, FILES)
        changed = None if problem else next((e["file"] for e in _entries(meta)
                                             if cache.changed(folder / e["file"], e)), None)
        problem = problem or (f"{changed} is not the file exported" if changed else "")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    return (None, problem) if problem else (meta, "")


def _entries(meta: dict) -> list[dict]:
    return [meta[t][p] for t in ("image", "text") for p in ("fp32", "int8") if p in meta[t]]


def choose(tower: dict, requested: str) -> tuple[str, str]:
    """(``int8`` or ``fp32``, why) for an exported ``tower`` (``meta["image"]``/``["text"]``)
    and a requested precision: ``auto`` takes int8 where its check kept the bar."""
    cos = (tower.get("int8") or {}).get("min_cosine")
    if requested in ("fp32", "int8"):
        if requested == "int8" and cos is None:
            return "fp32", "asked for int8, but this tower has no int8 export: fp32"
        shown = f"; worst cosine to fp32 {cos:.5f}" if requested == "int8" else ""
        return requested, f"asked for ({requested}{shown})"
    if cos is not None and cos >= ACCURACY_BAR:
        return "int8", (f"auto: int8 keeps cosine >= {ACCURACY_BAR} to fp32 on the reference "
                        f"set (worst {cos:.5f})")
    why = "no int8 export" if cos is None else f"int8's worst cosine {cos:.5f} < {ACCURACY_BAR}"
    return "fp32", f"auto: fp32 ({why})"


def cosines(a, b) -> np.ndarray:
    """Row-wise cosine similarity of two embedding batches."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def export(net, preprocess, tokenizer, identity: dict, folder: Path,
           steps: Steps | None = None) -> dict:
    """Export a loaded fp32 CPU open_clip model to ``folder`` (atomically); its meta.

    ``preprocess`` and ``tokenizer`` are open_clip's for the model. A tower the exporter
    cannot write, or whose fp32 export misses the tolerance, is recorded with its ``error``
    (the model then runs that tower on torch). Another process may win the race: its export
    is then the one returned. None if it could not be written (a read-only cache).
    """
    steps = steps or (lambda what: None)
    meta: dict = {"format": FORMAT, "identity": identity, "versions": cache.versions(),
                  "bar": ACCURACY_BAR, "seconds": {},
                  "preprocess": dict(getattr(net.visual, "preprocess_cfg", {}) or {}),
                  "logit_scale": float(net.logit_scale.exp().item()),
                  "logit_bias": logit_bias(net)}

    def fill(tmp: Path) -> None:
        meta["image"] = _image(net, preprocess, tmp, steps, meta["seconds"])
        meta["text"] = _text(net, tokenizer, tmp, steps, meta["seconds"])
        for entry in _entries(meta):
            entry.update(cache.stamp(tmp / entry["file"]))
        meta["seal"] = cache.seal(meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    import torch

    old, problem = check(folder)
    if old is None and folder.exists():
        steps(f"the cached export in {folder} is not used ({problem}): exporting it again")
    with torch.inference_mode(False):
        cache.write(folder, fill, replace=old is None)
    return read(folder)


def in_subprocess(spec: str, steps: Steps | None = None) -> None:
    """Export ``spec`` (``ARCH/PRETRAINED``, a checkpoint path absolute) in a new Python
    process, relaying its steps; a ModelError with its message if it fails.

    The export's peak memory (torch, the model, the traced graph: about 3 GB for ViT-B-32)
    is that process's and returns to the system when it ends, and the caller never imports
    torch: a load or a server stays at ONNX Runtime's size.
    """
    from clipsql.errors import ModelError, WeightsUnavailableError

    steps = steps or (lambda what: None)
    steps("starting the export in a process of its own")
    weights = None
    proc = subprocess.Popen([sys.executable, "-m", "clipsql.models", "export", spec],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    error = None
    with proc:
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "step" in message:
                steps(str(message["step"]))
            elif "error" in message:
                error = str(message["error"])
                weights = message.get("weights")
        stderr = proc.stderr.read()
    if isinstance(weights, dict):  # offline: the typed error, so the caller names its option
        raise WeightsUnavailableError(str(weights.get("problem")), str(weights.get("arch")))
    if proc.returncode != 0 or error:
        tail = " ".join(stderr.strip().splitlines()[-1:])[:300]
        raise ModelError(error or f"exporting {spec} failed (exit {proc.returncode}): {tail}")


def logit_bias(net) -> float | None:
    """SigLIP's learned logit bias (None for CLIP models)."""
    bias = getattr(net, "logit_bias", None)
    return None if bias is None else float(bias.detach().float().reshape(-1)[0].item())


def _image(net, preprocess, tmp: Path, steps: Steps, seconds: dict) -> dict:
    import torch

    size = net.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    pixels = torch.stack([torch.as_tensor(np.asarray(preprocess(img)))
                          for img in reference_images(size)]).float()
    with torch.no_grad():
        expected = net.encode_image(pixels).float().numpy()
    return _tower(image_tower(net), pixels, expected, tmp, "image", {"batch": 0},
                  steps, seconds, [p[None] for p in pixels.numpy()])


def _text(net, tokenizer, tmp: Path, steps: Steps, seconds: dict, fused: bool = True,
          last_token: bool = True) -> dict:
    """The text tower's export; ``fused=False``: format 2's plain graph with its output
    projections in fp32, ``last_token=False``: format 3's fused graph, whose last block runs
    on every token (``benchmarks/text.py`` times all three)."""
    import torch

    padded = tokenizer(REFERENCE_TEXTS)
    context = int(padded.shape[1])
    trimmed = trimmable(net)
    if trimmed:
        ids = padded[:, :int(padded.argmax(dim=-1).max()) + 1]
        module = trimmed_text_tower(net, fused=fused, last_token=last_token)
        axes = {"batch": 0, "tokens": 1}
    else:
        ids = padded
        module, axes = padded_text_tower(net), {"batch": 0}
    with torch.no_grad():
        expected = net.encode_text(padded).float().numpy()
    rows = [r[None, :int(r.argmax()) + 1] if trimmed else r[None] for r in ids.numpy()]
    out = _tower(module, ids, expected, tmp, "text", axes, steps, seconds, rows,
                 fused=trimmed and fused)
    if trimmed and fused and "error" in out:  # the fused graph failed: format 2's plain one
        out = _tower(trimmed_text_tower(net), ids, expected, tmp, "text", axes, steps,
                     seconds, rows)
    out.update({"input": "trimmed" if trimmed else "padded", "context_length": context,
                "tokenizer": "clip-bpe" if _bpe_matches(tokenizer, padded) else "open_clip",
                "dim": int(expected.shape[1])})
    return out


def _tower(module, example, expected, tmp: Path, tower: str, axes: dict, steps: Steps,
           seconds: dict, rows: list, fused: bool = False) -> dict:
    """fp32 and int8 exports of one tower with their checks; ``{"error": ...}`` if fp32 fails.
    ``rows``: the example one input per row, as the engine feeds int8 (image.py, text.py).
    ``fused``: a text tower with fused attention (:func:`trimmed_text_tower`), quantised
    with its attentions' output projections first."""
    import torch

    fp32 = tmp / FILES[f"{tower}-fp32"]
    steps(f"exporting the {tower} tower to ONNX")
    started = time.perf_counter()
    try:
        # with grad enabled: without it nn.MultiheadAttention takes a fused path
        # (aten::_native_multi_head_attention) that the exporter cannot write
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), str(fp32), input_names=["input"],
                              output_names=["embedding"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"input": {v: k for k, v in axes.items()},
                                            "embedding": {0: "batch"}})
    except Exception as exc:  # an architecture the exporter cannot trace
        return {"error": f"the exporter failed: {exc}"[:300]}
    finally:
        module.eval()  # never leave the model in training mode (dropout) after a failed trace
    graph = "fused" if fused else "plain"
    seconds[f"{tower}_export"] = round(time.perf_counter() - started, 2)
    steps(f"checking the {tower} tower against torch")
    got = runtime.run_once(fp32, example.numpy())
    diff = float(np.abs(runtime.normalised(got) - runtime.normalised(expected)).max())
    if not diff <= FP32_TOLERANCE:
        fp32.unlink()
        return {"error": f"ONNX Runtime differs from torch by {diff:.2e} (> {FP32_TOLERANCE})"}
    out = {"fp32": {"file": fp32.name, "bytes": fp32.stat().st_size, "max_diff": diff},
           "graph": graph}
    steps(f"quantising the {tower} tower to int8")
    started = time.perf_counter()
    int8 = tmp / FILES[f"{tower}-int8"]
    # the output projections too where that keeps the bar (fewer bytes read a query), else
    # in fp32 as format 2 did
    for out_proj in ((True, False) if fused else (False,)):
        try:
            quantize(fp32, int8, out_proj=out_proj)
        except Exception as exc:  # a graph the quantiser cannot handle: fp32 only
            out["int8_error"] = f"quantisation failed: {exc}"[:300]
            return out
        # as the engine runs int8: one row at a time, each its own activation scale (and a
        # text row its own tokens)
        session = runtime.open_session(int8)
        got = np.concatenate([session.run(None, {"input": row})[0] for row in rows])
        cos = float(cosines(got, expected).min())
        out["int8"] = {"file": int8.name, "bytes": int8.stat().st_size, "min_cosine": cos,
                       "out_proj": out_proj}
        del session
        if cos >= ACCURACY_BAR:
            break
    seconds[f"{tower}_int8"] = round(time.perf_counter() - started, 2)
    return out


def _bpe_matches(tokenizer, padded) -> bool:
    """Whether the torch-free BPE gives open_clip's ids for the reference texts."""
    from clipsql.models.text import pad_rows
    from clipsql.models.tokenizer import Tokenizer

    try:
        ours = Tokenizer.load(int(padded.shape[1]))(REFERENCE_TEXTS)
    except (OSError, ValueError, KeyError):
        return False
    return bool(np.array_equal(pad_rows(ours, int(padded.shape[1])), padded.numpy()))
