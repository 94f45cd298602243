"""The connection a user's SQL filter runs on: one that *logs in* as ``clipsql_filter``,
and nothing else.

PostgreSQL lets any session go back to its *session user* from inside a query
(``set_config('role', 'none', true)``), with that user's rights; ``query_to_xml`` or
``ts_stat`` then run any string as it. So ``SET ROLE`` on a more privileged session is no
wall at all, and there is no fallback to it: a filter runs only on a second connection to the
same database whose session user is ``clipsql_filter`` (migration 0006, or the SQL of
:mod:`clipsql.database.filter_setup`), a role that is no superuser, may create nothing, and
is a member of no other role, so that resetting or setting the role inside a filter gives
back only ``clipsql_filter``. It is opened once per connection: with
``CLIPSQL_FILTER_DATABASE_URL`` where that is set (a server with password authentication),
else with the connection's own server, port and database and ``user=clipsql_filter``.

When that login is impossible (no role, no password, a wrong password or database, a role
with more rights, missing grants) every filter is refused with a
:class:`~clipsql.errors.FilterSetupError` that says what an administrator runs
(:data:`SETUP`); :func:`describe` says in one line how filters run on a server.
"""

from __future__ import annotations

import threading
import weakref

from clipsql import config
from clipsql.errors import DatabaseError, FilterSetupError

FILTER_ROLE = "clipsql_filter"
#: The command that prints the SQL an administrator runs once (clipsql.database.filter_setup).
ADMIN_COMMAND = "clipsql admin sql"
#: The clipsql tables filters may not read (everything else in the schema, they may).
NOT_FOR_FILTERS = ("schema_version",)
#: What an administrator does, appended to every refusal.
SETUP = (f"an administrator runs the SQL that `{ADMIN_COMMAND}` prints for this database "
         "(as a superuser, in this database), then sets "
         f"{config.ENV_FILTER_DATABASE_URL} to the URL on its last line "
         "(docs/security-filters.md)")
MAX_REASON_CHARS = 160

_logins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()

# Anything that would let a filter become more than the role: checked on every new login.
_ROLE_CHECK = """
SELECT current_database(), session_user, r.rolsuper, r.rolcreaterole, r.rolcreatedb,
       r.rolreplication, r.rolbypassrls,
       ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = r.oid
             ORDER BY 1)
  FROM pg_roles r WHERE r.rolname = session_user"""
# The grants a filter (and clipsql's own statements around it) needs, as the logged-in role.
_GRANTS_CHECK = """
SELECT ARRAY(SELECT 'USAGE ON SCHEMA clipsql' WHERE NOT has_schema_privilege('clipsql', 'USAGE'))
       || ARRAY(SELECT 'SELECT ON ' || c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'clipsql'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
                   AND c.relname <> ALL(%s) AND NOT has_table_privilege(c.oid, 'SELECT')
                 ORDER BY 1)
       || ARRAY(SELECT 'EXECUTE ON ' || p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'clipsql'::regnamespace
                   AND NOT has_function_privilege(p.oid, 'EXECUTE') ORDER BY 1)"""


def for_filter(conn, where: str | None):
    """The connection to run a block with the user filter ``where`` on: ``conn`` itself when
    there is no filter, else its login as ``clipsql_filter``; :class:`FilterSetupError` when
    there is none."""
    if not where or not str(where).strip():
        return conn
    return login(conn)


def login(conn):
    """A live connection logged in as the filter role to ``conn``'s database (opened once
    per connection and checked), or :class:`FilterSetupError` saying why not."""
    with _lock:
        found = _logins.get(conn)
        if found is not None and not found.closed and not found.broken:
            return found
        found = _open(conn)
        _logins[conn] = found
        weakref.finalize(conn, found.close)
        return found


def describe(conn) -> dict:
    """How filters run on ``conn``'s server, JSON-ready: ``ok``, ``runs_as`` (the role, or
    None) and a one-line ``summary``."""
    try:
        login(conn)
    except FilterSetupError as exc:
        return {"ok": False, "runs_as": None,
                "summary": f"refused ({exc.reason}); run `{ADMIN_COMMAND}` as an administrator "
                           "(docs/security-filters.md)"}
    return {"ok": True, "runs_as": FILTER_ROLE,
            "summary": f"logged in as {FILTER_ROLE} (least privilege)"}


def refuse(reason: str) -> FilterSetupError:
    """The error of a filter that cannot run, for ``reason`` (a server setup problem)."""
    return FilterSetupError(_clip(reason), SETUP)


def lacks_grant(conn, kind: str, name: str) -> bool:
    """Whether a ``permission denied for <kind> <name>`` on ``conn`` (a login as the role)
    comes from a grant the role should have and lacks on clipsql's own objects: the server's
    set-up, not what a filter chose to do (read ``schema_version``, lock rows, ...)."""
    if kind == "schema":
        sql = ("SELECT %s = 'clipsql' AND NOT has_schema_privilege('clipsql', 'USAGE')")
        return bool(conn.execute(sql, (name,)).fetchone()[0])
    if kind in ("table", "view", "materialized view"):
        sql = ("SELECT EXISTS (SELECT FROM pg_class WHERE relnamespace = 'clipsql'::regnamespace "
               "AND relname = %s AND relname <> ALL(%s) AND NOT has_table_privilege(oid, 'SELECT'))")
        return bool(conn.execute(sql, (name, list(NOT_FOR_FILTERS))).fetchone()[0])
    if kind in ("function", "procedure"):
        sql = ("SELECT EXISTS (SELECT FROM pg_proc WHERE pronamespace = 'clipsql'::regnamespace "
               "AND proname = %s AND NOT has_function_privilege(oid, 'EXECUTE'))")
        return bool(conn.execute(sql, (name,)).fetchone()[0])
    return False


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


def _open(conn):
    from psycopg.conninfo import make_conninfo

    from clipsql.database import connection

    url = config.filter_database_url()
    how = f"with {config.ENV_FILTER_DATABASE_URL}" if url else \
        f"({config.ENV_FILTER_DATABASE_URL} is not set)"
    if url is None:
        params = {k: v for k, v in conn.info.get_parameters().items() if k != "password"}
        params["user"] = FILTER_ROLE
        url = make_conninfo("", **params)
    try:
        found = connection.connect(url)
    except DatabaseError as exc:
        reason = str(exc).rpartition(": ")[2] or str(exc)
        raise refuse(f"{FILTER_ROLE} cannot log in {how}: {reason}") from None
    try:
        _check(found, conn.info.dbname)
    except BaseException:
        found.close()
        raise
    return found


def _check(found, database: str) -> None:
    """Refuse a login that is not exactly the filter role, in ``database``, with its grants."""
    row = found.execute(_ROLE_CHECK).fetchone()
    db, user, superuser, createrole, createdb, replication, bypassrls, member_of = row
    if (db, user) != (database, FILTER_ROLE):
        raise refuse(f"{config.ENV_FILTER_DATABASE_URL} logs in to the database {db!r} as "
                     f"{user!r}, not to {database!r} as {FILTER_ROLE}")
    extra = [name for name, has in (("SUPERUSER", superuser), ("CREATEROLE", createrole),
                                    ("CREATEDB", createdb), ("REPLICATION", replication),
                                    ("BYPASSRLS", bypassrls)) if has]
    extra += [f"member of {role}" for role in member_of]
    if extra:
        raise refuse(f"the role {FILTER_ROLE} has more rights than a filter may have "
                     f"({', '.join(extra)})")
    missing = found.execute(_GRANTS_CHECK, (list(NOT_FOR_FILTERS),)).fetchone()[0]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise refuse(f"{FILTER_ROLE} lacks {', '.join(missing[:3])}{more}")
