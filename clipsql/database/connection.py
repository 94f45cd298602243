"""Connections: resolve the DSN, connect with a readable error, check pgvector.

This is the only place the core opens psycopg connections. Passwords never leave it:
every message and every URL shown to users goes through :func:`redact`.

>>> redact("postgresql://alice:s3cret@db.example.com/photos")
'postgresql://alice:***@db.example.com/photos'
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from clipsql import config
from clipsql.errors import DatabaseError, ExtensionMissingError

#: pgvector 0.7 brought halfvec; 0.8 brought iterative index scans (used when present).
MIN_VECTOR_VERSION = (0, 7, 0)

_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``."""
    if "://" not in dsn:
        return _KV_PASSWORD.sub(r"\1***", dsn)
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = re.sub(r"(password=)[^&]*", r"\1***", parts.query, flags=re.IGNORECASE)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _scrub(message: str, dsn: str) -> str:
    """Remove the DSN's password from a driver error message, wherever it appears."""
    password = None
    m = _KV_PASSWORD.search(dsn)
    if m:
        password = m.group(2).strip("'")
    elif "://" in dsn:
        try:
            password = urlsplit(dsn).password
        except ValueError:
            password = None
    if password:
        message = message.replace(password, "***")
    return message.replace(dsn, redact(dsn))


def resolve_dsn(dsn: str | None = None) -> str:
    """The given DSN, ``$CLIPSQL_DATABASE_URL``, or the embedded server's URL (started on demand)."""
    chosen = config.database_url(dsn)
    if chosen:
        return chosen
    from clipsql.database import embedded

    return embedded.ensure_running()


def connect(dsn: str, *, autocommit: bool = True, register: bool = True):
    """Open a psycopg connection with pgvector types registered when the extension exists."""
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(f"cannot connect to {redact(dsn)}: {_scrub(first, dsn)}") from None
    except Exception as exc:  # malformed DSN strings raise ProgrammingError / ValueError
        raise DatabaseError(f"invalid database URL {redact(dsn)}: {_scrub(str(exc), dsn)}") from None
    if register and vector_version(conn) is not None:
        register_types(conn)
    return conn


def register_types(conn) -> None:
    """pgvector's types (vector, halfvec, sparsevec) on a psycopg connection."""
    from pgvector.psycopg import register_vector

    register_vector(conn)


def vector_version(conn) -> tuple[int, ...] | None:
    """The installed pgvector version in this database, or None."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return _parse_version(row[0]) if row else None


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def ensure_vector(conn) -> tuple[int, ...]:
    """Make sure pgvector is installed in this database (creating it if allowed); return its version."""
    import psycopg

    version = vector_version(conn)
    if version is None:
        available = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            server = conn.execute("SHOW server_version").fetchone()[0]
            raise ExtensionMissingError(
                f"the PostgreSQL server ({server}) has no pgvector extension. Install pgvector "
                "0.8 or newer on the server (e.g. the 'postgresql-NN-pgvector' package or the "
                "pgvector/pgvector Docker image), or use clipsql's embedded server (no database URL)."
            )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise ExtensionMissingError(
                "pgvector is available on the server but this user cannot create it "
                f"({exc.diag.message_primary}); ask an administrator to run "
                "'CREATE EXTENSION vector' in this database."
            ) from None
        version = vector_version(conn)
    if version < MIN_VECTOR_VERSION:
        raise ExtensionMissingError(
            f"pgvector {'.'.join(map(str, version))} is too old; clipsql needs 0.7 or newer "
            "(0.8+ recommended): ALTER EXTENSION vector UPDATE"
        )
    register_types(conn)
    return version
