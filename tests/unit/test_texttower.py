"""The exported numpy text tower equals open_clip's encode_text, and is only used when valid."""

import json
import sys

import numpy as np
import pytest
import torch
from test_textfast import QUERIES, generated_queries

from clipsql.models import text_numpy as texttower
from clipsql.models.openclip import ClipModel


def reference(model: ClipModel, texts):
    """open_clip's own encode_text over the full padded context."""
    with torch.inference_mode():
        out = model.torch_model.encode_text(model.tokenizer(texts))
    return torch.nn.functional.normalize(out.float(), dim=-1).numpy()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSQL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def exported(spec, queries):
    """A loaded model that has embedded text (and so exported its tower), and a fresh one."""
    loaded = ClipModel(spec)
    loaded.encode_text(queries[:1])
    fresh = ClipModel(spec)
    return loaded, fresh


def test_tiny_model_export_matches_open_clip(tiny_model, home):
    loaded, fresh = exported(tiny_model, QUERIES)
    assert (home / "cache" / "text").is_dir()
    queries = QUERIES + generated_queries(200)
    out = fresh.encode_text(queries)
    assert fresh.last_text_path == "exported" and fresh._loaded is None  # no model loaded
    assert np.abs(out - reference(loaded, queries)).max() <= 1e-4


@pytest.mark.slow
def test_vitb32_export_matches_open_clip(vitb32_model, home):
    loaded, fresh = exported(vitb32_model, QUERIES)
    queries = QUERIES + generated_queries(100, seed=3)
    out = np.concatenate([fresh.encode_text([q]) for q in queries[:20]] + [fresh.encode_text(queries[20:])])
    assert fresh.last_text_path == "exported" and fresh._loaded is None
    assert np.abs(out - reference(loaded, queries)).max() <= 1e-4


def test_an_export_that_fails_its_check_is_not_used(tiny_model, home):
    loaded, _ = exported(tiny_model, QUERIES)
    (folder,) = (home / "cache" / "text").iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    meta["reference"]["embeddings"][0][0] += 0.01  # as if the weights did not match
    (folder / "meta.json").write_text(json.dumps(meta))
    fresh = ClipModel(tiny_model)
    out = fresh.encode_text(["a dog"])
    assert fresh.last_text_path == "trimmed"  # the full model answered
    assert np.abs(out - reference(loaded, ["a dog"])).max() <= 1e-4


def test_truncated_weights_are_not_used(tiny_model, home):
    exported(tiny_model, QUERIES)
    (folder,) = (home / "cache" / "text").iterdir()
    data = (folder / "weights.f32").read_bytes()
    (folder / "weights.f32").write_bytes(data[: len(data) // 2])
    assert texttower.TextTower.open(folder) is None


def test_random_weights_are_never_exported(model_configs, home):
    model = ClipModel("clipsql-tiny")  # no checkpoint: new random weights in every process
    model.encode_text(["a dog"])
    assert not (home / "cache").exists()


def test_towers_it_cannot_reproduce_are_not_exported(model_configs, tmp_path, home):
    import open_clip

    cfg = json.loads((model_configs / "clipsql-tiny.json").read_text())
    cfg["text_cfg"]["no_causal_mask"] = True
    cfg["text_cfg"]["pool_type"] = "last"
    (tmp_path / "clipsql-tiny-nocausal2.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("clipsql-tiny-nocausal2").state_dict(), tmp_path / "nc.pt")
    model = ClipModel(f"clipsql-tiny-nocausal2/{tmp_path / 'nc.pt'}")
    model.encode_text(["a dog"])
    assert model.last_text_path == "full" and not (home / "cache").exists()


def test_quick_gelu_and_layer_scale_towers(model_configs, tmp_path, home):
    import open_clip

    cfg = json.loads((model_configs / "clipsql-tiny.json").read_text())
    cfg["quick_gelu"] = True
    cfg["text_cfg"]["ls_init_value"] = 0.5
    (tmp_path / "clipsql-tiny-qg.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("clipsql-tiny-qg").state_dict(), tmp_path / "qg.pt")
    loaded, fresh = exported(f"clipsql-tiny-qg/{tmp_path / 'qg.pt'}", QUERIES)
    out = fresh.encode_text(QUERIES)
    assert fresh.last_text_path == "exported"
    assert np.abs(out - reference(loaded, QUERIES)).max() <= 1e-4


def test_the_exported_path_imports_neither_torch_nor_open_clip(tiny_model, home):
    import subprocess

    exported(tiny_model, QUERIES)
    code = ("import json, sys\nfrom clipsql.models.openclip import ClipModel\n"
            f"m = ClipModel({tiny_model!r})\nv = m.encode_text(['a dog'])\n"
            "print(json.dumps({'path': m.last_text_path, 'dim': v.shape[1],"
            " 'heavy': sorted(k for k in ('torch', 'open_clip') if k in sys.modules)}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "CLIPSQL_HOME": str(home)})
    assert json.loads(proc.stdout.splitlines()[-1]) == {"path": "exported", "dim": 32, "heavy": []}


def test_a_home_that_cannot_be_written_only_skips_the_export(tiny_model, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the home folder should be")
    monkeypatch.setenv("CLIPSQL_HOME", str(blocker))
    model = ClipModel(tiny_model)
    out = model.encode_text(["a dog"])
    assert model.last_text_path == "trimmed" and out.shape == (1, 32)
    assert ClipModel(tiny_model).encode_text(["a dog"]).shape == (1, 32)  # no export: full model
