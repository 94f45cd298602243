"""Where ``%`` is a placeholder in a user-written SQL fragment, and how psycopg must see it.

``%s`` outside string literals, quoted identifiers and comments is a placeholder; ``%%``
there is one literal percent, and so is any other ``%``; every ``%`` inside ``'...'``,
``E'...'``, ``$tag$...$tag$``, ``"..."`` and comments is literal. So
``path LIKE '%/holidays/%'`` needs no doubling.
"""

from __future__ import annotations

import re

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")


def _is_ident(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) >= 0x80


def _segments(sql: str):
    """Yield ``(text, quoted)`` pieces of ``sql``: quoted is True inside string literals,
    dollar quotes, quoted identifiers and comments (an unterminated one runs to the end)."""
    i, n, start = 0, len(sql), 0
    while i < n:
        ch = sql[i]
        end = None
        if ch == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _is_ident(sql[i - 2]))
            end = _quote_end(sql, i, "'", backslash=escapes)
        elif ch == '"':
            end = _quote_end(sql, i, '"', backslash=False)
        elif ch == "-" and sql.startswith("--", i):
            nl = sql.find("\n", i)
            end = n if nl < 0 else nl
        elif ch == "/" and sql.startswith("/*", i):
            end = _comment_end(sql, i)
        elif ch == "$" and (i == 0 or not _is_ident(sql[i - 1])):
            m = _DOLLAR_TAG.match(sql, i)
            if m:
                close = sql.find(m.group(), m.end())
                end = n if close < 0 else close + len(m.group())
        if end is None:
            i += 1
            continue
        if start < i:
            yield sql[start:i], False
        yield sql[i:end], True
        i = start = end
    if start < n:
        yield sql[start:], False


def _quote_end(sql: str, i: int, q: str, *, backslash: bool) -> int:
    j, n = i + 1, len(sql)
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == q:
            if j + 1 < n and sql[j + 1] == q:  # '' or "" inside
                j += 2
                continue
            return j + 1
        j += 1
    return n


def _comment_end(sql: str, i: int) -> int:
    depth, j, n = 0, i, len(sql)
    while j < n:
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return n


_OUTSIDE = re.compile(r"%[s%]|%")


def _escape_outside(text: str) -> str:
    return _OUTSIDE.sub(lambda m: m.group() if len(m.group()) == 2 else "%%", text)


def escape_percents(where: str) -> str:
    """The fragment as psycopg must see it, by the percent rule of the module docs.

    >>> escape_percents("a LIKE '50%%' AND b = %s AND c %% 2 = 0 AND d % 3 = 1")
    "a LIKE '50%%%%' AND b = %s AND c %% 2 = 0 AND d %% 3 = 1"
    """
    return "".join(t.replace("%", "%%") if quoted else _escape_outside(t)
                   for t, quoted in _segments(where))


def without_placeholders(where: str) -> str:
    """A fragment that takes no parameters, ready for :func:`wrap`: every ``%`` outside
    literals (``%s`` too) becomes a literal percent. For boxes like the web's.

    >>> without_placeholders("id % 2 = 0 AND path LIKE '%s%' AND x = %s")
    "id %% 2 = 0 AND path LIKE '%s%' AND x = %%s"
    """
    return "".join(t if quoted else t.replace("%", "%%") for t, quoted in _segments(where))
