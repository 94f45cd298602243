"""The SQL an administrator runs once so that SQL filters can log in as ``clipsql_filter``
(what ``clipsql admin sql`` prints).

On a server where clipsql's owner role may not create roles (a managed database), migration
0006 cannot make the filter role, and filters are refused until someone who may runs this
(:mod:`clipsql.database.filter_login`). It is generated from the live schema, so it grants
everything the migrations applied so far made, and default privileges cover what later
migrations of the owner add:

* the role ``clipsql_filter`` (created if missing), ``LOGIN`` with a password, no other
  right (``NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS``), and a
  member of no other role (a filter could ``SET ROLE`` to any of them);
* ``CONNECT`` on the database, ``USAGE`` on the schema ``clipsql`` (and on pgvector's);
* ``SELECT`` on every table and view of ``clipsql`` but ``schema_version``, ``EXECUTE`` on
  its functions;
* ``ALTER DEFAULT PRIVILEGES FOR ROLE`` the owner (and any other owner of clipsql's tables);
* a last comment line with the ``CLIPSQL_FILTER_DATABASE_URL`` to set.

It runs again safely (every statement is idempotent); the role belongs to the whole cluster,
so running it again sets a new password for every database that uses it, unless the old one
is given.

>>> sql = render(["images"], [], ["app"], "app", "pw", "postgresql://x")
>>> print(sql, end="")  # doctest: +ELLIPSIS
-- ...
GRANT SELECT ON clipsql.images TO clipsql_filter;
...
-- CLIPSQL_FILTER_DATABASE_URL=postgresql://x
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from urllib.parse import quote

from clipsql import config
from clipsql.database import filter_login, migrations
from clipsql.errors import ConfigError

_TABLES = """
SELECT quote_ident(c.relname) FROM pg_class c WHERE c.relnamespace = 'clipsql'::regnamespace
   AND c.relkind IN ('r', 'v', 'm', 'p') AND c.relname <> ALL(%s) ORDER BY 1"""
_FUNCTIONS = """
SELECT p.oid::regprocedure::text FROM pg_proc p
 WHERE p.pronamespace = 'clipsql'::regnamespace ORDER BY 1"""
_OWNERS = """
SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c
 WHERE c.relnamespace = 'clipsql'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY 1"""
_VECTOR_SCHEMA = "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"


def identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier.

    >>> identifier('app'), identifier('we"ird')
    ('"app"', '"we""ird"')
    """
    _no_nul(name)
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a SQL string literal (standard_conforming_strings, PostgreSQL's default).

    >>> literal("it's")
    "'it''s'"
    """
    _no_nul(text)
    return "'" + text.replace("'", "''") + "'"


def _no_nul(text: str) -> None:
    if not isinstance(text, str) or not text or "\x00" in text:
        raise ConfigError(f"a role, database or password must be non-empty text without NUL, "
                          f"not {text!r}"[:200])


def new_password() -> str:
    """A random password for the filter role (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def filter_url(host: str | None, port: int | str | None, database: str, password: str) -> str:
    """The ``CLIPSQL_FILTER_DATABASE_URL`` that logs in as the filter role.

    >>> filter_url("db.example.com", 5432, "app", "p@ss word")
    'postgresql://clipsql_filter:p%40ss%20word@db.example.com:5432/app'
    >>> filter_url("/tmp/socket dir", 5432, "app", "pw")
    'postgresql://clipsql_filter:pw@/app?host=%2Ftmp%2Fsocket%20dir&port=5432'
    """
    user = f"{quote(filter_login.FILTER_ROLE, safe='')}:{quote(password, safe='')}"
    db = quote(database, safe="")
    if not host or host.startswith("/"):  # a Unix socket folder
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in
                         (("host", host), ("port", port)) if v)
        return f"postgresql://{user}@/{db}" + (f"?{query}" if query else "")
    shown = f"[{host}]" if ":" in host else host
    return f"postgresql://{user}@{shown}" + (f":{port}" if port else "") + f"/{db}"


def render(tables: Sequence[str], functions: Sequence[str], owners: Sequence[str],
           database: str, password: str, url: str, vector_schema: str | None = None) -> str:
    """The administrator's SQL (see module docs) for these ``tables`` and ``functions`` of
    the schema (names as PostgreSQL quotes them: ``images``, ``clipsql.f(integer)``)."""
    role = filter_login.FILTER_ROLE
    lines = [
        f"-- clipsql: the least-privilege login of SQL filters in the database {database}.",
        "-- Run once as a superuser, connected to that database (psql's -d), e.g. piped to psql.",
        f"-- {role} belongs to the whole cluster: this sets its password for every database",
        "-- that uses it (give the current one to keep it).",
        "DO $clipsql$",
        "BEGIN",
        f"    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal(role)}) THEN",
        f"        CREATE ROLE {role};",
        "    END IF;",
        "END",
        "$clipsql$;",
        f"ALTER ROLE {role} WITH LOGIN PASSWORD {literal(password)} NOSUPERUSER NOCREATEDB",
        "    NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;",
        "-- a filter could SET ROLE to any role it is a member of: it is a member of none",
        "DO $clipsql$",
        "DECLARE r regrole;",
        "BEGIN",
        "    FOR r IN SELECT roleid::regrole FROM pg_auth_members",
        f"              WHERE member = {literal(role)}::regrole LOOP",
        f"        EXECUTE format('REVOKE %s FROM {role}', r);",
        "    END LOOP;",
        "END",
        "$clipsql$;",
        f"GRANT CONNECT ON DATABASE {identifier(database)} TO {role};",
        f"GRANT USAGE ON SCHEMA clipsql TO {role};",
    ]
    if vector_schema and vector_schema != "public":
        lines += [f"GRANT USAGE ON SCHEMA {vector_schema} TO {role};",
                  f"ALTER ROLE {role} IN DATABASE {identifier(database)} "
                  f"SET search_path = \"$user\", public, {vector_schema};"]
    lines += [f"GRANT SELECT ON clipsql.{t} TO {role};" for t in tables]
    lines += [f"GRANT EXECUTE ON FUNCTION clipsql.{f.removeprefix('clipsql.')} TO {role};"
              for f in functions]
    lines.append("-- and what later migrations add")
    for owner in owners:
        for what, kind in (("SELECT", "TABLES"), ("EXECUTE", "FUNCTIONS")):
            lines.append(f"ALTER DEFAULT PRIVILEGES FOR ROLE {identifier(owner)} IN SCHEMA "
                         f"clipsql GRANT {what} ON {kind} TO {role};")
    lines.append(f"-- {config.ENV_FILTER_DATABASE_URL}={url}")
    return "\n".join(lines) + "\n"


def admin_sql(conn, *, owner: str | None = None, database: str | None = None,
              password: str | None = None) -> str:
    """The SQL for ``conn``'s database (its live clipsql schema, which must be up to date):
    ``owner`` (default: ``conn``'s user) is the role whose later migrations default
    privileges cover, ``database`` (default: ``conn``'s) the one it grants on, and
    ``password`` (default: a new random one) the filter role's."""
    have, latest = migrations.current_version(conn), migrations.available()[-1].version
    if have < latest:
        raise ConfigError(
            f"the clipsql schema of this database is at version {have}, this clipsql's is "
            f"{latest}: open the collection once as its owner (e.g. clipsql status) so that "
            "the migrations run, then generate the SQL again")
    owner = owner or conn.info.user
    database = database or conn.info.dbname
    password = new_password() if password is None else password
    tables = [r[0] for r in conn.execute(_TABLES, (list(filter_login.NOT_FOR_FILTERS),))]
    functions = [r[0] for r in conn.execute(_FUNCTIONS)]
    owners = sorted({owner, *(r[0] for r in conn.execute(_OWNERS))})
    row = conn.execute(_VECTOR_SCHEMA).fetchone()
    url = filter_url(conn.info.host, conn.info.port, database, password)
    return render(tables, functions, owners, database, password, url,
                  vector_schema=row[0] if row else None)
