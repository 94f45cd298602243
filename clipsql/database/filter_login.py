"""The connection a user's SQL filter runs on: one that *logs in* as ``clipsql_filter``.

``SET ROLE`` alone is not enough when clipsql connects as a superuser (the embedded
server's default): PostgreSQL always lets a session go back to its session user
(``set_config('role', 'none', true)`` inside an expression), and with it the superuser's
rights. So a filter runs on a second connection to the same database whose session user is
``clipsql_filter`` itself (migration 0006: a LOGIN role without superuser rights); resetting
the role there gives back only ``clipsql_filter``. It is opened once per connection, with
the same server, port and database and ``user=clipsql_filter`` (a server with password
authentication needs ``CLIPSQL_FILTER_DATABASE_URL`` with the role's password).

A non-superuser session that cannot log in as the role runs filters on its own connection
under ``SET LOCAL ROLE clipsql_filter`` (:mod:`clipsql.database.user_sql`); a superuser
session that cannot is refused: user SQL never runs where it could become a superuser.
"""

from __future__ import annotations

import threading
import weakref

from clipsql import config
from clipsql.errors import DatabaseError, QueryError

FILTER_ROLE = "clipsql_filter"

_logins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_superuser: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def for_filter(conn, where: str | None):
    """The connection to run a block with the user filter ``where`` on (``conn`` itself
    when there is no filter)."""
    if not where or not str(where).strip():
        return conn
    login = _login(conn)
    if login is not None:
        return login
    if _is_superuser(conn):
        raise QueryError(
            f"refusing to run a SQL filter on a superuser connection: the role {FILTER_ROLE} "
            "cannot log in to this database (create it by running clipsql's migrations as a "
            f"superuser, or give its URL with a password in {config.ENV_FILTER_DATABASE_URL}), "
            "or connect as a non-superuser role; see the security docs")
    return conn


def _is_superuser(conn) -> bool:
    if conn not in _superuser:
        _superuser[conn] = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = session_user").fetchone()[0]
    return _superuser[conn]


def _login(conn):
    """A live connection logged in as the filter role to ``conn``'s database, or None."""
    with _lock:
        login = _logins.get(conn)
        if login is not None and not login.closed and not login.broken:
            return login
        login = _open(conn)
        if login is not None:
            _logins[conn] = login
            weakref.finalize(conn, login.close)
        return login


def _open(conn):
    from psycopg.conninfo import make_conninfo

    from clipsql.database import connection

    url = config.filter_database_url()
    if url is None:
        params = {k: v for k, v in conn.info.get_parameters().items() if k != "password"}
        params["user"] = FILTER_ROLE
        url = make_conninfo("", **params)
    try:
        login = connection.connect(url)
    except DatabaseError:
        return None
    same = login.execute("SELECT current_database(), session_user").fetchone()
    if same != (conn.info.dbname, FILTER_ROLE):
        login.close()
        return None
    return login
