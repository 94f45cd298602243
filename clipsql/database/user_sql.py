"""The one guard around user-written SQL filters (``where=``, ``--where``, the web's box).

A filter is a ``WHERE`` fragment with ``%s`` placeholders and bound parameters. It is
wrapped in parentheses on lines of its own (a trailing ``--`` comment cannot swallow the
conditions clipsql adds) and runs only inside :func:`read_only`: a read-only transaction
with a statement timeout that is always rolled back, so settings a fragment changes
(``set_config(..., false)``) do not outlive the call. Driver errors become one
:class:`~clipsql.errors.QueryError` that names the fragment.

>>> wrap("taken_at > %s")
'(\\ntaken_at > %s\\n)'
>>> wrap("  ") is None
True
"""

from __future__ import annotations

import contextlib

from clipsql.errors import QueryError

STATEMENT_TIMEOUT_MS = 30_000


def wrap(where: str | None) -> str | None:
    """The fragment ready to be AND-ed with other conditions, or None for no filter."""
    if where is None or not str(where).strip():
        return None
    if not isinstance(where, str):
        raise QueryError(f"the WHERE fragment must be text, not {type(where).__name__}")
    if "\x00" in where:
        raise QueryError("the WHERE fragment contains a NUL character")
    return f"(\n{where}\n)"


@contextlib.contextmanager
def read_only(conn, where: str | None = None, *, what: str = "search"):
    """Run the body in a read-only, rolled-back transaction with a statement timeout."""
    import psycopg

    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            yield
    except psycopg.Error as exc:
        raise QueryError(describe(exc, where, what)) from None
    except (IndexError, TypeError) as exc:  # placeholder / parameter count mismatch
        raise QueryError(f"the WHERE fragment and its parameters do not match: {exc}") from None


def describe(exc, where: str | None = None, what: str = "search") -> str:
    """A one-line message for a driver error raised while a user filter ran."""
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag else None) or str(exc).strip().splitlines()[0]
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "25006":
        return f"the WHERE fragment tried to write ({primary}); filters are read-only"
    if sqlstate == "57014":
        return f"the query ran longer than {STATEMENT_TIMEOUT_MS // 1000} s and was cancelled"
    if where:
        return f"bad WHERE fragment {where!r}: {primary}"
    return f"{what} failed: {primary}"
