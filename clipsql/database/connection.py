"""Connections: resolve the DSN, connect with a readable error, check pgvector.

This is the only place the core opens psycopg connections. Passwords never leave it:
every message and every URL shown to users goes through :func:`redact`.

>>> redact("postgresql://alice:s3cret@db.example.com/photos")
'postgresql://alice:***@db.example.com/photos'
"""

from __future__ import annotations

import re

from clipsql import config
from clipsql.errors import DatabaseError, ExtensionMissingError

#: pgvector 0.7 brought halfvec; 0.8 brought iterative index scans (used when present).
MIN_VECTOR_VERSION = (0, 7, 0)

_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"((?:^|[?&])password=)[^&]*", re.IGNORECASE)
HIDDEN = "<database URL not shown: it cannot be parsed, and could show a password>"


def _parsed(dsn: str) -> dict | None:
    """The DSN as libpq reads it (psycopg's conninfo parser), or None if libpq cannot."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except Exception:  # psycopg.ProgrammingError and friends: libpq's message may echo it
        return None


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``.

    Parsed the way libpq parses it; a DSN libpq cannot parse is not shown at all. In a URL,
    everything between ``user:`` and the last ``@`` is hidden, so a password with an
    unencoded ``@`` (which libpq would split wrongly) never shows either.

    >>> redact("host=db user=alice password='s3 cret' dbname=x")
    'host=db user=alice password=*** dbname=x'
    >>> redact("postgresql://bob:p@ss@db/x")
    'postgresql://bob:***@db/x'
    """
    params = _parsed(dsn)
    if params is None:
        return HIDDEN
    if "://" not in dsn:
        shown = _KV_PASSWORD.sub(r"\1***", dsn)
    else:
        scheme, _, rest = dsn.partition("://")
        if "@" in rest:
            userinfo, _, host = rest.rpartition("@")
            user = userinfo.split(":", 1)[0]
            rest = (f"{user}:***" if ":" in userinfo else user) + "@" + host
        shown = f"{scheme}://{_URL_PASSWORD.sub(lambda m: m.group(1) + '***', rest)}"
    password = params.get("password")
    if password and any(piece in shown for piece in _pieces(password)):
        return HIDDEN
    return shown


def _pieces(password: str) -> set[str]:
    """The password and the parts of it worth hiding on their own (encoded, or split)."""
    from urllib.parse import quote

    pieces = {password, quote(password, safe=""), quote(password)}
    pieces |= set(re.split(r"[\s@:/?&=']+", password))
    return {p for p in pieces if len(p) >= 3}  # shorter ones would match ordinary words


def _ambiguous_at(dsn: str) -> bool:
    """A URL whose user info holds an unencoded ``@``: libpq would take part of the password
    for the host name (and print it in its errors)."""
    if "://" not in dsn:
        return False
    userinfo = dsn.partition("://")[2].rpartition("@")[0]
    return "@" in userinfo


def scrub(message: str, dsn: str) -> str:
    """A driver error message with the DSN and every piece of its password removed."""
    params = _parsed(dsn)
    if params is None:
        return "(details not shown: they could contain the password)"
    message = message.replace(dsn, redact(dsn))
    password = params.get("password")
    if password:
        for piece in sorted(_pieces(password), key=len, reverse=True):
            message = message.replace(piece, "***")
    return message


def resolve_dsn(dsn: str | None = None) -> str:
    """The given DSN, ``$CLIPSQL_DATABASE_URL``, or the embedded server's URL (started on demand)."""
    chosen = config.database_url(dsn)
    if chosen:
        return chosen
    from clipsql.database import embedded

    return embedded.ensure_running()


#: How every connection is opened, alone or in a pool. No server-side prepared statements:
#: a reembed's switch changes the type of images.embedding, which a statement prepared
#: before it could no longer run ("cached plan must not change result type").
OPTIONS = {"autocommit": True, "connect_timeout": 10, "prepare_threshold": None}


def connect(dsn: str, *, autocommit: bool = True, register: bool = True):
    """Open a psycopg connection with pgvector types registered when the extension exists."""
    import psycopg

    if _parsed(dsn) is None or _ambiguous_at(dsn):
        raise DatabaseError(
            "the database URL cannot be parsed: percent-encode special characters of the "
            "password in a URL (@ as %40, space as %20), or quote it in key=value form "
            "(password='a b'); the URL is not shown because it could show the password")
    try:
        conn = psycopg.connect(dsn, **{**OPTIONS, "autocommit": autocommit})
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(f"cannot connect to {redact(dsn)}: {scrub(first, dsn)}") from None
    except Exception as exc:
        raise DatabaseError(f"invalid database URL {redact(dsn)}: {scrub(str(exc), dsn)}") from None
    if register and vector_version(conn) is not None:
        register_types(conn)
    return conn


def connect_ready(dsn: str):
    """A connection to a database made ready for clipsql: pgvector installed (if allowed)
    and the schema's migrations applied."""
    from clipsql.database import migrations

    conn = connect(dsn, register=False)  # ensure_vector registers the types, once
    try:
        ensure_vector(conn)
        migrations.apply(conn)
        _model_inside(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _model_inside(conn) -> None:
    """On the embedded server, install the in-database model (clipsql.database.native) if
    it is missing; a server clipsql does not run itself is left alone (``clipsql status``
    says which mode it is in)."""
    from clipsql.database import embedded, native

    pg_config = embedded.pg_config_for(conn)
    if pg_config is None:
        return
    try:
        native.ensure(conn, pg_config)
    except DatabaseError as exc:  # no compiler, say: texts stored from Python still work
        import logging

        logging.getLogger("clipsql").warning("clipsql: no in-database model: %s", exc)


def pool(dsn: str, size: int, *, wait_s: float, name: str):
    """A ``psycopg_pool.ConnectionPool`` of up to ``size`` connections, opened like
    :func:`connect`'s (pgvector's types registered), each checked when handed out so one
    the server dropped is replaced; :class:`DatabaseError` if none can be opened."""
    from psycopg_pool import ConnectionPool

    opened = ConnectionPool(dsn, min_size=1, max_size=size, timeout=wait_s, name=name,
                            kwargs=dict(OPTIONS), configure=register_types,
                            check=ConnectionPool.check_connection, open=False)
    try:
        opened.open(wait=True, timeout=max(wait_s, 10))
    except Exception:
        opened.close()
        raise DatabaseError(f"cannot open connections to {redact(dsn)}") from None
    return opened


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


def database_key(conn) -> tuple:
    """Which database ``conn`` is connected to (host, port, name)."""
    info = conn.info
    return (info.host, info.port, info.dbname)
