"""Every example of the "Use it from your code" page (``docs/integrations.md``) runs, in order,
on a real database of loaded photos: python blocks in one namespace, sql blocks through
psycopg, console blocks through the CLI. The README's short psycopg, SQLAlchemy and SQL
examples run the same way. Both start with their own setup block, which creates the
``products`` table the examples join; nothing else creates it, so the examples run as
written."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import clipsql.sqlalchemy as cs
from clipsql.cli import main
from tests.integration.gallery_app import brute_force, make_photos

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "integrations.md"
START, END = "<!-- use-from-code:start -->", "<!-- use-from-code:end -->"
README = ROOT / "README.md"
README_START, README_END = "<!-- readme-examples:start -->", "<!-- readme-examples:end -->"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(doc: Path = DOC, start: str = START, end: str = END):
    text = doc.read_text(encoding="utf-8")
    section = text[text.index(start):text.index(end)]
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(section)]


def run_blocks(doc: Path, found, dsn: str, namespace: dict) -> list:
    """Run ``found`` blocks in order; returns the rows of every SQL statement that returns
    rows (a CREATE or an INSERT returns none)."""
    import importlib.util

    import psycopg

    has_alembic = importlib.util.find_spec("alembic") is not None  # a test extra
    sql_results = []
    for kind, code in found:
        if kind == "python" and "from alembic" in code and not has_alembic:
            continue
        if kind == "python":
            exec(compile(code, f"{doc.name}:python", "exec"), namespace)
        elif kind == "console":
            for line in code.splitlines():
                assert line.startswith("$ clipsql "), line
                result = CliRunner().invoke(main, shlex.split(line)[2:])
                assert result.exit_code == 0, result.output
        else:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for statement in sql_statements(code):
                    cursor = conn.execute(statement)
                    if cursor.description is not None:
                        sql_results.append(cursor.fetchall())
    return sql_results


def sql_statements(sql: str):
    for chunk in sql.split(";"):
        code = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--"))
        if code.strip():
            yield chunk


def test_the_page_has_every_kind_of_example():
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("python") >= 8 and "sql" in kinds and "console" in kinds
    assert set(kinds) <= {"python", "sql", "console"}


PHOTOS = 30


@pytest.fixture
def shop(db, tmp_path, monkeypatch, dsn):
    """A collection of loaded photos and no ``products`` table: the docs' setup makes it."""
    report = db.load(make_photos(tmp_path / "shop", PHOTOS))
    assert report.added == PHOTOS, report
    assert db.conn.execute("SELECT to_regclass('products')").fetchone()[0] is None
    monkeypatch.setenv("CLIPSQL_DATABASE_URL", dsn)
    cs.close()
    yield db
    cs.close()


def run_setup(found, dsn: str, shop) -> list:
    """Run the doc's setup block (its first SQL block, which must create ``products``), check
    it made one product per photo, then add a product whose photo was never loaded (every
    join below must drop it). Returns the blocks after the setup."""
    first_sql = next(i for i, (kind, _) in enumerate(found) if kind == "sql")
    _, code = found[first_sql]
    assert "CREATE TABLE products" in code, "the first SQL block must be the products setup"
    run_blocks(Path("setup"), [found[first_sql]], dsn, {})
    joined = shop.conn.execute("SELECT count(*) FROM products p JOIN clipsql.images i "
                               "ON i.path = p.photo_path").fetchone()[0]
    assert joined == PHOTOS
    shop.conn.execute("INSERT INTO products (name, price, photo_path) "
                      "VALUES ('no photo', 1.0, '/nowhere/missing.jpg')")
    return found[:first_sql] + found[first_sql + 1:]


def test_every_example_runs(shop, dsn):
    import importlib.util

    has_alembic = importlib.util.find_spec("alembic") is not None  # a test extra
    namespace = {"__name__": "docs_example"}
    sql_results = run_blocks(DOC, run_setup(blocks(), dsn, shop), dsn, namespace)

    ns = namespace
    # The vector the examples ranked "a red bicycle" with (the query engine's): the page's
    # `clipsql embed-text` later stores the fp32 one, which may order near-ties differently.
    red = ns["q"].to_numpy()
    assert [name for name, _ in ns["rows"]] == brute_force(shop.conn, red, 50, 10)
    assert [name for name, _ in ns["async_rows"]] == brute_force(shop.conn, red, 50, 10)
    assert [r.name for r in ns["results"]] == brute_force(shop.conn, red, 50, 10)
    assert [r.name for r in ns["async_results"]] == [r.name for r in ns["results"]]
    assert ns["like_first"] is not None and len(ns["looks_alike"]) == 5
    assert len(ns["neighbours"]) == 5 and ns["saved_query"] is not None
    if has_alembic:
        assert not any("clipsql" in repr(op) for op in ns["pending"])
    dogs = shop.embed_text("two dogs in snow")
    assert [r[0] for r in sql_results[0]] == brute_force(shop.conn, dogs, 50, 10)
    assert [len(r) for r in sql_results] == [10, 5, 5, 5]


def install_model_inside(dsn):
    import psycopg

    from clipsql.database import embedded, native

    with psycopg.connect(dsn, autocommit=True) as conn:
        major = conn.execute("SELECT current_setting('server_version_num')::int / 10000"
                             ).fetchone()[0]
        pg_config = embedded.pg_config_for_version(major)
        if pg_config is None or major < 17:
            pytest.skip(f"no PGXS for PostgreSQL {major} here (the in-database model needs 17+)")
        native.ensure(conn, pg_config)


def brute_force_ids(conn, query, k):
    rows = conn.execute("SELECT id, embedding FROM clipsql.images").fetchall()
    emb = np.stack([e.to_numpy().astype(np.float32) for _, e in rows])
    q = np.asarray(query, dtype=np.float16).astype(np.float32)
    scores = emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    return [rows[i][0] for i in np.argsort(-scores, kind="stable")][:k]


def test_the_readme_examples_run(shop, dsn):
    """The README's short psycopg, SQLAlchemy and SQL examples, with ``url`` the shop's URL."""
    found = blocks(README, README_START, README_END)
    assert [kind for kind, _ in found] == ["sql", "python", "python", "console", "sql"]
    install_model_inside(dsn)  # as clipsql does on its embedded server
    namespace = {"__name__": "readme_example", "url": dsn}
    sql_results = run_blocks(README, run_setup(found, dsn, shop), dsn, namespace)

    red = namespace["q"].to_numpy()
    assert [name for (name,) in namespace["rows"]] == brute_force(shop.conn, red, 50, 10)
    dogs = shop.embed_text("two dogs in snow")
    by_sql = [row[0] for row in sql_results[0]]
    assert by_sql == brute_force(shop.conn, dogs, 50, 10)
    best = namespace["best"]
    assert len(best) == 5 and [s for _, s in best] == sorted((s for _, s in best), reverse=True)
    assert len(sql_results) == 3 and len(sql_results[1]) == 5
    bicycle = shop.embed_text("a red bicycle leaning on a wall")
    assert [r[0] for r in sql_results[2]] == brute_force_ids(shop.conn, bicycle, 5)
