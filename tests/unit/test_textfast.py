"""Trimmed text encoding equals open_clip's own encode_text, and falls back where it must."""

import numpy as np
import pytest
import torch

from clipsql.model import ClipModel

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
