"""The schema, checked against its one description: applying every migration to an empty
database yields exactly ``migrations/schema.sql`` (tables, constraints, indexes, functions
with their bodies, triggers, privileges), that file run on an empty database gives the same
schema again, and the ``clipsql.images`` row of ``clipsql.database.images`` and the
SQLAlchemy ``Image`` mapping equal the live table. The migrations' comments name only files
that exist.

After adding a migration, regenerate the schema and commit it with the migration:

    python -m clipsql.database.schema
"""

import difflib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "migrations" / "schema.sql"
REGENERATE = "python -m clipsql.database.schema"

_COLUMNS = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE n.nspname = 'clipsql' AND c.relkind = 'r' ORDER BY 1, a.attnum"""


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


def _without_privileges_unless_the_role_exists(conn, text: str) -> str:
    """The privileges need the role clipsql_filter, which only a migrating role allowed to
    create roles makes (an external test server may not): without it they are left out."""
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'clipsql_filter'").fetchone():
        return text
    return text.split("\n-- Privileges\n")[0]


def test_all_migrations_yield_the_committed_schema(migrated):
    from clipsql.database import schema

    got = schema.schema_sql(migrated)
    expected = _without_privileges_unless_the_role_exists(
        migrated, SCHEMA.read_text(encoding="utf-8"))
    if got != expected:
        diff = "".join(list(difflib.unified_diff(
            expected.splitlines(True), got.splitlines(True), "migrations/schema.sql",
            "a fresh migration run"))[:60])
        pytest.fail(f"migrations/schema.sql is not what the migrations yield; if the change is "
                    f"meant, regenerate it with `{REGENERATE}` and commit it:\n{diff}")


def test_the_schema_names_every_migration(migrated):
    from clipsql.database import migrations

    applied = [r[0] for r in migrated.execute(
        "SELECT version FROM clipsql.schema_version ORDER BY 1").fetchall()]
    assert applied == [m.version for m in migrations.available()]
    text = SCHEMA.read_text(encoding="utf-8")
    assert f"(the last: {migrations.available()[-1].path.name})" in text
    assert "CREATE TABLE clipsql.schema_version (" in text
    assert REGENERATE in text


def test_the_schema_file_runs_and_gives_the_same_schema(pg_admin_url, migrated):
    """Run on an empty database, schema.sql makes what the migrations made: it is complete
    (everything the generator reads) and valid SQL."""
    import psycopg

    from clipsql.database import schema
    from tests.conftest import fresh_database

    expected = schema.schema_sql(migrated)
    with fresh_database(pg_admin_url) as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.read_text(encoding="utf-8"))
        got = schema.schema_sql(conn)
    assert got.split("\n-- Privileges\n")[0] == expected.split("\n-- Privileges\n")[0]
    assert _without_privileges_unless_the_role_exists(migrated, got) == \
        _without_privileges_unless_the_role_exists(migrated, expected)


def test_the_generator_refuses_what_it_cannot_render(migrated):
    from clipsql.database import schema
    from clipsql.errors import MigrationError

    with migrated.transaction(force_rollback=True):
        migrated.execute("CREATE TYPE clipsql.mood AS ENUM ('happy', 'sad')")
        with pytest.raises(MigrationError, match="type clipsql.mood"):
            schema.schema_sql(migrated)


def test_migration_comments_name_files_that_exist():
    named = []
    for path in sorted((ROOT / "migrations").glob("[0-9]*.sql")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            comment = line.split("--", 1)[1] if "--" in line else ""
            for ref in re.findall(r"(?:clipsql|docs|tests|benchmarks|migrations)/[\w./-]*\w",
                                  comment):
                named.append(ref)
                assert (ROOT / ref).exists(), f"{path.name}:{n} names {ref}, which does not exist"
    assert "clipsql/database/binding.py" in named


def _live_columns(conn) -> dict:
    rows = conn.execute(_COLUMNS).fetchall()
    return {name: (sql_type, not notnull) for table, name, sql_type, notnull in rows
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
