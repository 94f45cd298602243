"""The schema, checked against its one description: applying every migration to an empty
database yields exactly ``migrations/schema.snapshot``, and the ``clipsql.images`` row of
``clipsql.database.images`` and the SQLAlchemy ``Image`` mapping equal the live table.

After adding a migration, regenerate the snapshot and commit it with the migration:

    CLIPSQL_UPDATE_SNAPSHOT=1 pytest tests/integration/test_schema.py
"""

import os
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).resolve().parents[2] / "migrations" / "schema.snapshot"

_QUERIES = {
    "table": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE n.nspname = 'clipsql' AND c.relkind = 'r' ORDER BY 1, a.attnum""",
    "constraint": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
          FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'clipsql' ORDER BY 1, 2""",
    "index": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'clipsql' ORDER BY 1""",
    "function": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_function_result(p.oid), l.lanname, p.provolatile, p.proisstrict,
               md5(pg_get_functiondef(p.oid))
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_language l ON l.oid = p.prolang
         WHERE n.nspname = 'clipsql' ORDER BY 1""",
    "trigger": """
        SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'clipsql' AND NOT t.tgisinternal ORDER BY 1""",
}


def describe(conn) -> str:
    """A plain-text description of everything in the ``clipsql`` schema, one line per item."""
    lines = []
    for kind, sql in _QUERIES.items():
        for row in conn.execute(sql).fetchall():
            lines.append(kind + " " + " | ".join(str(v) for v in row))
    return "\n".join(lines) + "\n"


@pytest.fixture
def migrated(empty_dsn):
    """An empty database brought up to date by the migrations here (not a copy of the tests'
    migrated template): what they yield is what is compared."""
    import psycopg

    from clipsql.database import connection, migrations

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        connection.ensure_vector(conn)
        migrations.apply(conn)
        yield conn


def test_all_migrations_yield_the_committed_schema(migrated):
    got = describe(migrated)
    if os.environ.get("CLIPSQL_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(got, encoding="utf-8")
    expected = SNAPSHOT.read_text(encoding="utf-8")
    assert got == expected, (
        "the migrations no longer yield migrations/schema.snapshot; if the change is meant, "
        "regenerate it: CLIPSQL_UPDATE_SNAPSHOT=1 pytest tests/integration/test_schema.py")


def test_the_snapshot_names_every_migration(migrated):
    from clipsql.database import migrations

    applied = [r[0] for r in migrated.execute(
        "SELECT version FROM clipsql.schema_version ORDER BY 1").fetchall()]
    assert applied == [m.version for m in migrations.available()]
    assert "table schema_version" in SNAPSHOT.read_text(encoding="utf-8")


def _live_columns(conn) -> dict:
    rows = conn.execute(_QUERIES["table"]).fetchall()
    return {name: (sql_type, not notnull) for table, name, sql_type, notnull, _, _ in rows
            if table == "images"}


def test_the_images_row_is_the_live_table(migrated):
    from clipsql.database import images

    assert _live_columns(migrated) == {c.name: (c.sql, c.nullable) for c in images.COLUMNS}


def test_the_sqlalchemy_mapping_is_the_live_table(migrated):
    from sqlalchemy.dialects import postgresql

    from clipsql.sqlalchemy import Image

    dialect = postgresql.dialect()
    names = {"TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
             "TIMESTAMP WITHOUT TIME ZONE": "timestamp without time zone",
             "DOUBLE PRECISION": "double precision", "BIGINT": "bigint", "TEXT": "text",
             "INTEGER": "integer", "SMALLINT": "smallint", "JSONB": "jsonb", "HALFVEC": "halfvec"}
    mapped = {c.name: (names[c.type.compile(dialect)], c.nullable)
              for c in Image.__table__.columns}
    assert mapped == _live_columns(migrated)
    assert Image.__table__.schema == "clipsql" and Image.__table__.name == "images"
