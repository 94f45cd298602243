"""Importing precomputed embeddings (Collection.add_embeddings, clipsql import-embeddings)."""

from datetime import datetime

import numpy as np
import pytest
from click.testing import CliRunner

from clipsql.cli import main
from clipsql.errors import EmbeddingImportError, ModelMismatchError


def rows(db):
    return db.conn.execute(
        "SELECT path, sha256, bytes, width, format, taken_at, camera_make, latitude, embedding "
        "FROM clipsql.images ORDER BY id").fetchall()


def test_import_binds_model_normalises_and_is_searchable(db):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 32)) * 7  # not normalised on purpose
    keys = [f"unsplash:{i:03d}" for i in range(50)]
    report = db.add_embeddings(keys, vecs, {"taken_at": ["2021-05-01T10:00:00"] * 25 + [None] * 25,
                                            "camera_make": ["Canon"] * 50, "latitude": [1.5] * 50})
    assert (report.added, report.updated, report.index_built) == (50, 0, True)
    assert db.status()["model"]["dim"] == 32
    got = rows(db)
    assert [r[0] for r in got] == keys
    assert got[0][1:5] == (None, None, None, None)  # no file was read: file facts are unknown
    assert got[0][5] == datetime(2021, 5, 1, 10) and got[30][5] is None
    assert got[0][6] == "Canon" and got[0][7] == 1.5
    stored = np.stack([r[8].to_numpy().astype(np.float32) for r in got])
    assert np.allclose(np.linalg.norm(stored, axis=1), 1, atol=2e-3)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    assert np.abs(stored - unit).max() < 2e-3
    hits = db.search(image=7, limit=3)  # by stored embedding: no file needed
    assert len(hits) == 3 and 7 not in [h.id for h in hits]
    best = int(np.argmax(unit[np.arange(50) != 6] @ unit[6]))
    assert hits[0].path == [k for i, k in enumerate(keys) if i != 6][best]
    assert hits[0].sha256 is None and hits[0].width is None
    filtered = db.search(image=7, where="taken_at IS NOT NULL", limit=50)
    assert len(filtered) == 24


def test_reimport_updates_in_place(db):
    v = np.eye(3, 32)
    db.add_embeddings(["a", "b", "c"], v)
    report = db.add_embeddings(["c", "d"], np.eye(2, 32, k=5), {"camera_make": ["X", "Y"]})
    assert (report.added, report.updated) == (1, 1)
    got = {r[0]: r for r in rows(db)}
    assert got["c"][6] == "X" and got["c"][8].to_numpy()[5] == 1.0


@pytest.mark.parametrize("keys, vecs, meta, message", [
    (["a", "b"], np.ones((2, 16)), None, "16-d but the model"),
    (["a", "b"], np.ones((3, 32)), None, "3 vectors but 2 keys"),
    (["a", "b"], np.array([[np.nan] * 32, [1.0] * 32]), None, "vector #0 has NaN"),
    (["a", "b"], np.vstack([np.ones(32), np.zeros(32)]), None, "vector #1 is all zeros"),
    (["a", "a"], np.ones((2, 32)), None, "appears more than once"),
    (["a", ""], np.ones((2, 32)), None, "key #1"),
    (["a", "b"], np.ones(32), None, "2-D array"),
    (["a", "b"], np.ones((2, 32)), {"sha256": ["x", "y"]}, "unknown metadata column 'sha256'"),
    (["a", "b"], np.ones((2, 32)), {"taken_at": ["2020-01-01", "yesterday"]}, "'yesterday'"),
    (["a", "b"], np.ones((2, 32)), {"latitude": [1.0]}, "has 1 values for 2 keys"),
    ("ab", np.ones((2, 32)), None, "not one string"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(db, keys, vecs, meta, message):
    with pytest.raises(EmbeddingImportError, match=message):
        db.add_embeddings(keys, vecs, meta)
    assert db.conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0] == 0
    assert db.status()["model"] is None  # not even the model binding


def test_bad_row_late_in_a_large_input_writes_nothing(db):
    vecs = np.ones((5000, 32))
    vecs[4321, 3] = np.inf
    with pytest.raises(EmbeddingImportError, match="vector #4321"):
        db.add_embeddings([str(i) for i in range(5000)], vecs, batch_size=1000)
    assert db.conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0] == 0


def test_other_bound_model_is_refused(dsn, tiny_model, other_tiny_model):
    import clipsql

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.add_embeddings(["a"], np.ones((1, 32)))
    with clipsql.connect(dsn, model=other_tiny_model) as db, pytest.raises(ModelMismatchError):
        db.add_embeddings(["b"], np.ones((1, 32)))


def test_loading_the_real_file_later_fills_in_the_file_facts(db, photo_folder):
    path = str(sorted(photo_folder.rglob("img0*"))[0])
    db.add_embeddings([path], np.ones((1, 32)))
    report = db.load(photo_folder)
    assert report.updated == 1
    sha, size, fmt = db.conn.execute("SELECT sha256, bytes, format FROM clipsql.images "
                                     "WHERE path = %s", (path,)).fetchone()
    assert len(sha) == 64 and size > 0 and fmt


def test_file_facts_are_all_or_none(db):
    db.add_embeddings(["a"], np.ones((1, 32)))
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        db.conn.execute("UPDATE clipsql.images SET sha256 = 'x' WHERE path = 'a'")


def test_duplicates_do_not_group_imported_rows_without_hashes(db):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(20, 32))
    v[5] = v[4] + 1e-3  # one genuine near-duplicate pair
    db.add_embeddings([f"k{i}" for i in range(20)], v)
    groups = db.duplicates(threshold=0.99)
    assert [sorted(g.paths) for g in groups] == [["k4", "k5"]]
    assert not groups[0].exact


def test_cli_import_embeddings_with_ids_and_metadata(dsn, tiny_model, tmp_path):
    vecs = np.random.default_rng(2).normal(size=(4, 32)).astype(np.float32)
    np.save(tmp_path / "features.npy", vecs)
    (tmp_path / "photo_ids.csv").write_text("photo_id\nAAA\nBBB\nCCC\nDDD\n")
    (tmp_path / "photos.csv").write_text(
        "photo_id,taken_at,camera_make,photographer\nBBB,2019-07-01,Leica,ann\nAAA,,Nikon,bob\n")
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    runner = CliRunner()
    args = ["import-embeddings", str(tmp_path / "features.npy"), "--ids", str(tmp_path / "photo_ids.csv"),
            "--metadata", str(tmp_path / "photos.csv"), "--prefix", "https://unsplash.com/photos/"]
    refused = runner.invoke(main, args, env=env)
    assert refused.exit_code == 1 and "photographer" in refused.output and "Traceback" not in refused.output
    assert "--ignore-extra skips the others" in refused.output  # the option, not the parameter
    assert "ignore_extra" not in refused.output
    out = runner.invoke(main, [*args, "--ignore-extra", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert '"added": 4' in out.output
    import clipsql

    with clipsql.connect(dsn, model=tiny_model) as db:
        got = {r[0]: r for r in rows(db)}
    assert got["https://unsplash.com/photos/BBB"][5] == datetime(2019, 7, 1)
    assert got["https://unsplash.com/photos/AAA"][6] == "Nikon"
    assert got["https://unsplash.com/photos/CCC"][6] is None
    wrong = np.ones((4, 64), np.float32)
    np.save(tmp_path / "wrong.npy", wrong)
    bad = runner.invoke(main, ["import-embeddings", str(tmp_path / "wrong.npy"), "--ids",
                               str(tmp_path / "photo_ids.csv")], env=env)
    assert bad.exit_code == 1 and "64-d" in bad.output and "Traceback" not in bad.output


def test_the_library_names_its_own_parameter_for_unknown_metadata_columns(db, tmp_path):
    from clipsql.errors import ParameterError

    np.save(tmp_path / "f.npy", np.ones((1, 32), np.float32))
    (tmp_path / "ids.csv").write_text("id\nA\n")
    (tmp_path / "meta.csv").write_text("id,photographer\nA,ann\n")
    files = (str(tmp_path / "f.npy"), str(tmp_path / "ids.csv"))
    with pytest.raises(ParameterError) as info:
        db.import_files(*files, metadata_path=str(tmp_path / "meta.csv"))
    assert isinstance(info.value, EmbeddingImportError) and info.value.parameter == "ignore_extra"
    assert "unknown columns photographer" in str(info.value)
    assert "ignore_extra=True skips the others" in str(info.value) and "--" not in str(info.value)
    assert info.value.naming("--ignore-extra").endswith("(--ignore-extra skips the others)")
    assert db.import_files(*files, metadata_path=str(tmp_path / "meta.csv"),
                           ignore_extra=True).added == 1


# --- no vector without a direction, no NaN score ---------------------------------------------

def test_rows_of_huge_or_tiny_values_are_normalised_in_float64(db):
    """1e30s overflowed the float32 norm and were stored as zeros (then ranked with a NaN
    score); 1e-30s underflowed it and were called all zeros. Scaled first, in float64, every
    finite row that is not all zeros becomes a unit vector."""
    vecs = np.ones((4, 32))
    vecs[0] *= 1e30
    vecs[1] *= 1e-30
    vecs[2] *= 1e300  # finite in float64, past float32
    vecs[3] = np.random.default_rng(3).normal(size=32)
    assert db.add_embeddings(["big", "small", "huge", "plain"], vecs).added == 4
    stored = np.stack([r[8].to_numpy().astype(np.float32) for r in rows(db)])
    assert np.allclose(np.linalg.norm(stored, axis=1), 1, atol=2e-3)
    assert np.allclose(stored[:3], 1 / np.sqrt(32), atol=1e-3)
    hits = db.search(image=4, limit=10)
    assert sorted(h.path for h in hits) == ["big", "huge", "small"]
    assert all(np.isfinite(h.score) for h in hits) and hits[0].score == pytest.approx(hits[2].score)


def zero_row(db, path="zero"):
    """A row whose vector is all zeros, as imports before this rule could store it."""
    from pgvector import HalfVector

    db.conn.execute("INSERT INTO clipsql.images (path, embedding) VALUES (%s, %s)",
                    (path, HalfVector(np.zeros(32, np.float32))))
    db.conn.commit()


def test_a_stored_zero_vector_never_gives_a_nan_score(db, dsn, tiny_model):
    """pgvector's cosine distance to a zero vector is NaN (it sorted last, shown as NaN in
    ``--json`` and null on the web): such rows are left out of every ranking."""
    import json

    from clipsql.database import hnsw
    from clipsql.errors import QueryError
    from clipsql.query import search

    vecs = np.random.default_rng(4).normal(size=(30, 32))
    db.add_embeddings([f"k{i}" for i in range(30)], vecs)
    zero_row(db)
    assert db.conn.execute("SELECT count(*) FROM clipsql.images WHERE embedding <=> %s = 'NaN'",
                           (db.conn.execute("SELECT embedding FROM clipsql.images LIMIT 1")
                            .fetchone()[0],)).fetchone()[0] == 1  # the server's NaN is real
    query = vecs[0] / np.linalg.norm(vecs[0])
    for kind in ("halfvec", "binary"):
        if kind == "binary":
            hnsw.set_index_kind(db.conn, "binary")
        for strategy, where in (("exact", None), ("index", None), ("auto", "path <> 'k1'"),
                                ("index", "path LIKE 'k%%' OR path = 'zero'")):
            hits = search.rank(db.conn, query, limit=50, strategy=strategy, where=where)
            assert "zero" not in [h.path for h in hits], (kind, strategy, where)
            assert len(hits) >= 29 and all(np.isfinite(h.score) for h in hits), (kind, strategy)
    with pytest.raises(QueryError, match="no direction"):
        search.rank(db.conn, np.zeros(32), limit=5)
    out = CliRunner().invoke(main, ["search", "a cat", "--json", "--limit", "50"],
                             env={"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model})
    assert out.exit_code == 0, out.output
    found = json.loads(out.output.splitlines()[-1],
                       parse_constant=lambda c: pytest.fail(f"{c} in the JSON output"))
    assert len(found) == 30 and "zero" not in [h["path"] for h in found]


def test_json_output_and_web_scores_refuse_nan_readably():
    """Whatever reaches them, NaN is never printed as ``NaN`` (not JSON) nor sent as null."""
    import click
    from pydantic import ValidationError

    from clipsql.cli.output import echo_json
    from clipsql.web import schemas

    with pytest.raises(click.ClickException) as info:
        echo_json([{"path": "a", "score": 0.5}, {"path": "b", "score": float("nan")}])
    assert info.value.message == ("cannot print the result as JSON: [1].score is nan, not a "
                                  "finite number")
    with pytest.raises(ValidationError, match="finite number"):
        schemas.Cutoff(rule="within", threshold=float("nan"), kept=1, candidates=2)
    assert "score" in schemas.Hit.model_fields
    with pytest.raises(ValidationError, match="finite number"):
        schemas.Hit.__pydantic_validator__.validate_assignment(
            schemas.Hit.model_construct(), "score", float("nan"))
