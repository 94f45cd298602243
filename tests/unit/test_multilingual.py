"""Multilingual (Hugging Face text tower) and SigLIP-like models, built here from nothing:
a tokenizer trained on a few English, Japanese, Russian and Spanish sentences, a tiny
random XLM-RoBERTa text model, open_clip configs that name both as local folders, and
checkpoints loaded back through open_clip's ``pretrained=<file>`` path. Also: the offline
error for a hub model whose parts are not cached, and the SigLIP probability rule.

``hf_models`` is shared with tests/integration/test_models_multilingual_siglip.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from clipsql.errors import ModelError
from clipsql.models import hub
from clipsql.models.openclip import ClipModel
from clipsql.query.label_sets import LabelSet, probabilities, sigmoid, softmax

CORPUS = [
    "two dogs playing in the snow", "a photo of a cat", "a red car on the street",
    "a sunset over the sea", "children on a beach", "a plate of food on a table",
    "雪の中で遊ぶ2匹の犬", "猫の写真", "通りの赤い車", "海に沈む夕日", "浜辺の子供たち",
    "две собаки играют в снегу", "фотография кошки", "красная машина на улице",
    "закат над морем", "дети на пляже",
    "dos perros jugando en la nieve", "una foto de un gato", "un coche rojo en la calle",
    "una puesta de sol sobre el mar", "niños en la playa",
]
QUERIES = {"ja": "雪の中で遊ぶ2匹の犬", "ru": "две собаки играют в снегу",
           "en": "two dogs playing in the snow", "es": "dos perros jugando en la nieve"}
EMBED_DIM = 32
VISION = {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32}


def train_tokenizer(specials: list[str], template: str):
    """A SentencePiece-style Unigram tokenizer (NFKC, metaspace) trained on ``CORPUS``."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS * 3, trainers.UnigramTrainer(
        vocab_size=400, special_tokens=specials, unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, tok.token_to_id(s)) for s in specials if s in template])
    return tok


def build_xlmr(folder) -> dict:
    """A tiny XLM-RoBERTa tokenizer + config in ``folder``; the open_clip config naming it."""
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    tok = train_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>")
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    fast.save_pretrained(folder)
    # Only the config is needed: clipsql builds the tower from it, the checkpoint has the weights.
    XLMRobertaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=40, pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id).save_pretrained(folder)
    return {"embed_dim": EMBED_DIM, "vision_cfg": VISION,
            "text_cfg": {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder),
                         "hf_model_pretrained": False, "hf_pooler_type": "mean_pooler",
                         "hf_proj_type": "mlp", "context_length": 32}}


def build_siglip(folder) -> dict:
    """A T5-style tokenizer (pad 0, eos appended) in ``folder``; a SigLIP-like open_clip config."""
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>")
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    return {"embed_dim": EMBED_DIM, "init_logit_bias": -10, "init_logit_scale": float(np.log(10)),
            "custom_text": True, "vision_cfg": VISION,
            "text_cfg": {"context_length": 32, "vocab_size": tok.get_vocab_size(),
                         "hf_tokenizer_name": str(folder),
                         "tokenizer_kwargs": {"clean": "canonicalize"},
                         "width": 64, "heads": 2, "layers": 2, "no_causal_mask": True,
                         "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}}


@pytest.fixture(scope="session")
def hf_models(model_configs, tmp_path_factory):
    """``{"xlmr": spec, "siglip": spec}``: tiny random checkpoints of both architectures."""
    import open_clip

    root = tmp_path_factory.mktemp("hf-models")
    specs = {}
    for kind, build in (("xlmr", build_xlmr), ("siglip", build_siglip)):
        cfg = build(root / f"{kind}-hf")
        arch = f"clipsql-tiny-{kind}"
        (model_configs / f"{arch}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(model_configs)
        torch.manual_seed(3)
        # pretrained_text=False: the HF text tower from its config alone (the folder has no weights)
        torch.save(open_clip.create_model(arch, pretrained_text=False).state_dict(), root / f"{kind}.pt")
        specs[kind] = f"{arch}/{root / f'{kind}.pt'}"
    return specs


@pytest.fixture(scope="module")
def models(hf_models):
    return {kind: ClipModel(spec) for kind, spec in hf_models.items()}


def reference(model: ClipModel, texts):
    with torch.inference_mode():
        out = model.torch_model.encode_text(model.tokenizer(texts))
    return torch.nn.functional.normalize(out.float(), dim=-1).numpy()


@pytest.mark.parametrize("kind", ["xlmr", "siglip"])
def test_queries_in_four_languages_go_through_the_real_tokenizer(models, kind):
    from open_clip.tokenizer import HFTokenizer

    model = models[kind]
    assert isinstance(model.tokenizer, HFTokenizer)
    hf = model.tokenizer.tokenizer
    rows = {lang: [t for t in model.tokenizer([q])[0].tolist() if t != hf.pad_token_id]
            for lang, q in QUERIES.items()}
    assert len({tuple(r) for r in rows.values()}) == len(QUERIES)  # every language differs
    for lang, ids in rows.items():
        words = [t for t in ids if t not in hf.all_special_ids]
        assert len(words) >= 3, (lang, ids)
        assert hf.unk_token_id not in words, (lang, hf.convert_ids_to_tokens(ids))
        # the pieces are the query's own (no unknowns): decoding gives it back
        assert hf.decode(ids, skip_special_tokens=True) == QUERIES[lang]


@pytest.mark.parametrize("kind", ["xlmr", "siglip"])
def test_hugging_face_text_towers_run_on_the_engine(models, kind, tmp_path, monkeypatch):
    """Towers without a causal mask (SigLIP) or from Hugging Face (XLM-RoBERTa) are exported
    at their context length and take open_clip's own tokenizer's padded ids."""
    from clipsql.models import export

    monkeypatch.setenv("CLIPSQL_CACHE", str(tmp_path / "cache"))
    model = ClipModel(models[kind].spec)  # fresh: nothing exported for it yet
    texts = list(QUERIES.values())
    out = model.encode_text(texts)
    meta = export.read(model.export_folder)
    assert meta["text"]["input"] == "padded" and meta["text"]["tokenizer"] == "open_clip"
    assert model.engine.text_backend.startswith("onnx-"), meta["text"]
    assert out.shape == (4, EMBED_DIM) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    ref = reference(models[kind], texts)
    assert export.cosines(out, ref).min() >= export.ACCURACY_BAR
    assert np.abs(model.encode_text(texts, fp32=True) - ref).max() <= 1e-4
    assert np.array_equal(out, model.encode_text(texts))  # deterministic


def test_logit_scale_and_bias_come_from_the_model(models):
    assert models["xlmr"].logit_bias is None
    assert models["siglip"].logit_bias == pytest.approx(-10)
    assert models["siglip"].logit_scale == pytest.approx(10, rel=1e-5)
    assert models["xlmr"].logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_probabilities_softmax_and_sigmoid_against_numpy():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(7, 16)).astype(np.float32)
    labels = rng.normal(size=(5, 16)).astype(np.float32)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    cos = (images / np.linalg.norm(images, axis=1, keepdims=True) @ labels.T).astype(np.float64)
    clip = LabelSet("s", list("abcde"), ["{}"], labels, 100.0, "m")
    e = np.exp(100 * cos - (100 * cos).max(axis=1, keepdims=True))
    assert np.allclose(probabilities(images, clip), e / e.sum(axis=1, keepdims=True), atol=1e-6)
    siglip = LabelSet("s", list("abcde"), ["{}"], labels, 117.3, "m", logit_bias=-12.9)
    assert np.allclose(probabilities(images, siglip), 1 / (1 + np.exp(-(117.3 * cos - 12.9))), atol=1e-6)
    # Per label: one label's probability does not depend on the others.
    alone = LabelSet("s", ["a"], ["{}"], labels[:1], 117.3, "m", logit_bias=-12.9)
    assert np.allclose(probabilities(images, alone)[:, 0], probabilities(images, siglip)[:, 0])
    assert np.allclose(softmax(np.zeros((1, 4))), 0.25)
    with np.errstate(over="raise", invalid="raise"):  # no overflow at the extremes
        assert sigmoid(np.array([-1e4, 0, 1e4])).tolist() == [0.0, 0.5, 1.0]


def test_hub_parts_and_paths(tmp_path):
    assert hub.looks_like_path("/models/tok") and hub.looks_like_path("./tok")
    assert not hub.looks_like_path("xlm-roberta-base") and not hub.looks_like_path("timm/ViT-B-16-SigLIP")
    cfg = {"text_cfg": {"hf_tokenizer_name": str(tmp_path / "missing")}}
    with pytest.raises(ModelError, match="tokenizer folder of arch.*does not exist"):
        hub.check("arch", cfg)
    hub.check("arch", {"text_cfg": {"hf_tokenizer_name": str(tmp_path)}})  # a folder: fine
    hub.check("arch", {"text_cfg": {"width": 64}})  # nothing from the hub


OFFLINE_SCRIPT = textwrap.dedent("""
    import sys, time
    from clipsql.errors import ModelError
    from clipsql.models.openclip import ClipModel
    started = time.perf_counter()
    try:
        ClipModel(sys.argv[1]).encode_text(["two dogs playing in the snow"])
    except ModelError as exc:
        print(f"{time.perf_counter() - started:.3f}")
        print(exc)
    else:
        print("no error")
    print("torch imported" if "torch" in sys.modules else "torch not imported")
""")


@pytest.mark.parametrize("spec", ["xlm-roberta-base-ViT-B-32", "ViT-B-16-SigLIP2",
                                  "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"])
def test_offline_hub_parts_fail_fast_with_one_clear_error(spec, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CLIPSQL_MODEL"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), CLIPSQL_HOME=str(tmp_path / "home"))
    (tmp_path / "hf").mkdir()
    run = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, spec], env=env, capture_output=True,
                         text=True, timeout=120)
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and len(lines) == 3, run.stdout + run.stderr
    _seconds, message, imported = lines
    arch = spec.split("/")[0]
    # fast on any machine by construction, so not timed here (a bound of seconds fails on a
    # busy one): the check comes before the heavy imports (torch not imported, below) and
    # fails offline at once, with no download tried
    assert message.startswith("the ") and f" of {arch} (hf: " in message, message
    assert "not in the local Hugging Face cache and cannot be downloaded" in message
    assert "text_cfg.hf_tokenizer_name" in message and "CLIPSQL_MODEL_CONFIGS" in message
    assert "HF_HUB_OFFLINE" in message
    if arch.startswith("xlm"):
        assert "(hf: xlm-roberta-base)" in message and "text_cfg.hf_model_name" in message
    else:
        assert "(hf: timm/ViT-B-16-SigLIP2)" in message and "the tokenizer of" in message
    assert imported == "torch not imported"  # the check comes before the heavy imports
    assert "Traceback" not in run.stderr
