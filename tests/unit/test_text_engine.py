"""The text tower as export format 4 writes it: each attention one fused, causal ONNX Runtime
``Attention`` node (``QAttention`` in int8), the attentions' output projections quantised
only where the check keeps the bar, the last block past its attention on the end-of-text
token only, one export for every token count. A tiny open_clip CLIP
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


def test_the_last_block_on_the_end_of_text_token_gives_format_3s_embeddings(tiny, tmp_path):
    """Format 4 runs the last block's output projection and MLP on the pooled token only:
    the same embeddings as format 3's graph (every token through every block), one text at
    a time and as a zero-padded batch; the last block's fc reads one row a text."""
    import onnxruntime as ort

    net, tokenizer = tiny
    padded = tokenizer(TEXTS)
    longest = padded[:, :int(padded.argmax(-1).max()) + 1]
    got = {}
    for last_token in (False, True):
        path = tmp_path / f"{last_token}.onnx"
        with torch.enable_grad():
            torch.onnx.export(trimmed_text_tower(net, fused=True, last_token=last_token),
                              (longest,), str(path), input_names=["input"],
                              output_names=["embedding"], dynamo=False,
                              opset_version=export.OPSET,
                              dynamic_axes={"input": {0: "batch", 1: "tokens"},
                                            "embedding": {0: "batch"}})
        session = runtime.open_session(path, 1)
        got[last_token] = [session.run(None, {"input": longest.numpy()})[0],
                           *[session.run(None, {"input": r})[0] for r in rows_of(padded)]]
        if last_token:  # what the last fc MatMul reads: [batch, 1, width]
            import onnx

            model = onnx.load(str(path))
            fc = [n for n in model.graph.node if n.op_type == "MatMul" and "c_fc" in n.name][-1]
            model.graph.output.append(onnx.helper.make_tensor_value_info(fc.input[0], 1, None))
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            probe = ort.InferenceSession(model.SerializeToString(), options,
                                         providers=["CPUExecutionProvider"])
            assert probe.run(None, {"input": longest.numpy()})[1].shape[:2] == (len(TEXTS), 1)
    for before, after in zip(got[False], got[True]):
        assert np.abs(before - after).max() <= 1e-5


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


def test_a_text_query_takes_two_spinning_threads_only_when_a_core_is_idle(tmp_path, monkeypatch):
    """runtime.text_session: one thread while every core is busy; when one is idle, the
    spinning session, opened in the background (the query meanwhile takes the one-thread
    session and never waits for it); where the count is unknown, the non-spinning default."""
    import threading

    import onnx
    from onnx import TensorProto, helper

    path = tmp_path / "identity.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["embedding"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    monkeypatch.setattr(runtime, "_opening", set())
    monkeypatch.setattr(runtime, "cores", lambda: 2)
    one = runtime.session(path, 1)

    monkeypatch.setattr(runtime, "runnable", lambda: 2)  # both cores busy (the caller's one)
    assert runtime.text_session(path) is one
    assert not runtime._opening

    monkeypatch.setattr(runtime, "runnable", lambda: 1)  # only the caller: a core is idle
    first = runtime.text_session(path)
    for thread in threading.enumerate():
        if thread.name == "clipsql-text-session":
            thread.join()
    spinning = runtime.text_session(path)
    assert first is one and spinning is not one
    assert spinning is runtime.session(path, runtime.TEXT_THREADS, runtime.TEXT_SPIN_US)
    assert spinning.get_session_options().intra_op_num_threads == runtime.TEXT_THREADS
    assert spinning.run(None, {"input": np.ones(1, np.float32)})[0].tolist() == [1.0]

    monkeypatch.setattr(runtime, "runnable", lambda: None)  # not Linux
    assert runtime.text_session(path) is runtime.session(path, runtime.TEXT_THREADS)
    monkeypatch.setattr(runtime, "cores", lambda: 1)
    assert runtime.text_session(path) is one


def test_runnable_counts_at_least_the_caller():
    count = runtime.runnable()
    assert count is None or count >= 1
