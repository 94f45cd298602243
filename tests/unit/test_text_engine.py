"""The text tower as export format 3 writes it: each attention one fused, causal ONNX Runtime
``Attention`` node (``QAttention`` in int8), the attentions' output projections quantised
only where the check keeps the bar, one export for every token count. A tiny open_clip CLIP
(random weights), real torch exporter, real ONNX Runtime; behaviour only, nothing timed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsql.models import export, runtime
from clipsql.models.quantize import quantize, weight_matmuls
from clipsql.models.towers import trimmable, trimmed_text_tower

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

TEXTS = ["a photo of a dog", "invoice", "雪の中で遊ぶ2匹の犬", "a"]


@pytest.fixture(scope="module")
def tiny(model_configs):
    import open_clip

    torch.manual_seed(0)
    net = open_clip.create_model("clipsql-tiny").eval()
    return net, open_clip.get_tokenizer("clipsql-tiny")


def ops(path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def rows_of(padded) -> list[np.ndarray]:
    """Each text's real tokens, up to its end-of-text (the highest id)."""
    return [r[None, :int(r.argmax()) + 1] for r in padded.numpy()]


def test_the_fused_graph_is_open_clips_text_tower_for_every_token_count(tiny, tmp_path):
    net, tokenizer = tiny
    assert trimmable(net)
    padded = tokenizer(TEXTS)
    longest = padded[:, :int(padded.argmax(-1).max()) + 1]
    path = tmp_path / "text.onnx"
    with torch.enable_grad():
        torch.onnx.export(trimmed_text_tower(net, fused=True), (longest,), str(path),
                          input_names=["input"], output_names=["embedding"], dynamo=False,
                          opset_version=export.OPSET,
                          dynamic_axes={"input": {0: "batch", 1: "tokens"},
                                        "embedding": {0: "batch"}})
    graph = ops(path)
    assert graph.count("Attention") == len(net.transformer.resblocks)
    assert "Softmax" not in graph and "Trilu" not in graph  # the mask is the kernel's
    with torch.no_grad():
        expected = runtime.normalised(net.encode_text(padded).numpy())
    session = runtime.open_session(path, 1)
    one_by_one = np.concatenate([session.run(None, {"input": r})[0] for r in rows_of(padded)])
    batch = session.run(None, {"input": longest.numpy()})[0]  # zero-padded after eot
    assert np.abs(runtime.normalised(one_by_one) - expected).max() <= export.FP32_TOLERANCE
    assert np.abs(runtime.normalised(batch) - expected).max() <= export.FP32_TOLERANCE

    # int8: QAttention for each attention; the output projections in fp32 unless asked
    for out_proj in (False, True):
        int8 = tmp_path / f"int8-{out_proj}.onnx"
        quantize(path, int8, out_proj=out_proj)
        graph = ops(int8)
        assert graph.count("QAttention") == len(net.transformer.resblocks)
        # fc and proj of each block, and the output projections when asked: MatMulInteger;
        # the final projection stays a MatMul (fp32)
        per_block = 3 if out_proj else 2
        assert graph.count("MatMulInteger") == per_block * len(net.transformer.resblocks)
        got = runtime.run_once(int8, rows_of(padded)[0])
        assert export.cosines(got, expected[:1])[0] > 0.9  # a tiny random net: behaviour only


def test_output_projections_are_found_in_both_graphs(tiny, tmp_path):
    """By name in the plain graph (format 2), by what they read in the fused one."""
    import onnx

    net, tokenizer = tiny
    ids = tokenizer(TEXTS)[:, :12]
    found = {}
    for fused in (False, True):
        path = tmp_path / f"{fused}.onnx"
        with torch.enable_grad():
            torch.onnx.export(trimmed_text_tower(net, fused=fused), (ids,), str(path),
                              input_names=["input"], output_names=["embedding"],
                              dynamo=False, opset_version=export.OPSET,
                              dynamic_axes={"input": {0: "batch", 1: "tokens"}})
        graph = onnx.load(str(path)).graph
        found[fused] = (len(weight_matmuls(graph)), len(weight_matmuls(graph, out_proj=True)))
    layers = len(net.transformer.resblocks)
    # plain: in_proj, fc, proj per block (+ out_proj); fused: fc, proj (+ out_proj)
    assert found[False] == (3 * layers, 4 * layers)
    assert found[True] == (2 * layers, 3 * layers)


@pytest.mark.parametrize("bar, kept", [(0.0, True), (1.01, False)])
def test_output_projections_stay_int8_only_where_the_check_keeps_the_bar(
        tiny, tmp_path, monkeypatch, bar, kept):
    """The export quantises them first and checks; below the bar it quantises again
    without them (format 2's scheme), and records which it kept and its cosine."""
    net, tokenizer = tiny
    monkeypatch.setattr(export, "ACCURACY_BAR", bar)
    steps: list[str] = []
    tower = export._text(net, tokenizer, tmp_path, steps.append, {})
    assert tower["graph"] == "fused" and tower["input"] == "trimmed"
    assert tower["int8"]["out_proj"] is kept
    assert steps == ["exporting the text tower to ONNX", "checking the text tower against torch",
                     "quantising the text tower to int8"]
    assert export.choose(tower, "auto")[0] == ("int8" if bar <= 0.99 else "fp32")
    graph = ops(tmp_path / tower["int8"]["file"])
    layers = len(net.transformer.resblocks)
    assert graph.count("MatMulInteger") == (3 if kept else 2) * layers


def test_format_2_text_tower_is_still_made_on_request(tiny, tmp_path):
    """``fused=False``: the plain graph, output projections in fp32 (the benchmark's
    "before" rows)."""
    net, tokenizer = tiny
    tower = export._text(net, tokenizer, tmp_path, lambda what: None, {}, fused=False)
    assert tower["graph"] == "plain" and tower["int8"]["out_proj"] is False
    assert "Attention" not in ops(tmp_path / tower["fp32"]["file"])
