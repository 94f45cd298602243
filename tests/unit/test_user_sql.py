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


# --- the administrator's SQL (clipsql.database.filter_setup) and the refusal ---------------

def _admin_sql(**kwargs):
    from clipsql.database import filter_setup

    args = dict(tables=["images", "index_config"], functions=["clipsql.text_embedding(text)"],
                owners=["app"], database="app", password="pw",
                url="postgresql://clipsql_filter:pw@db:5432/app")
    return filter_setup.render(**{**args, **kwargs})


def test_admin_sql_grants_every_object_it_is_given_and_ends_with_the_url():
    lines = _admin_sql().splitlines()
    for line in ["GRANT SELECT ON clipsql.images TO clipsql_filter;",
                 "GRANT SELECT ON clipsql.index_config TO clipsql_filter;",
                 "GRANT EXECUTE ON FUNCTION clipsql.text_embedding(text) TO clipsql_filter;",
                 'GRANT CONNECT ON DATABASE "app" TO clipsql_filter;',
                 "GRANT USAGE ON SCHEMA clipsql TO clipsql_filter;",
                 'ALTER DEFAULT PRIVILEGES FOR ROLE "app" IN SCHEMA clipsql GRANT SELECT ON '
                 "TABLES TO clipsql_filter;"]:
        assert line in lines
    assert lines[-1] == "-- CLIPSQL_FILTER_DATABASE_URL=postgresql://clipsql_filter:pw@db:5432/app"
    role = next(line for line in lines if line.startswith("ALTER ROLE clipsql_filter WITH"))
    assert "LOGIN PASSWORD 'pw' NOSUPERUSER NOCREATEDB" in role
    assert not any("schema_version" in line for line in lines)  # only what it was given


def test_admin_sql_quotes_what_it_is_given():
    sql = _admin_sql(password="x'; DROP ROLE postgres; --", database='we"ird', owners=["o'k"])
    assert "PASSWORD 'x''; DROP ROLE postgres; --' NOSUPERUSER" in sql
    assert 'GRANT CONNECT ON DATABASE "we""ird" TO clipsql_filter;' in sql
    assert 'FOR ROLE "o\'k" IN SCHEMA' in sql
    from clipsql.errors import ConfigError

    with pytest.raises(ConfigError, match="without NUL"):
        _admin_sql(password="a\x00b")
    with pytest.raises(ConfigError, match="non-empty"):
        _admin_sql(password="")


def test_the_filter_url_encodes_its_parts():
    from clipsql.database import filter_setup

    assert filter_setup.filter_url("db", 5433, "my db", "p@ss:w/rd") == (
        "postgresql://clipsql_filter:p%40ss%3Aw%2Frd@db:5433/my%20db")
    assert filter_setup.filter_url("::1", 5432, "app", "pw") == (
        "postgresql://clipsql_filter:pw@[::1]:5432/app")
    assert filter_setup.filter_url("/tmp/s", 5432, "app", "pw") == (
        "postgresql://clipsql_filter:pw@/app?host=%2Ftmp%2Fs&port=5432")
    assert len({filter_setup.new_password() for _ in range(20)}) == 20


def test_a_refusal_says_what_the_administrator_runs_within_one_web_detail():
    from clipsql.database import filter_login
    from clipsql.errors import DatabaseError, FilterSetupError
    from clipsql.web.schemas import MAX_DETAIL

    error = filter_login.refuse("clipsql_filter cannot log in: " + "x" * 5000)
    assert isinstance(error, FilterSetupError) and isinstance(error, DatabaseError)
    message = str(error)
    assert message.startswith("SQL filters are refused on this server: clipsql_filter cannot")
    assert "`clipsql admin sql`" in message and "CLIPSQL_FILTER_DATABASE_URL" in message
    assert len(message) <= MAX_DETAIL  # the web shows it whole
