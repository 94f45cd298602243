"""Connections, migrations and the schema, on real PostgreSQL."""

import threading

import psycopg
import pytest

import clipsql
from clipsql.database import connection, migrations
from clipsql.errors import DatabaseError, ExtensionMissingError

EXPECTED_IMAGE_COLUMNS = {
    "id": "bigint", "path": "text", "sha256": "text", "bytes": "bigint",
    "mtime": "timestamp with time zone", "width": "integer", "height": "integer", "format": "text",
    "orientation": "smallint", "taken_at": "timestamp without time zone", "camera_make": "text",
    "camera_model": "text", "latitude": "double precision", "longitude": "double precision",
    "exif": "jsonb", "added_at": "timestamp with time zone", "updated_at": "timestamp with time zone",
    "embedding": "halfvec",
}


def test_applying_all_migrations_yields_the_expected_schema(empty_dsn):
    with connection.connect(empty_dsn) as conn:
        applied = migrations.apply(conn)
        assert [m.version for m in applied] == [m.version for m in migrations.available()]
        cols = dict(conn.execute(
            "SELECT column_name, coalesce(udt_name::regtype::text, data_type) FROM information_schema.columns "
            "WHERE table_schema = 'clipsql' AND table_name = 'images'").fetchall())
        assert cols.items() >= EXPECTED_IMAGE_COLUMNS.items()
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'clipsql'")}
        assert {"images", "failures", "model", "schema_version"} <= tables
        assert migrations.apply(conn) == []  # idempotent
        assert migrations.current_version(conn) == migrations.available()[-1].version


def test_migrations_are_plain_sql_that_psql_style_execution_accepts(empty_dsn):
    """Each file runs as one script with no Python (as `psql -f` would)."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for m in migrations.available():
            conn.execute(m.sql())
        assert conn.execute("SELECT to_regclass('clipsql.images')").fetchone()[0] == "clipsql.images"


def test_concurrent_migrations_are_safe(empty_dsn):
    errors = []

    def run():
        try:
            with connection.connect(empty_dsn) as conn:
                migrations.apply(conn)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with connection.connect(empty_dsn) as conn:
        n = conn.execute("SELECT count(*) FROM clipsql.schema_version").fetchone()[0]
    assert n == len(migrations.available())


def test_bad_dsn_is_one_clear_message_without_the_password():
    with pytest.raises(DatabaseError) as info:
        clipsql.connect("postgresql://bob:topsecret@127.0.0.1:1/nowhere")
    assert "topsecret" not in str(info.value) and "cannot connect" in str(info.value)
    with pytest.raises(DatabaseError, match="cannot be parsed|invalid database URL|cannot connect"):
        clipsql.connect("this is not a dsn at all")


def test_server_where_the_user_cannot_create_pgvector(empty_dsn):
    """A role without the right to CREATE EXTENSION gets a message saying what to do."""
    from urllib.parse import urlsplit, urlunsplit

    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS clipsql_limited")
        admin.execute("CREATE ROLE clipsql_limited LOGIN")
        admin.execute("GRANT CREATE ON DATABASE " + urlsplit(empty_dsn).path.lstrip("/") + " TO clipsql_limited")
    parts = urlsplit(empty_dsn)
    limited = urlunsplit((parts.scheme, "clipsql_limited:@" + parts.netloc.split("@")[-1],
                          parts.path, parts.query, ""))
    try:
        with pytest.raises(ExtensionMissingError, match="CREATE EXTENSION vector"):
            clipsql.connect(limited)
    finally:
        with psycopg.connect(empty_dsn, autocommit=True) as admin:
            admin.execute("DROP OWNED BY clipsql_limited CASCADE")
            admin.execute("DROP ROLE clipsql_limited")


def test_status_reports_the_collection(db, photo_folder):
    db.load(photo_folder)
    info = db.status()
    assert info["images"] == 12 and info["failures"] == 0
    assert info["model"]["arch"] == "clipsql-tiny" and info["model"]["dim"] == 32
    assert info["index"] == "images_embedding_hnsw"
    assert info["pgvector"].startswith("0.")
