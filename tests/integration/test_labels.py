"""Zero-shot labels on real PostgreSQL: probabilities against an independent open_clip +
numpy reference, incremental stored results, SQL functions, flags, label search."""

import numpy as np
import pytest

import clipsql
from clipsql.errors import EmptyCollectionError, LabelError, QueryError
from clipsql.models.openclip import ModelSpec
from clipsql.query import zeroshot
from tests.integration.test_duplicates import scene
from tests.integration.test_models_multilingual_siglip import stored_images

LABELS = ["cat", "dog", "car", "a screenshot"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "art of the {}."]


@pytest.fixture
def labelled(tmp_path):
    """A folder per label, three PNG scenes each (PNG: no JPEG draft decoding)."""
    root = tmp_path / "labelled"
    for i, name in enumerate(["cat", "dog", "car", "screenshot"]):
        for j in range(3):
            scene(root / name / f"{name}{j}.png", seed=10 * i + j)
    return root


def reference(tiny_model, paths, labels, templates, stored=None):
    """Probabilities computed directly with open_clip and numpy, nothing from clipsql but, if
    given, the ``stored`` image embeddings (the engine's: its accuracy against open_clip is
    tests/integration/test_engine.py's; here the label arithmetic is checked)."""
    import open_clip
    import torch
    from PIL import Image

    spec = ModelSpec.parse(tiny_model)
    model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=spec.pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(spec.arch)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        img = model.encode_image(pixels).numpy() if stored is None else np.array(stored)
        txt = model.encode_text(tokenizer([t.format(lb) for lb in labels for t in templates])).numpy()
        scale = model.logit_scale.exp().item()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    cls = txt.reshape(len(labels), len(templates), -1).mean(axis=1)
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    logits = scale * img @ cls.T
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_probabilities_sum_to_one_and_match_open_clip(dsn, labelled, tiny_model):
    with clipsql.connect(dsn, model=tiny_model) as db:
        check_probabilities(db, labelled, tiny_model)


def check_probabilities(db, labelled, tiny_model):
    db.load(labelled)
    db.add_labels(LABELS, templates=TEMPLATES)
    result = db.classify("default", top=None)
    assert result.computed == 12 and result.labels == LABELS
    full = np.zeros((12, len(LABELS)))
    for row, (idx, prob) in enumerate(zip(result.top_index, result.top_probability)):
        full[row, idx] = prob
    assert np.allclose(full.sum(axis=1), 1, atol=1e-5)
    ref = reference(tiny_model, result.paths, LABELS, TEMPLATES, stored_images(db, result.paths))
    # Embeddings are stored as halfvec (about 3 decimal digits); measured max difference 2.5e-4.
    assert np.abs(full - ref).max() < 2e-3, np.abs(full - ref).max()
    best = db.classify("default", top=1)
    assert [r.labels[0][0] for r in best] == [LABELS[i] for i in full.argmax(axis=1)]
    # An ad-hoc list (embedded now, not stored) gives the same answer.
    adhoc = db.classify(LABELS, templates=TEMPLATES, top=None)
    assert np.allclose(adhoc.top_probability.sum(axis=1), 1, atol=1e-5)
    assert [r.labels[0][0] for r in adhoc] == [r.labels[0][0] for r in best]


def test_sql_functions_match_python(db, labelled):
    db.load(labelled)
    db.add_labels(LABELS)
    result = db.classify(top=None)
    sql = {(i, lb): p for i, lb, p in db.conn.execute(
        "SELECT i.id, p.label, p.probability FROM clipsql.images i, "
        "clipsql.label_probabilities(i.embedding) p").fetchall()}
    for r in result:
        for label, p in r.labels:
            assert sql[(r.id, label)] == pytest.approx(p, abs=2e-4)
    best = dict(db.conn.execute("SELECT i.id, b.label FROM clipsql.images i, "
                                "clipsql.best_label(i.embedding, 'default') b").fetchall())
    assert best == {r.id: r.labels[0][0] for r in result}
    hits = db.label_search("dog", limit=5)
    rows = db.conn.execute("SELECT id, path, score FROM clipsql.label_images('dog', 5)").fetchall()
    assert [h.id for h in hits] == [r[0] for r in rows]
    assert np.allclose([h.score for h in hits], [r[2] for r in rows], atol=1e-4)
    import psycopg

    with pytest.raises(psycopg.errors.RaiseException, match="no label 'horse'"):
        db.conn.execute("SELECT * FROM clipsql.label_images('horse', 5)")


def test_label_search_ranks_by_the_label_embedding(db, labelled):
    db.load(labelled)
    db.add_labels(["cat", "dog"], label_set="pets")
    vec = db.conn.execute("SELECT embedding FROM clipsql.labels WHERE set_name = 'pets' AND label = 'dog'"
                          ).fetchone()[0].to_numpy().astype(np.float32)
    rows = db.conn.execute("SELECT id, embedding FROM clipsql.images").fetchall()
    emb = np.stack([r[1].to_numpy().astype(np.float32) for r in rows])
    scores = emb @ vec / np.linalg.norm(emb, axis=1) / np.linalg.norm(vec)
    expected = [rows[i][0] for i in np.argsort(-scores, kind="stable")[:4]]
    hits = db.label_search("dog", "pets", limit=4)
    assert [h.id for h in hits] == expected
    assert db.label_search("dog", "pets", where="path LIKE %s", params=["%/cat/%"], limit=10)[0].path.count("/cat/")
    with pytest.raises(LabelError, match="no label 'horse'"):
        db.label_search("horse", "pets")


def count_stored(db):
    return db.conn.execute("SELECT count(*) FROM clipsql.image_labels").fetchone()[0]


def test_stored_labels_update_incrementally(db, labelled, tmp_path):
    more = tmp_path / "more"
    scene(more / "extra1.png", 100)
    scene(more / "extra2.png", 101)
    db.load(labelled)
    db.add_labels(LABELS)
    first = db.classify(store=True)
    assert (first.computed, first.skipped) == (12, 0) and count_stored(db) == 12
    again = db.classify(store=True)
    assert (again.computed, again.skipped) == (0, 12)

    db.load(more)
    after = db.classify(store=True)
    assert (after.computed, after.skipped) == (2, 12)
    assert sorted(r.path.rsplit("/", 1)[1] for r in after) == ["extra1.png", "extra2.png"]
    assert count_stored(db) == 14
    # Stored rows agree with a fresh computation and are joinable from SQL.
    fresh = {r.id: r.labels[0] for r in db.classify(top=1)}
    stored = db.conn.execute("SELECT id, label, probability, rank, version FROM clipsql.image_labels").fetchall()
    for image, label, p, rank, _version in stored:
        assert (label, rank) == (fresh[image][0], 1) and p == pytest.approx(fresh[image][1], abs=1e-6)
    top_label = stored[0][1]
    joined = db.conn.execute("SELECT path FROM clipsql.images JOIN clipsql.image_labels USING (id) "
                             "WHERE label = %s AND probability > 0", (top_label,)).fetchall()
    assert len(joined) == sum(1 for s in stored if s[1] == top_label)

    # A changed file is recomputed alone; asking for more ranks recomputes what lacks them.
    scene(more / "extra1.png", 555)
    db.load(more)
    assert db.classify(store=True).computed == 1
    assert db.classify(store=True, top=2).computed == 14 and count_stored(db) == 28
    assert db.classify(store=True, top=1).computed == 0
    # Changing the set invalidates its stored results (version bump), then all are recomputed.
    version = db.label_sets()[0]["version"]
    db.add_labels(["a horse"])
    assert count_stored(db) == 0 and db.label_sets()[0]["version"] > version
    assert db.classify(store=True).computed == 14
    # Deleting an image deletes its stored labels.
    db.conn.execute("DELETE FROM clipsql.images WHERE path LIKE %s", ("%extra2.png",))
    assert count_stored(db) == 13


def test_where_filter_and_read_only(db, labelled):
    db.load(labelled)
    db.add_labels(LABELS)
    some = db.classify(where="path LIKE %s", params=["%/dog/%"])
    assert len(some) == 3 and all("/dog/" in r.path for r in some)
    stored = db.classify(where="path LIKE %s", params=["%/car/%"], store=True)
    assert (stored.computed, stored.skipped) == (3, 0) and count_stored(db) == 3
    with pytest.raises(QueryError, match="read-only"):
        db.classify(where="id = nextval('clipsql.images_id_seq')", store=True)
    with pytest.raises(QueryError):
        db.classify(where="nonexistent_column = 1")
    assert count_stored(db) == 3 and len(db.classify()) == 12


def test_label_set_management_and_errors(db, labelled):
    db.add_labels(["cat"])  # labels can be added before the first load...
    with pytest.raises(EmptyCollectionError):
        db.classify()  # ...but there is nothing to classify yet
    db.load(labelled)
    with pytest.raises(LabelError, match="no label set 'nope'"):
        db.classify("nope")
    with pytest.raises(LabelError, match="named label set"):
        db.classify(["cat", "dog"], store=True)
    with pytest.raises(LabelError, match="template"):
        db.add_labels(["x"], label_set="t", templates=["no placeholder"])
    with pytest.raises(LabelError, match="top"):
        db.classify(top=-1)
    db.add_labels(["dog", "car"], label_set="default")
    sets = {s["name"]: s for s in db.label_sets()}
    assert sets["default"]["labels"] == ["cat", "dog", "car"]
    assert sets["default"]["templates"] == ["a photo of a {}."]
    assert "t" not in sets  # the failed add wrote nothing
    db.add_labels(["cat"], templates=["a drawing of a {}."])  # new templates re-embed all labels
    assert db.label_sets()[0]["templates"] == ["a drawing of a {}."]
    assert db.remove_labels(["car"]) == 1
    with pytest.raises(LabelError, match="no label 'car'"):
        db.remove_labels(["car"])
    assert db.remove_labels(None) == 2 and db.label_sets() == []


def test_flag_uses_a_neutral_class(db, labelled, tiny_model):
    db.load(labelled)
    ls = db.add_labels(["weapons"], label_set="safety")
    # Alone in its softmax, a single label has probability 1 for every image: all flagged.
    alone = zeroshot.flag(db.conn, ls, 0.99, neutral=None)
    assert len(alone) == 12
    # With the neutral background class, only images closer to the label than to "a photo"
    # pass; check against the joint softmax computed here.
    neutral = zeroshot.neutral_embedding(db.model)
    rows = db.conn.execute("SELECT id, embedding FROM clipsql.images").fetchall()
    emb = np.stack([r[1].to_numpy().astype(np.float32) for r in rows])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    logits = ls.logit_scale * emb @ np.vstack([ls.embeddings, neutral]).T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True))[:, 0]
    threshold = float(np.median(p))
    expected = {rows[i][0] for i in np.nonzero(p >= threshold)[0]}
    flagged = db.flag("safety", threshold)
    assert {f.id for f in flagged} == expected and 0 < len(expected) < 12
    assert all(f.labels[0][0] == "weapons" and f.labels[0][1] >= threshold for f in flagged)
    with pytest.raises(LabelError, match="threshold"):
        db.flag("safety", 1.5)
