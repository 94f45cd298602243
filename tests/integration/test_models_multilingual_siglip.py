"""A multilingual (XLM-RoBERTa text tower) and a SigLIP-like model end to end on real
PostgreSQL: load, search in Japanese, Russian, Spanish and English, zero-shot labels with the
model's own logit scale and bias (Python and the SQL function against an open_clip + numpy
reference), and the web API. The models are built locally by tests/unit/test_multilingual.py.
"""

import httpx
import numpy as np
import pytest

import clipsql
from clipsql.models.spec import ModelSpec
from tests.unit.test_multilingual import QUERIES, hf_models  # noqa: F401  (a fixture)

KINDS = ["xlmr", "siglip"]
LABELS = ["雪の中の犬", "фотография кошки", "un coche rojo", "a sunset over the sea"]
TEMPLATES = ["a photo of a {}.", "{}"]


def stored_images(db, paths):
    """The collection's image embeddings, in ``paths`` order."""
    rows = dict(db.conn.execute("SELECT path, embedding FROM clipsql.images").fetchall())
    return [rows[p].to_numpy() for p in paths]


def reference(spec, paths, labels, templates, stored=None):
    """Probabilities computed directly with open_clip and numpy, nothing from clipsql but, if
    given, the ``stored`` image embeddings (the engine's: its accuracy against open_clip is
    tests/integration/test_engine.py's; here the label arithmetic is checked)."""
    import open_clip
    import torch
    from PIL import Image

    s = ModelSpec.parse(spec)
    model, _, preprocess = open_clip.create_model_and_transforms(s.arch, pretrained=s.pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(s.arch)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        img = (model.encode_image(pixels).double().numpy() if stored is None
               else np.array(stored, np.float64))
        txt = model.encode_text(tokenizer([t.format(lb) for lb in labels for t in templates]))
        txt = txt.double().numpy()
        scale = model.logit_scale.exp().item()
        bias = None if model.logit_bias is None else model.logit_bias.item()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    cls = txt.reshape(len(labels), len(templates), -1).mean(axis=1)
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    logits = scale * img @ cls.T
    if bias is None:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), None
    return 1 / (1 + np.exp(-(logits + bias))), bias


@pytest.fixture(params=KINDS)
def kind_db(request, dsn, hf_models):  # noqa: F811
    with clipsql.connect(dsn, model=hf_models[request.param]) as db:
        yield request.param, db


def test_queries_in_four_languages_rank_the_loaded_folder(kind_db, photo_folder):
    kind, db = kind_db
    assert db.load(photo_folder).added == 12
    stored = dict(db.conn.execute("SELECT id, embedding FROM clipsql.images").fetchall())
    vectors = {}
    for lang, query in QUERIES.items():
        vec = db.embed_text(query)
        assert vec.dtype == np.float32 and abs(np.linalg.norm(vec) - 1) < 1e-5
        assert np.array_equal(vec, db.model.encode_text([query])[0])  # deterministic
        vectors[lang] = vec
        hits = db.search(query, limit=5)
        assert len(hits) == 5, (kind, lang)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        # The ranking is by this query's embedding: the best five by cosine, exactly.
        cos = {i: float(e.to_numpy().astype(np.float32) @ vec) for i, e in stored.items()}
        best = sorted(cos, key=cos.get, reverse=True)[:5]
        assert [h.id for h in hits] == best, (kind, lang)
        assert scores == pytest.approx([cos[i] for i in best], abs=2e-3)
    langs = list(vectors)
    for i, a in enumerate(langs):  # each language is its own embedding
        for b in langs[i + 1:]:
            assert np.abs(vectors[a] - vectors[b]).max() > 1e-3, (a, b)


def test_label_probabilities_use_the_models_scale_and_bias(kind_db, photo_folder, hf_models):  # noqa: F811
    kind, db = kind_db
    db.load(photo_folder)
    db.add_labels(LABELS, label_set="things", templates=TEMPLATES)
    scale, bias, version = db.conn.execute(
        "SELECT logit_scale, logit_bias, version FROM clipsql.label_sets WHERE name = 'things'"
    ).fetchone()
    assert scale == pytest.approx(db.model.logit_scale, rel=1e-6)
    if kind == "siglip":
        assert bias == pytest.approx(-10) and db.model.logit_bias == pytest.approx(-10)
    else:
        assert bias is None and db.model.logit_bias is None

    result = db.classify("things", top=None, store=True)
    full = np.zeros((12, len(LABELS)))
    for row, (idx, prob) in enumerate(zip(result.top_index, result.top_probability)):
        full[row, idx] = prob
    ref, ref_bias = reference(hf_models[kind], result.paths, LABELS, TEMPLATES,
                              stored_images(db, result.paths))
    assert (ref_bias is None) == (bias is None)
    # Relative: the random SigLIP's probabilities are all ~1e-5. halfvec storage of the image
    # and label embeddings moves them by ~1e-3 of their value (measured: 1.3e-3).
    assert np.allclose(full, ref, rtol=1e-2, atol=0), np.abs(full / ref - 1).max()
    if kind == "xlmr":
        assert np.allclose(full.sum(axis=1), 1, atol=1e-5)
    else:  # a sigmoid per label: they need not sum to one (here, random weights, all small)
        assert (full.sum(axis=1) < 0.5).all()
    adhoc = db.classify(LABELS, templates=TEMPLATES, top=None)
    # ad-hoc label vectors are fp32, stored ones halfvec: compare the best label where the
    # stored ranking is clear (random weights give near-ties, ~1e-3 apart, that rounding flips)
    clear = [(a, r) for a, r in zip(adhoc, result)
             if r.labels[0][1] - r.labels[1][1] > 1e-2 * r.labels[0][1]]
    assert clear and all(a.labels[0][0] == r.labels[0][0] for a, r in clear)

    # The SQL function applies the same rule to the stored embeddings.
    sql = {(i, lb): p for i, lb, p in db.conn.execute(
        "SELECT i.id, p.label, p.probability FROM clipsql.images i, "
        "clipsql.label_probabilities(i.embedding, 'things') p").fetchall()}
    for r in result:
        for label, p in r.labels:
            assert sql[(r.id, label)] == pytest.approx(p, rel=1e-3, abs=1e-6), (kind, label)
    best = dict(db.conn.execute("SELECT i.id, b.label FROM clipsql.images i, "
                                "clipsql.best_label(i.embedding, 'things') b").fetchall())
    assert best == {r.id: r.labels[0][0] for r in result}
    stored = db.conn.execute("SELECT count(*) FROM clipsql.image_labels WHERE set_name = 'things'")
    assert stored.fetchone()[0] == 12 * len(LABELS)

    # A changed bias makes the stored results stale, like a changed scale.
    db.conn.execute("UPDATE clipsql.label_sets SET logit_bias = -5 WHERE name = 'things'")
    assert db.conn.execute("SELECT version FROM clipsql.label_sets WHERE name = 'things'"
                           ).fetchone()[0] > version
    assert db.conn.execute("SELECT count(*) FROM clipsql.image_labels WHERE set_name = 'things'"
                           ).fetchone()[0] == 0
    # ... and the SQL function now gives sigmoid(scale * cos - 5) per label, for either model.
    rows = db.conn.execute(
        "SELECT p.label, p.probability, 1 - (l.embedding <=> i.embedding) "
        "FROM clipsql.images i, clipsql.label_probabilities(i.embedding, 'things') p "
        "JOIN clipsql.labels l ON l.set_name = 'things' AND l.label = p.label "
        "WHERE i.id = %s", (result[0].id,)).fetchall()
    assert len(rows) == len(LABELS)
    for label, prob, cos in rows:
        assert prob == pytest.approx(1 / (1 + np.exp(-(scale * cos - 5))), rel=1e-6), label

def test_web_search_in_japanese(dsn, hf_models, photo_folder, tmp_path):  # noqa: F811
    from clipsql.web import create_app, serve_in_thread

    spec = hf_models["siglip"]
    with clipsql.connect(dsn, model=spec) as db:
        db.load(photo_folder)
        expected = [h.id for h in db.search(QUERIES["ja"], limit=4)]
        db.add_labels(LABELS, label_set="default")
        db.classify(top=1, store=True)
    app = create_app(dsn, model=spec, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.get("/api/search", params={"q": QUERIES["ja"], "limit": 4})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == expected
        labels = client.get("/api/labels")
        assert labels.status_code == 200, labels.text
        assert labels.json()["available"] is True
