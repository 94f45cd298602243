"""The percent rule of user_sql.wrap() and the bounded error messages (no database)."""

import pytest

from clipsql.database import user_sql
from clipsql.database.user_sql import escape_percents, without_placeholders, wrap
from clipsql.errors import QueryError


@pytest.mark.parametrize(("fragment", "for_psycopg"), [
    ("camera_make = %s", "camera_make = %s"),
    ("path LIKE '%/holidays/%'", "path LIKE '%%/holidays/%%'"),
    ("id %% 2 = 0", "id %% 2 = 0"),                       # doubled outside: one literal %
    ("id % 2 = 0", "id %% 2 = 0"),                         # lone % outside: literal
    ("a = %s AND b % 3 = 1 AND c %% 4 = 0", "a = %s AND b %% 3 = 1 AND c %% 4 = 0"),
    ("path = '%s'", "path = '%%s'"),                       # %s inside a literal stays literal
    ("note = 'it''s 50%' AND x = %s", "note = 'it''s 50%%' AND x = %s"),
    ("note = 'it''s 50%%'", "note = 'it''s 50%%%%'"),      # every % in a literal is literal
    (r"p = E'a\'%s' AND x = %s", r"p = E'a\'%%s' AND x = %s"),   # E'' backslash escape
    (r"p = 'a\' AND x = %s", r"p = 'a\' AND x = %s"),     # standard string: \ is plain
    ("p = $$50%$$ AND x = %s", "p = $$50%%$$ AND x = %s"),
    ("p = $q$ a $$ %s $q$ AND x = %s", "p = $q$ a $$ %%s $q$ AND x = %s"),
    ('"odd%col" = %s', '"odd%%col" = %s'),                  # quoted identifier
    ('"a""%" = 1', '"a""%%" = 1'),
    ("x = %s -- 100% sure, %s\nAND y = %s", "x = %s -- 100%% sure, %%s\nAND y = %s"),
    ("x = %s /* 5% /* nested %s */ %s */ AND y = %s",
     "x = %s /* 5%% /* nested %%s */ %%s */ AND y = %s"),
    ("id = $1", "id = $1"),                                # not a dollar quote
    ("x = 'unterminated %s", "x = 'unterminated %%s"),
    ("a%%%s", "a%%%s"),                                   # %% then a placeholder
    ("%", "%%"),
    ("", ""),
])
def test_percent_rule(fragment, for_psycopg):
    assert escape_percents(fragment) == for_psycopg


def test_escaped_fragments_format_as_written():
    """What psycopg does with the escaped text: placeholders filled, every literal % kept."""
    fragment = "path LIKE '%/a/%' AND id %% 2 = 0 AND n % 3 = 1 AND x = %s -- 9% %s"
    assert escape_percents(fragment) % ("'v'",) == (
        "path LIKE '%/a/%' AND id % 2 = 0 AND n % 3 = 1 AND x = 'v' -- 9% %s")


def test_wrap():
    assert wrap("path LIKE '%x%'") == "(\npath LIKE '%%x%%'\n)"
    assert wrap(None) is None and wrap("  \n ") is None
    with pytest.raises(QueryError, match="NUL"):
        wrap("a = 1\x00")
    for bad in (1, b"id = 1", ["id = 1"]):
        with pytest.raises(QueryError, match="must be text"):
            wrap(bad)


def test_without_placeholders_keeps_every_percent_literal():
    """The web's box takes no parameters: its %s must not take another filter's parameter."""
    boxed = without_placeholders("path LIKE '%a%' AND x = %s AND id % 2 = 0 AND y = '%%'")
    assert boxed == "path LIKE '%a%' AND x = %%s AND id %% 2 = 0 AND y = '%%'"
    assert escape_percents(f"({boxed}) AND camera_make = %s") % ("'Canon'",) == (
        "(path LIKE '%a%' AND x = %s AND id % 2 = 0 AND y = '%%') AND camera_make = 'Canon'")


class _Diag:
    def __init__(self, message):
        self.message_primary = message


class _Err(Exception):
    def __init__(self, message, sqlstate=None):
        super().__init__(message)
        self.diag, self.sqlstate = _Diag(message), sqlstate


def test_describe_is_bounded():
    huge = 'invalid input syntax for type integer: "' + "x" * 10_000_000 + '"'
    where = "CAST(repeat('x', 100000000) AS int) = 1 AND " + "y" * 5000
    message = user_sql.describe(_Err(huge, "22P02"), where)
    assert len(message) < 700 and message.startswith("bad WHERE fragment \"CAST(repeat")
    assert "more characters" in message


def test_describe_messages():
    assert user_sql.describe(_Err("canceling statement", "57014"), "x", timeout_s=1.5) == (
        "the query ran longer than 1.5 s and was cancelled")
    denied = user_sql.describe(_Err("permission denied for function pg_read_file", "42501"),
                               "pg_read_file('/etc/passwd') IS NULL", role="clipsql_filter")
    assert "permission denied" in denied and "GRANT SELECT" in denied
    assert "read-only" in user_sql.describe(_Err("cannot execute INSERT", "25006"), "x")
    assert user_sql.describe(_Err("boom\nsecond line"), None, "classify") == (
        "classify failed: boom second line")  # one line, whatever the data held
