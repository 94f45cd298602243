"""Export an OpenCLIP model's towers to ONNX, check them against torch, cache them per weights.

The ONNX Runtime path (``pip install "clipsql[onnx]"``) runs the same open_clip model: its
towers go through torch's own exporter, and an export is kept only if ONNX Runtime gives
what torch gives on reference inputs (fp32: every embedding within 1e-4; int8: cosine
>= :data:`ACCURACY_BAR` to fp32). Exports live in ``$CLIPSQL_HOME/cache/onnx/<key>/``, one
folder per checkpoint fingerprint and torch version, written atomically:

- ``image-fp32.onnx`` and ``image-int8.onnx``: ``encode_image`` on preprocessed pixels;
- ``text-fp32.onnx`` and ``text-int8.onnx``: the text tower on the real tokens only (no
  padding to 77: the causal mask makes the padding irrelevant, see
  :mod:`clipsql.models.text_torch`), for plain open_clip text towers;
- ``meta.json``: what was checked and how closely, and the preprocessing config, so a later
  process can preprocess and embed without building the torch model.

int8 is ONNX Runtime's dynamic quantisation (int8 weights per output channel, activations
quantised on the fly) of the MatMul/Gemm nodes.

>>> sorted(FILES)
['image-fp32', 'image-int8', 'text-fp32', 'text-int8']
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

FORMAT = 1
#: The accuracy bar every faster path must keep: cosine to the fp32 embedding, worst case.
ACCURACY_BAR = 0.999
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


def available() -> bool:
    """Whether ONNX Runtime and the onnx package are installed (the ``onnx`` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def cache_dir(model) -> Path | None:
    """Where the exports of a :class:`~clipsql.models.openclip.ClipModel` live; None for
    weights without a stable identity (random weights, hf-hub)."""
    from clipsql import config
    from clipsql.models.machine import versions

    if model.spec.pretrained is None:
        return None
    key = json.dumps([FORMAT, model.identity(), versions().get("torch")])
    return config.home() / "cache" / "onnx" / hashlib.sha256(key.encode()).hexdigest()[:20]


def read_meta(folder: Path | None) -> dict | None:
    """The export's ``meta.json``, or None if there is no usable export."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    return meta if meta.get("format") == FORMAT else None


def cosines(a, b) -> np.ndarray:
    """Row-wise cosine similarity of two embedding batches."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def export(model, folder: Path, pixels, tokens) -> dict | None:
    """Export ``model`` (a loaded fp32 ClipModel) to ``folder``; its meta, or None if nothing
    could be exported. ``pixels``: a preprocessed reference batch; ``tokens``: reference
    token ids trimmed to their real length (both become the export's check)."""
    if folder.is_dir():
        return read_meta(folder)
    import torch

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    net = model.torch_model
    meta = {"format": FORMAT, "identity": model.identity(),
            "preprocess": dict(getattr(net.visual, "preprocess_cfg", {}) or {}), "files": {}}
    try:
        with torch.inference_mode():
            expected_image = net.encode_image(pixels).float().numpy()
        meta["files"].update(_export_pair(_image_tower(net), pixels, expected_image, tmp, "image"))
        if _text_supported(net):
            with torch.inference_mode():
                expected_text = net.encode_text(_padded(tokens, net)).float().numpy()
            meta["files"].update(_export_pair(_text_tower(net), tokens, expected_text, tmp, "text"))
        if not meta["files"]:
            return None
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        os.rename(tmp, folder)  # atomic; another process may have won the race
    except OSError:
        return read_meta(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _padded(tokens, net):
    import torch

    width = net.positional_embedding.shape[0]
    return torch.nn.functional.pad(tokens, (0, width - tokens.shape[1]))


def _export_pair(module, example, expected, folder: Path, tower: str) -> dict:
    """fp32 and int8 exports of one tower, each with its check; failed ones are left out."""
    import torch

    from clipsql.models import onnx_runtime

    fp32 = folder / FILES[f"{tower}-fp32"]
    axes = {0: "batch"} if tower == "image" else {0: "batch", 1: "tokens"}
    try:
        # with grad enabled: without it nn.MultiheadAttention takes a fused path
        # (aten::_native_multi_head_attention) that the exporter cannot write
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), str(fp32), input_names=["input"],
                              output_names=["embedding"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"input": axes, "embedding": {0: "batch"}})
    except Exception as exc:  # an architecture the exporter cannot trace
        return {f"{tower}-fp32": {"ok": False, "why": f"export failed: {exc}"[:300]}}
    finally:
        module.eval()  # never leave the model in training mode (dropout) after a failed trace
    out = {}
    got = onnx_runtime.run(fp32, example.numpy())
    diff = float(np.abs(_unit(got) - _unit(expected)).max())
    out[f"{tower}-fp32"] = {"ok": diff <= FP32_TOLERANCE, "max_diff": diff,
                            "min_cosine": float(cosines(got, expected).min())}
    if not out[f"{tower}-fp32"]["ok"]:
        fp32.unlink()
        return out
    int8 = folder / FILES[f"{tower}-int8"]
    quantize(fp32, int8)
    cos = float(cosines(onnx_runtime.run(int8, example.numpy()), expected).min())
    out[f"{tower}-int8"] = {"ok": cos >= ACCURACY_BAR, "min_cosine": cos}
    if cos < ACCURACY_BAR:
        int8.unlink()
    return out


def quantize(src: Path, dst: Path) -> None:
    """ONNX Runtime dynamic int8 quantisation of the weight MatMuls (int8 per output channel,
    activations quantised on the fly): see :func:`weight_matmuls` for which ones."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = weight_matmuls(src)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process is logged as a root WARNING
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_quantize=nodes)
    finally:
        root.setLevel(level)


def weight_matmuls(path: Path) -> list[str]:
    """The MatMul nodes to quantise: those with a weight operand, except each attention's
    output projection and the final projection. Quantising the activation products
    (q @ k, scores @ v) and the token embedding as well, as ONNX Runtime does by default,
    costs accuracy for no speed: measured on ViT-B-32's text tower, the worst cosine to fp32
    over 160 queries was 0.99899 that way, 0.99914 with weight MatMuls only, and 0.99945
    with the output projections kept in fp32 too (the bar is 0.999)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    made_by = {out: n for n in graph.node for out in n.output}

    def is_weight(name: str) -> bool:
        node = made_by.get(name)
        if name in weights or (node is not None and node.op_type == "Constant"):
            return True
        return node is not None and node.op_type == "Transpose" and is_weight(node.input[0])

    names = [n.name for n in graph.node
             if n.op_type == "MatMul" and any(is_weight(i) for i in n.input)]
    return [n for n in names[:-1] if "out_proj" not in n]


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _text_supported(net) -> bool:
    from clipsql.models.text_torch import plain_block, trimmable

    return trimmable(net) and net.text_pool_type == "argmax" and all(
        plain_block(b) for b in net.transformer.resblocks)


def _image_tower(net):
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            return self.net.encode_image(pixels)

    return ImageTower().eval()  # the exporter restores this mode on net, recursively


def _text_tower(net):
    """open_clip's text tower written with shape-generic ops, so one export serves every
    token count (nn.MultiheadAttention traces its shapes as constants)."""
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, tokens):
            length = tokens.shape[1]
            x = net.token_embedding(tokens) + net.positional_embedding[:length]
            mask = torch.triu(torch.full((length, length), float("-inf")), 1)
            for block in net.transformer.resblocks:
                x = _block(block, x, mask)
            x = net.ln_final(x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)])
            proj = net.text_projection
            if proj is None:
                return x
            return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    return TextTower().eval()


def _block(block, x, mask):
    """open_clip's ResidualAttentionBlock (see text_torch.plain_block) in plain tensor ops."""
    import torch.nn.functional as F

    attn = block.attn
    heads = attn.num_heads
    width = x.shape[-1]
    head = width // heads
    n = x.shape[0]
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.reshape(n, -1, 3, heads, head).permute(2, 0, 3, 1, 4)
    scores = (qkv[0] @ qkv[1].transpose(-1, -2)) * (head ** -0.5) + mask
    a = (scores.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(n, -1, width)
    x = x + block.ls_1(attn.out_proj(a))
    return x + block.ls_2(block.mlp(block.ln_2(x)))
