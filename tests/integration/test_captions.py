"""Captions on real PostgreSQL with a real (tiny, random-weight) CoCa model: incremental and
resumable caption runs, full-text and hybrid rankings against references computed here, the
SQL function, and the CLI."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import kill_once, make_image
from tests.ranking_reference import rrf

#: open_clip's coca_ViT-B-32 config, shrunk: the decoder's width must equal embed_dim and
#: the text tower's width (the image tokens and text tokens feed it directly).
TINY_COCA = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                   "head_width": 32, "attentional_pool": True, "attn_pooler_heads": 2,
                   "attn_pooler_queries": 8, "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2, "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2,
                       "layers": 2, "attn_pooler_heads": 2},
    "custom_text": True,
}


@pytest.fixture(scope="session")
def coca_model(model_configs, tmp_path_factory):
    """Spec of a tiny CoCa checkpoint with random weights, loaded through open_clip's own
    ``pretrained=<file>`` path."""
    import open_clip
    import torch

    (model_configs / "clipsql-tiny-coca.json").write_text(json.dumps(TINY_COCA))
    open_clip.add_model_config(model_configs)
    torch.manual_seed(0)
    model = open_clip.create_model("clipsql-tiny-coca")
    # open_clip starts the decoder's output projection at zero: every logit would tie
    torch.nn.init.normal_(model.text_decoder.text_projection, std=32 ** -0.5)
    path = tmp_path_factory.mktemp("coca") / "tiny-coca.pt"
    torch.save(model.state_dict(), path)
    return f"clipsql-tiny-coca/{path}"


def captions(db):
    return dict(db.conn.execute(
        "SELECT image_id, image_sha256 FROM clipsql.captions ORDER BY 1").fetchall())


def test_captions_are_written_once_and_again_only_for_changed_files(db, photo_folder, coca_model):
    db.load(photo_folder)
    seen = []
    first = db.caption(coca_model, batch_size=5, max_length=8,
                       progress=lambda done, total: seen.append((done, total)))
    assert (first.computed, first.skipped, first.failed) == (12, 0, {})
    assert seen == [(0, 12), (5, 12), (10, 12), (12, 12)]
    rows = db.conn.execute(
        "SELECT c.model, c.caption, c.image_sha256 = i.sha256, c.tsv IS NOT NULL "
        "FROM clipsql.captions c JOIN clipsql.images i ON i.id = c.image_id").fetchall()
    assert len(rows) == 12 and all(r[2] and r[3] for r in rows)
    assert {r[0] for r in rows} == {first.model} and first.model.startswith(
        "clipsql-tiny-coca/file:tiny-coca.pt#")
    assert all(isinstance(r[1], str) for r in rows)

    again = db.caption(coca_model, batch_size=5)
    assert (again.computed, again.skipped) == (0, 12)

    changed = next(photo_folder.rglob("img03.*"))
    touched = next(photo_folder.rglob("img04.*"))
    make_image(changed, color=(1, 2, 3), pattern=9)
    os.utime(touched, (time.time() + 5, time.time() + 5))
    db.load(photo_folder)
    changed_id = db.conn.execute("SELECT id FROM clipsql.images WHERE path = %s",
                                 (str(changed),)).fetchone()[0]
    before = captions(db)
    third = db.caption(coca_model)
    assert (third.computed, third.skipped) == (1, 11)  # the new content only; a touch is not
    after = captions(db)
    assert {k for k in after if after[k] != before[k]} == {changed_id}

    # a filter picks among the images; deleting an image deletes its captions
    db.conn.execute("DELETE FROM clipsql.captions WHERE image_id IN "
                    "(SELECT id FROM clipsql.images WHERE format = 'PNG')")
    png = db.caption(coca_model, where="format = %s", params=["PNG"])
    assert (png.computed, png.skipped) == (2, 0)
    assert db.caption(coca_model, where="format <> 'PNG'").skipped == 10
    db.conn.execute("DELETE FROM clipsql.images WHERE id = %s", (changed_id,))
    assert changed_id not in captions(db) and len(captions(db)) == 11


def test_an_unreadable_file_is_reported_and_tried_again(db, photo_folder, coca_model):
    db.load(photo_folder)
    gone = next(photo_folder.rglob("img07.*"))
    gone.unlink()
    report = db.caption(coca_model, batch_size=4)
    assert report.computed == 11 and report.failed == {str(gone): "vanished"}
    assert db.caption(coca_model).failed == {str(gone): "vanished"}


def test_a_caption_model_must_have_a_text_decoder(db, photo_folder, tiny_model):
    from clipsql.errors import ModelError

    db.load(photo_folder)
    with pytest.raises(ModelError, match="no text decoder"):
        db.caption(tiny_model)


KILLED_RUN = """
import sys, time
import clipsql
with clipsql.connect(sys.argv[1]) as db:
    # a slow model: each one-image batch takes at least 0.4 s
    db.caption(sys.argv[2], batch_size=1, max_length=4,
               progress=lambda done, total: (print(done, flush=True), time.sleep(0.4)))
"""


def test_a_run_killed_mid_way_resumes_where_it_stopped(dsn, db, photo_folder, coca_model):
    db.load(photo_folder)
    kill_once([KILLED_RUN, dsn, coca_model], lambda: len(captions(db)), 3)
    kept = len(captions(db))
    assert 3 <= kept < 12
    report = db.caption(coca_model, max_length=4)
    assert (report.computed, report.skipped) == (12 - kept, kept)
    assert len(captions(db)) == 12


# --- rankings ------------------------------------------------------------------------------
QUERY = "red dog"


def brute_force_clip(db, query_vec, keep=None):
    rows = db.conn.execute("SELECT id, embedding FROM clipsql.images").fetchall()
    rows = [r for r in rows if keep is None or r[0] in keep]
    ids = np.array([r[0] for r in rows])
    emb = np.stack([r[1].to_numpy().astype(np.float32) for r in rows])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return ids[np.argsort(-(emb @ query_vec), kind="stable")].tolist()


@pytest.fixture
def captioned(db, photo_folder):
    """The photo folder loaded, with captions written here (not by a model)."""
    db.load(photo_folder)
    ids = [r[0] for r in db.conn.execute("SELECT id FROM clipsql.images ORDER BY id")]
    write = [
        (ids[0], "mine", "red dog red dog red dog", True),
        (ids[1], "mine", "a red dog on the grass", True),
        (ids[2], "mine", "a red car and a small brown dog", True),
        (ids[3], "mine", "a dog", True),
        (ids[4], "mine", "red", True),
        (ids[5], "mine", "red dog red dog red dog red dog", False),  # stale: ignored
        (ids[6], "mine", "nothing here", True),
        (ids[6], "other", "dog red", True),  # the image's best caption counts
        (ids[7], "mine", "the red dog", None),  # no sha256: written by hand, never stale
    ]
    for image_id, model, text, current in write:
        db.conn.execute(
            "INSERT INTO clipsql.captions (image_id, model, caption, image_sha256) "
            "SELECT id, %s, %s, CASE WHEN %s::boolean IS NULL THEN NULL WHEN %s::boolean THEN sha256 "
            "ELSE 'stale' END FROM clipsql.images WHERE id = %s",
            (model, text, current, current, image_id))
    return ids


def sql_text_reference(db, keep=None):
    """The full-text ranking straight from ts_rank_cd, caption by caption, in Python."""
    rows = db.conn.execute(
        "SELECT c.image_id, ts_rank_cd(to_tsvector('simple', c.caption), "
        "websearch_to_tsquery('simple', %s)), c.caption, "
        "to_tsvector('simple', c.caption) @@ websearch_to_tsquery('simple', %s), "
        "c.image_sha256 IS NULL OR c.image_sha256 = i.sha256 "
        "FROM clipsql.captions c JOIN clipsql.images i ON i.id = c.image_id",
        (QUERY, QUERY)).fetchall()
    best = {}
    for image_id, score, text, match, current in rows:
        wanted = match and current and (keep is None or image_id in keep)
        if wanted and (image_id not in best or score > best[image_id][0]):
            best[image_id] = (score, text)
    return sorted(best, key=lambda i: (-best[i][0], i)), best


def test_full_text_ranking_matches_the_reference(db, captioned):
    from clipsql.captions import hybrid

    ids = captioned
    order, best = sql_text_reference(db)
    # by hand: three covers first, then the adjacent pairs (tied, by id), the far pair last
    assert order == [ids[0], ids[1], ids[6], ids[7], ids[2]]
    got = hybrid.text_ranking(db.conn, QUERY)
    assert [g[0] for g in got] == order
    assert [g[1] for g in got] == pytest.approx([best[i][0] for i in order])
    assert got[2][2] == "dog red"
    only_other = hybrid.text_ranking(db.conn, QUERY, caption_model="other")
    assert [g[0] for g in only_other] == [ids[6]]
    assert hybrid.text_ranking(db.conn, "zebra") == []


@pytest.mark.parametrize("case", ["all", "filtered", "caption-filter", "short"])
def test_hybrid_ranking_is_rrf_of_the_two_rankings(db, captioned, case):
    ids = captioned
    where, params, limit, candidates, rrf_k, keep = None, (), 12, 100, 60, None
    if case == "filtered":
        where, params = "id <> %s AND format IS NOT NULL", [ids[0]]
        keep = set(ids) - {ids[0]}
    elif case == "caption-filter":  # the filter role may read clipsql.captions (0011)
        where = "id IN (SELECT image_id FROM clipsql.captions WHERE caption LIKE '%dog%')"
        keep = {ids[i] for i in (0, 1, 2, 3, 5, 6, 7)}
    elif case == "short":
        limit, candidates, rrf_k = 3, 4, 5
    hits = db.hybrid_search(QUERY, where=where, params=params, limit=limit,
                            candidates=candidates, rrf_k=rrf_k)
    clip = brute_force_clip(db, db.embed_text(QUERY), keep)[:candidates]
    text, best = sql_text_reference(db, keep)
    expected = rrf([clip, text[:candidates]], rrf_k)[:limit]
    assert [h.id for h in hits] == [key for key, _, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s, _ in expected], rel=1e-12)
    assert [(h.clip_rank, h.text_rank) for h in hits] == [r for _, _, r in expected]
    for h in hits:
        assert h.found_by == [n for n, r in (("clip", h.clip_rank), ("text", h.text_rank))
                              if r is not None]
        if h.text_rank is not None:
            assert h.caption == best[h.id][1] and h.text_score == pytest.approx(best[h.id][0])
        if h.clip_rank is not None:
            assert -1 <= h.clip_score <= 1
    by_id = {h.id: h for h in hits}
    if ids[3] in by_id:  # found by CLIP only: still shows its (non-matching) caption
        assert by_id[ids[3]].caption == "a dog" and by_id[ids[3]].text_rank is None
    assert json.loads(hits.to_json())[0]["found_by"] == hits[0].found_by


def test_the_sql_function_gives_the_same_fused_order(db, captioned):
    hits = db.hybrid_search(QUERY, limit=12)  # also stores the text's embedding
    rows = db.conn.execute("SELECT id, path, score, clip_rank, text_rank "
                           "FROM clipsql.hybrid_search(%s, 12)", (QUERY,)).fetchall()
    assert [r[0] for r in rows] == [h.id for h in hits]
    assert [r[1] for r in rows] == [h.path for h in hits]
    assert [r[2] for r in rows] == pytest.approx([h.score for h in hits], rel=1e-12)
    assert [(r[3], r[4]) for r in rows] == [(h.clip_rank, h.text_rank) for h in hits]
    short = db.conn.execute("SELECT id FROM clipsql.hybrid_search(%s, 3, 5, 4)",
                            (QUERY,)).fetchall()
    assert [r[0] for r in short] == [h.id for h in db.hybrid_search(
        QUERY, limit=3, rrf_k=5, candidates=4)]


def test_cli_caption_and_hybrid_search(dsn, tiny_model, coca_model, photo_folder):
    from clipsql.cli import main

    runner = CliRunner()
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}

    def run(*args, code=0):
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    run("load", str(photo_folder), "--json")
    summary = json.loads(run("caption", "--model", coca_model, "--batch-size", "4",
                             "--max-length", "6", "--json").stdout)
    assert (summary["computed"], summary["skipped"], summary["failed"]) == (12, 0, 0)
    again = json.loads(run("caption", "--model", coca_model, "--where", "format = %s",
                           "--param", "PNG", "--json").stdout)
    assert (again["computed"], again["skipped"]) == (0, 2)
    assert "captioned 0 images" in run("caption", "--model", coca_model).stdout

    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        target = conn.execute("SELECT id FROM clipsql.images ORDER BY id DESC LIMIT 1"
                              ).fetchone()[0]
        conn.execute("UPDATE clipsql.captions SET caption = 'a red dog' WHERE image_id = %s",
                     (target,))
    hits = json.loads(run("search", QUERY, "--hybrid", "--json", "--limit", "12").stdout)
    assert len(hits) == 12
    top = next(h for h in hits if h["id"] == target)
    assert top["text_rank"] == 1 and "text" in top["found_by"] and top["caption"] == "a red dog"
    assert all({"score", "clip_rank", "text_rank", "caption", "path"} <= set(h) for h in hits)
    plain = json.loads(run("search", QUERY, "--json").stdout)
    assert all("caption" in h for h in plain)
    assert {h["id"]: h["caption"] for h in plain}.get(target, "a red dog") == "a red dog"
    text = run("search", QUERY, "--hybrid", "--limit", "3").stdout
    assert "clip" in text and "text" in text
    run("search", "--hybrid", "--image", "1", code=2)
    assert "cannot be combined" in run("search", QUERY, "--hybrid", "--within", "0.1",
                                       code=2).output


OTHER_COCA = "coca_ViT-B-32/laion2b_s13b_b90k"  # a real open_clip tag, not the default


def _caption_all(db, model: str) -> None:
    """A current caption of every image, as if ``model`` had written it just now."""
    db.conn.execute(
        "INSERT INTO clipsql.captions (image_id, model, caption, image_sha256, created_at) "
        "SELECT id, %s, 'a picture', sha256, clock_timestamp() FROM clipsql.images", (model,))


def test_the_caption_model_is_remembered(db, photo_folder):
    from clipsql.captions import generate
    from clipsql.errors import ModelError

    db.load(photo_folder)
    assert generate.model_for(db.conn) == generate.DEFAULT_CAPTION_MODEL  # no captions yet
    _caption_all(db, "mine")  # written by hand: not a model to go on with
    assert generate.model_for(db.conn) == generate.DEFAULT_CAPTION_MODEL
    _caption_all(db, OTHER_COCA)
    assert generate.model_for(db.conn) == OTHER_COCA
    assert generate.model_for(db.conn, "coca_ViT-L-14/x") == "coca_ViT-L-14/x"
    assert str(generate.captioner_for(None, "cpu", conn=db.conn).spec) == OTHER_COCA
    _caption_all(db, "clipsql-tiny-coca/file:tiny-coca.pt#0123abcd")  # the latest, from a file
    with pytest.raises(ModelError, match="file:tiny-coca.pt#0123abcd.*ARCH/PATH-TO-CHECKPOINT"):
        generate.model_for(db.conn)


def test_cli_caption_without_model_goes_on_with_the_collection_s(dsn, tiny_model, photo_folder):
    """No --model: the model of the collection's captions, not a download of the default
    (here every image is current for it, so no weights are needed at all)."""
    import clipsql
    from clipsql.cli import main

    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        _caption_all(db, OTHER_COCA)
    done = CliRunner().invoke(main, ["caption", "--json"], env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert (summary["model"], summary["computed"], summary["skipped"]) == (OTHER_COCA, 0, 12)
    with clipsql.connect(dsn, model=tiny_model) as db:
        _caption_all(db, "clipsql-tiny-coca/file:tiny-coca.pt#0123abcd")
    refused = CliRunner().invoke(main, ["caption"], env=env, catch_exceptions=False)
    assert refused.exit_code == 2 and "file:tiny-coca.pt#0123abcd" in refused.output
    assert "--model" in refused.output and "Traceback" not in refused.output


def test_web_api_hybrid_search_and_captions(dsn, tiny_model, captioned, tmp_path):
    import httpx

    from clipsql.web import create_app, serve_in_thread

    ids = captioned
    app = create_app(dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        got = client.get("/api/search", params={"q": QUERY, "hybrid": "true", "limit": 12})
        assert got.status_code == 200, got.text
        results = got.json()["results"]
        import clipsql

        with clipsql.connect(dsn, model=tiny_model) as lib:
            expected = lib.hybrid_search(QUERY, limit=12)
        assert [r["id"] for r in results] == [h.id for h in expected]
        assert [r["text_rank"] for r in results] == [h.text_rank for h in expected]
        assert [r["caption"] for r in results] == [h.caption for h in expected]
        assert results[0]["found_by"] == expected[0].found_by
        page = client.get("/api/search", params={"q": QUERY, "hybrid": "true", "limit": 2,
                                                 "offset": 2}).json()["results"]
        assert [r["id"] for r in page] == [h.id for h in expected[2:4]]
        plain = client.get("/api/search", params={"q": QUERY, "limit": 12}).json()["results"]
        by_id = {r["id"]: r["caption"] for r in plain}
        assert by_id[ids[3]] == "a dog" and by_id[ids[8]] is None
        assert by_id[ids[5]] is None  # stale captions are not shown
        bad = client.get("/api/search", params={"q": QUERY, "hybrid": "true", "image_id": ids[0]})
        assert bad.status_code == 400 and "text query alone" in bad.json()["detail"]


def test_notebook_grid_shows_hybrid_captions(db, captioned):
    html = db.hybrid_search(QUERY, limit=3)._repr_html_()
    assert "red dog red dog red dog" in html
