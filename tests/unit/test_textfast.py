"""Trimmed text encoding equals open_clip's own encode_text, and falls back where it must."""

import numpy as np
import pytest
import torch

from clipsql.models.openclip import ClipModel

QUERIES = [
    "a dog", "two dogs playing in the snow", "a red bicycle leaning on a wall",
    "a scanned invoice with a company logo", "sunset over the sea near a lighthouse in Brittany",
    "screenshot", "a photo of a cat sleeping on a keyboard next to a cup of coffee",
    "the Eiffel tower at night", "émigré café ☕ naïve", "", "a " * 40,
    "children building a sandcastle on a sunny beach with umbrellas and boats in the distance",
]


def reference(model: ClipModel, texts):
    m = model.torch_model
    with torch.inference_mode():
        out = m.encode_text(model.tokenizer(texts))
    return torch.nn.functional.normalize(out.float(), dim=-1).numpy()


@pytest.fixture(scope="module")
def vitb32():
    """Full ViT-B-32 architecture, random weights (no checkpoint needed for this comparison)."""
    torch.manual_seed(0)
    return ClipModel("ViT-B-32")


def test_trimmed_equals_full_encode_text(vitb32):
    fast = vitb32.encode_text(QUERIES)
    assert vitb32.last_text_path == "trimmed"
    assert np.abs(fast - reference(vitb32, QUERIES)).max() <= 1e-4
    for q in QUERIES[:6]:  # one at a time too: each batch trims to its own longest query
        assert np.abs(vitb32.encode_text([q]) - reference(vitb32, [q])).max() <= 1e-4


def test_models_without_causal_mask_fall_back(model_configs, tmp_path):
    import json

    cfg = json.loads((model_configs / "clipsql-tiny.json").read_text())
    cfg["text_cfg"]["no_causal_mask"] = True
    cfg["text_cfg"]["pool_type"] = "last"
    (tmp_path / "clipsql-tiny-nocausal.json").write_text(json.dumps(cfg))
    import open_clip

    open_clip.add_model_config(tmp_path)
    model = ClipModel("clipsql-tiny-nocausal")
    out = model.encode_text(QUERIES[:3])
    assert model.last_text_path == "full"
    assert np.abs(out - reference(model, QUERIES[:3])).max() <= 1e-6


def generated_queries(n, seed=0):
    import random

    words = ["dog", "cat", "red", "blue", "old", "young", "photo", "of", "a", "the", "with", "in", "on", "at", "near", "under", "two", "snow", "beach", "city", "night", "street", "car", "bicycle", "mountain", "lake", "café", "naïve", "1999", "#tag", "U.S.A.", "don't", "❤️"]
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def test_packed_blocks_equal_encode_text_over_many_queries(vitb32):
    from clipsql.models import text_torch as textfast

    m = vitb32.torch_model
    if textfast.packed_blocks(m) is None:
        pytest.skip("this torch build has no oneDNN: the packed path cannot run here")
    queries = generated_queries(120)
    tokens = vitb32.tokenizer(queries)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(m.encode_text(tokens), dim=-1)
        packed = torch.nn.functional.normalize(textfast.encode_trimmed(m, tokens), dim=-1)
        plain = torch.nn.functional.normalize(textfast.encode_trimmed(m, tokens, packed=False), dim=-1)
    assert (packed - ref).abs().max().item() <= 1e-4
    assert (plain - ref).abs().max().item() <= 1e-4
    for q in queries[:20]:  # the way searches call it: one short query, one thread
        assert np.abs(vitb32.encode_text([q]) - reference(vitb32, [q])).max() <= 1e-4


def test_short_queries_run_single_threaded_and_restore_the_thread_count(vitb32, monkeypatch):
    from clipsql.models import text_torch as textfast

    if textfast.packed_blocks(vitb32.torch_model) is None:
        pytest.skip("no oneDNN")
    seen = []
    real = textfast._block
    monkeypatch.setattr(textfast, "_block", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    torch.set_num_threads(2)
    vitb32.encode_text(["two dogs in snow"])
    assert set(seen) == {1} and torch.get_num_threads() == 2
    seen.clear()
    vitb32.encode_text(generated_queries(64))  # a large batch keeps every thread
    assert set(seen) == {2}


def test_unusual_blocks_keep_the_trimmed_path_through_open_clip(vitb32, monkeypatch):
    from clipsql.models import text_torch as textfast

    calls = []
    monkeypatch.setattr(textfast, "_block", lambda *a: calls.append(1))
    monkeypatch.setattr(textfast, "_PACKED", textfast.weakref.WeakKeyDictionary())
    monkeypatch.setattr(textfast, "_pack_block", lambda block: None)  # e.g. a layer-scaled block
    out = vitb32.encode_text(QUERIES[:3])
    assert vitb32.last_text_path == "trimmed" and not calls
    assert np.abs(out - reference(vitb32, QUERIES[:3])).max() <= 1e-4
