"""The one guard around user-written SQL filters (``where=``, ``--where``, the web's box,
classify/flag filters). The security model is in ``docs/security-filters.md``.

A filter is a ``WHERE`` fragment with ``%s`` placeholders and bound parameters. It is
wrapped in parentheses on lines of its own (a trailing ``--`` comment cannot swallow the
conditions clipsql adds) and runs only inside :func:`read_only`, which

* runs the block in a read-only transaction that is always rolled back, so settings a
  fragment changes (``set_config(..., false)``) and transaction advisory locks do not
  outlive the call; session advisory locks it took are released afterwards;
* runs a filter only on a connection *logged in* as the least-privilege role
  ``clipsql_filter`` (:mod:`clipsql.database.filter_login`; never ``SET ROLE`` on a more
  privileged session, which a filter could reset), and refuses it with a
  :class:`~clipsql.errors.FilterSetupError` saying what an administrator runs when that login
  is impossible, or when the role lacks a grant on clipsql's own tables;
* enforces a deadline from outside the server (a timer that cancels the query), which a
  fragment cannot lift with ``set_config('statement_timeout', ...)``;
* turns driver errors into one :class:`~clipsql.errors.QueryError` of bounded length.

Percent signs (:func:`wrap`): ``%s`` outside string literals, quoted identifiers and
comments is a placeholder; ``%%`` there is one literal percent, and so is any other ``%``;
every ``%`` inside ``'...'``, ``E'...'``, ``$tag$...$tag$``, ``"..."`` and comments is
literal. So ``path LIKE '%/holidays/%'`` needs no doubling.

>>> wrap("taken_at > %s")
'(\\ntaken_at > %s\\n)'
>>> wrap("path LIKE '%/a/%' AND id %% 2 = 0")
"(\\npath LIKE '%%/a/%%' AND id %% 2 = 0\\n)"
>>> wrap("  ") is None
True
"""

from __future__ import annotations

import contextlib
import re
import threading

from clipsql.database import filter_login
from clipsql.database.placeholders import escape_percents, without_placeholders
from clipsql.errors import QueryError

__all__ = ["wrap", "bind", "read_only", "filtered", "describe", "escape_percents",
           "without_placeholders", "STATEMENT_TIMEOUT_MS", "FILTER_ROLE"]

#: The deadline of one filtered block (search, classify, flag), in milliseconds.
STATEMENT_TIMEOUT_MS = 30_000
#: The least-privilege role filters run as (migration 0006).
FILTER_ROLE = filter_login.FILTER_ROLE
#: Longest server message, and longest echo of the fragment, in an error.
MAX_MESSAGE_CHARS = 300
MAX_ECHO_CHARS = 200

def wrap(where: str | None) -> str | None:
    """The fragment ready to be AND-ed with other conditions, or None for no filter.

    Percent signs follow the rule of the module docs (``%s`` outside literals is a
    placeholder, every other ``%`` is literal).
    """
    if where is None:
        return None
    if not isinstance(where, str):
        raise QueryError(f"the WHERE fragment must be text, not {type(where).__name__}")
    if not where.strip():
        return None
    if "\x00" in where:
        raise QueryError("the WHERE fragment contains a NUL character")
    return f"(\n{escape_percents(where)}\n)"


def bind(conn, where, params=()) -> str | None:
    """The filter as the text the SQL functions take: wrapped (:func:`wrap`) and its
    parameters bound by psycopg's client-side quoting; None for no filter. Called inside
    :func:`read_only` so that a mismatch is reported as the filter's error."""
    import psycopg

    wrapped = wrap(where)
    if wrapped is None:
        return None
    return psycopg.ClientCursor(conn).mogrify(wrapped, list(params or ()))


class _Deadline:
    """Cancels the connection's running query when the block passes ``seconds``."""

    def __init__(self, conn, seconds: float):
        self.conn, self.seconds = conn, seconds
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            cancel = getattr(self.conn, "cancel_safe", None) or self.conn.cancel
            with contextlib.suppress(Exception):
                cancel()

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:  # waits for a cancel in flight
            self._done = True


class _DeadlinePassed(Exception):
    """The deadline passed while no statement was running (nothing was cancelled)."""


_ADVISORY = ("SELECT coalesce(array_agg(ARRAY[classid::int8, objid::int8, objsubid::int8] "
             "ORDER BY classid, objid, objsubid), '{}') FROM pg_locks "
             "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted")


def _release_new_advisory_locks(conn, before) -> None:
    """Release the session advisory locks taken since ``before`` (the filter's)."""
    with conn.transaction():
        now = conn.execute(_ADVISORY).fetchone()[0]
        new = [k for k in now if k not in before]
        if not new:
            return
        if not before:
            conn.execute("SELECT pg_advisory_unlock_all()")
            return
        for classid, objid, objsubid in new:
            if objsubid == 1:  # one bigint key, shown as its two halves
                key = (classid << 32) | objid
                args, sql = (key - (1 << 64) if key >= 1 << 63 else key,), "%s::int8"
            else:  # two int4 keys
                args, sql = (_signed32(classid), _signed32(objid)), "%s::int4, %s::int4"
            for fn in ("pg_advisory_unlock", "pg_advisory_unlock_shared"):
                for _ in range(1000):  # a lock taken many times is held that many times
                    if not conn.execute(f"SELECT {fn}({sql})", args).fetchone()[0]:
                        break


def _signed32(key: int) -> int:
    return key - (1 << 32) if key >= 1 << 31 else key


@contextlib.contextmanager
def read_only(conn, where: str | None = None, *, what: str = "search",
              timeout_s: float | None = None):
    """Run the body in a read-only, rolled-back transaction, with a deadline of
    ``timeout_s`` seconds (default :data:`STATEMENT_TIMEOUT_MS`) for the whole block,
    enforced by cancelling the query from outside.

    Yields the connection to run the block's statements on: with a filter, the login as
    ``clipsql_filter`` (:mod:`clipsql.database.filter_login`; :class:`FilterSetupError`
    when there is none); without one, ``conn`` itself (no user SQL runs).
    """
    import psycopg

    conn = filter_login.for_filter(conn, where)
    seconds = STATEMENT_TIMEOUT_MS / 1000 if timeout_s is None else float(timeout_s)
    deadline = _Deadline(conn, seconds)
    held: list = []
    try:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")
                held.append(conn.execute(_ADVISORY).fetchone()[0])
                deadline.start()
                try:
                    yield conn
                finally:
                    deadline.stop()
                if deadline.fired:  # the cancel landed between statements
                    raise _DeadlinePassed
        except BaseException:
            if held:
                with contextlib.suppress(psycopg.Error):  # keep the error that got us here
                    _release_new_advisory_locks(conn, held[0])
            raise
        if held:
            _release_new_advisory_locks(conn, held[0])
    except _DeadlinePassed:
        raise QueryError(_timeout_message(seconds)) from None
    except psycopg.Error as exc:
        if deadline.fired:
            raise QueryError(_timeout_message(seconds)) from None
        setup = _setup_problem(conn, exc) if where else None
        if setup is not None:
            raise setup from None
        raise QueryError(describe(exc, where, what, timeout_s=seconds,
                                  role=FILTER_ROLE if where else None)) from None
    except (IndexError, TypeError) as exc:  # placeholder / parameter count mismatch
        raise QueryError(f"the WHERE fragment and its parameters do not match: {exc}") from None


@contextlib.contextmanager
def filtered(conn, where: str | None = None, params=(), *, what: str = "search",
             timeout_s: float | None = None):
    """:func:`read_only` that also binds the filter: yields ``(connection, filter text)``,
    the text as :func:`bind` makes it (None for no filter), for the SQL functions that take
    a filter."""
    with read_only(conn, where, what=what, timeout_s=timeout_s) as ro:
        yield ro, bind(ro, where, params)


_DENIED = re.compile(r"^permission denied for (schema|table|view|materialized view|function|"
                     r"procedure) (.+)$")


def _setup_problem(conn, exc):
    """A :class:`FilterSetupError` when ``exc`` is a permission the filter role should have
    on clipsql's own objects (a missing grant: the server's set-up, not the fragment's
    fault), else None."""
    import psycopg

    diag = getattr(exc, "diag", None)
    found = _DENIED.match((diag.message_primary if diag else None) or "")
    if getattr(exc, "sqlstate", None) != "42501" or found is None:
        return None
    kind, name = found.group(1), found.group(2).strip('"')
    try:
        internal = filter_login.lacks_grant(conn, kind, name)
    except psycopg.Error:
        return None
    if not internal:
        return None
    return filter_login.refuse(f"{FILTER_ROLE} lacks a grant on clipsql's {kind} {name} "
                               f"({found.group(0)})")


def _timeout_message(seconds: float) -> str:
    return f"the query ran longer than {seconds:g} s and was cancelled"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def describe(exc, where: str | None = None, what: str = "search", *,
             timeout_s: float | None = None, role: str | None = None) -> str:
    """A one-line message of bounded length for a driver error raised while a filter ran
    (``role``: the role it ran as, named in permission errors)."""
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag else None) or (str(exc).strip().splitlines() or [""])[0]
    primary = _clip(" ".join(primary.split()), MAX_MESSAGE_CHARS)
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "25006":
        return f"the WHERE fragment tried to write ({primary}); filters are read-only"
    if sqlstate == "57014":
        seconds = STATEMENT_TIMEOUT_MS / 1000 if timeout_s is None else timeout_s
        return _timeout_message(seconds)
    if sqlstate == "42501" and role:
        primary += (f" (filters run read-only as the role {role}; an administrator can "
                    f"GRANT SELECT ON a table TO {role})")
    if where:
        return f"bad WHERE fragment {_clip(where, MAX_ECHO_CHARS)!r}: {primary}"
    return f"{what} failed: {primary}"
