"""Hostile SQL filters, executed for real on PostgreSQL (docs/security-filters.md).

Each expression runs as a user filter through search, classify, flag or label search: it
must be refused by privilege (the role clipsql_filter), cut off by a deadline it cannot lift,
leave no setting or lock behind, and produce a short message.
"""

import os
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from clipsql.database import user_sql
from clipsql.errors import QueryError

HOSTNAME = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""

HOSTILE = {
    "read_file": "pg_read_file('/etc/passwd') IS NOT NULL",
    "ls_dir": "(SELECT count(*) FROM pg_ls_dir('.')) > 0",
    "cast_leak": "pg_read_file('/etc/hostname')::int = 1",
    "binary_file": "pg_read_binary_file('/etc/passwd') IS NOT NULL",
    "terminate": "pg_terminate_backend({pid})",
    "switch_wal": "pg_switch_wal() IS NOT NULL",
    "stat_reset": "pg_stat_reset() IS NOT NULL",
    "lo_import": "lo_import('/etc/passwd') IS NOT NULL",
}


@pytest.fixture
def loaded(db, photo_folder):
    db.load(photo_folder)
    return db


@pytest.fixture
def other(dsn):
    """A second session on the same database: a victim, and a witness of locks."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def short_deadline(monkeypatch):
    monkeypatch.setattr(user_sql, "STATEMENT_TIMEOUT_MS", 1500)
    return 1.5


#: The attacks below sleep 30 s in PostgreSQL (per row, or once): a call that returns within
#: CUT_OFF_S was cut off at its deadline (or never slept), one that was not takes 30 s or more.
#: Generous on purpose: how soon after the deadline it returns is not what is tested (a bound
#: of a few seconds fails on a busy machine).
CUT_OFF_S = 20


def _flag(db, where, batch=None):
    """flag() through the library, optionally with a small cursor batch."""
    from clipsql.query import label_sets, zeroshot

    if not label_sets.sets(db.conn):
        db.add_labels(["red", "blue"])
    chosen = label_sets.resolve(db.conn, db.model, "default")
    kwargs = {"batch": batch} if batch else {}
    return zeroshot.flag(db.conn, chosen, 0.01, where=where, **kwargs)


RUNNERS = {
    "search": lambda db, where: db.search("x", where=where, limit=5),
    "classify": lambda db, where: db.classify(["red", "blue"], where=where),
    "flag": _flag,
    "label_search": lambda db, where: (db.add_labels(["red"], label_set="hostile"),
                                       db.label_search("red", "hostile", where=where)),
}


@pytest.mark.parametrize("runner", ["search", "classify"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_superuser_functions_are_refused(loaded, other, runner, name):
    assert loaded.conn.execute("SELECT usesuper FROM pg_user WHERE usename = current_user"
                               ).fetchone()[0], "the embedded server's role is a superuser"
    pid = other.info.backend_pid
    where = HOSTILE[name].format(pid=pid)
    with pytest.raises(QueryError, match="permission denied") as err:
        RUNNERS[runner](loaded, where)
    message = str(err.value)
    assert len(message) < 600 and "root:" not in message
    if HOSTNAME:
        assert HOSTNAME not in message.replace(where, "")
    assert other.execute("SELECT 1").fetchone() == (1,)  # the other session is alive
    assert loaded.conn.execute("SELECT current_user").fetchone()[0] != "clipsql_filter"


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_filters_run_as_the_filter_role(loaded, runner):
    before = loaded.conn.execute("SELECT current_user, session_user").fetchone()
    assert before[0] != "clipsql_filter"
    found = RUNNERS[runner](loaded, "current_user = 'clipsql_filter' AND session_user <> 'x'")
    found = found[-1] if isinstance(found, tuple) else found
    assert len(found) > 0
    assert loaded.conn.execute("SELECT current_user, session_user").fetchone() == before
    # and what the role cannot see, a filter cannot see
    with pytest.raises(QueryError, match="permission denied"):
        RUNNERS[runner](loaded, "EXISTS (SELECT 1 FROM clipsql.schema_version)")


def test_grant_your_own_tables(loaded):
    conn = loaded.conn
    conn.execute("CREATE TABLE public.my_products (path_part text)")
    conn.execute("INSERT INTO public.my_products VALUES ('/a/')")
    where = "EXISTS (SELECT 1 FROM public.my_products p WHERE path LIKE '%' || p.path_part || '%')"
    with pytest.raises(QueryError, match="permission denied for table my_products.*GRANT"):
        loaded.search("x", where=where)
    conn.execute("GRANT SELECT ON public.my_products TO clipsql_filter")
    hits = loaded.search("x", where=where, limit=12)
    assert len(hits) == 6 and all("/a/" in h.path for h in hits)


def test_missing_role_with_a_superuser_is_refused(loaded, monkeypatch):
    from clipsql.database import filter_login
    from clipsql.errors import FilterSetupError

    monkeypatch.setattr(filter_login, "FILTER_ROLE", "clipsql_filter_absent")
    for run in (lambda: loaded.search("x", where="true"),
                lambda: loaded.classify(["red", "blue"], where="true")):
        with pytest.raises(FilterSetupError, match="clipsql_filter_absent cannot log in.*"
                                                   "`clipsql admin sql`"):
            run()
    assert len(loaded.search("x", limit=3)) == 3  # no user SQL: clipsql's own query runs
    assert loaded.status()["filters"]["ok"] is False


def test_status_says_filters_log_in_as_the_filter_role(loaded):
    assert loaded.status()["filters"] == {
        "ok": True, "runs_as": "clipsql_filter",
        "summary": "logged in as clipsql_filter (least privilege)"}


# Statement 1 of a block lifts the timeout; any later statement sleeps, so only a deadline
# enforced from outside the server can stop it (statement_timeout is disarmed by then).
LIFT_THEN_SLEEP = (
    "CASE WHEN coalesce(current_setting('hostile.t', true), '') IN ('', statement_timestamp()::text) "
    "THEN set_config('hostile.t', statement_timestamp()::text, true) IS NOT NULL "
    "     AND set_config('statement_timeout', '0', true) IS NOT NULL "
    "ELSE pg_sleep(30) IS NOT NULL END")
# A search runs its filter in one statement (clipsql.relevant_ranking, whose EXECUTEs are
# inside it): the first row the filter sees lifts the timeout, every later row sleeps.
LIFT_THEN_SLEEP_PER_ROW = (
    "CASE WHEN coalesce(current_setting('hostile.lifted', true), '') = '' "
    "THEN set_config('hostile.lifted', 'yes', true) IS NOT NULL "
    "     AND set_config('statement_timeout', '0', true) IS NOT NULL "
    "ELSE pg_sleep(30) IS NOT NULL END")


@pytest.mark.parametrize("runner", ["search", "search-exact", "classify", "flag"])
def test_deadline_cannot_be_lifted(loaded, short_deadline, runner):
    runs = {
        # one statement: the index scan's second row sleeps (then an exact scan would follow)
        "search": lambda: loaded.search("x", where=LIFT_THEN_SLEEP_PER_ROW, limit=50,
                                        strategy="index"),
        "search-exact": lambda: loaded.search("x", where=LIFT_THEN_SLEEP_PER_ROW, limit=50,
                                              strategy="exact"),
        # stored results: the cursor, then a count of all matches: statement 2
        "classify": lambda: loaded.classify("default", where=LIFT_THEN_SLEEP, store=True),
        # a cursor fetched two rows at a time: the second FETCH
        "flag": lambda: _flag(loaded, LIFT_THEN_SLEEP, batch=2),
    }
    _flag(loaded, "true")  # labels in place before the clock starts
    started = time.monotonic()
    with pytest.raises(QueryError, match=r"^the query ran longer than 1\.5 s and was cancelled$"):
        runs[runner]()
    assert time.monotonic() - started < CUT_OFF_S
    conn = loaded.conn
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"  # the server default
    assert len(loaded.search("x", limit=3)) == 3  # the connection is usable


def test_a_search_runs_its_filter_in_one_statement(loaded, short_deadline):
    """What the attack above relies on: every row a search's filter sees is seen within one
    statement (so its statement_timeout, armed when the statement starts, holds too); the
    attack that sleeps from the block's second statement on never sleeps in a search."""
    started = time.monotonic()
    hits = loaded.search("x", where=LIFT_THEN_SLEEP, limit=50, strategy="index")
    assert len(hits) == 12 and time.monotonic() - started < CUT_OFF_S  # no row slept


def test_plain_sleep_is_cut_off(loaded, short_deadline):
    started = time.monotonic()
    with pytest.raises(QueryError, match="longer than 1.5 s"):
        loaded.search("x", where="pg_sleep(30) IS NOT NULL")
    assert time.monotonic() - started < CUT_OFF_S


def test_deadline_parameter(loaded):
    started = time.monotonic()
    with pytest.raises(QueryError, match="longer than 1 s"):
        with user_sql.read_only(loaded.conn, "x", timeout_s=1) as conn:
            conn.execute("SELECT set_config('statement_timeout', '0', true)")
            conn.execute("SELECT pg_sleep(30)")
    assert time.monotonic() - started < CUT_OFF_S
    # between statements: no statement to cancel, the block still fails
    with pytest.raises(QueryError, match="longer than 0.5 s"):
        with user_sql.read_only(loaded.conn, "x", timeout_s=0.5):
            time.sleep(1)
    assert loaded.conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("runner", ["search", "classify", "flag"])
def test_settings_do_not_outlive_the_call(loaded, runner):
    conn = loaded.conn
    before = conn.execute("SHOW statement_timeout").fetchone()[0], \
        conn.execute("SHOW search_path").fetchone()[0]
    where = ("set_config('hostile.leak', 'yes', false) IS NOT NULL "
             "AND set_config('statement_timeout', '1', false) IS NOT NULL "
             "AND set_config('search_path', 'pg_temp', false) IS NOT NULL")
    RUNNERS[runner](loaded, where)
    assert conn.execute("SELECT current_setting('hostile.leak', true)").fetchone()[0] in (None, "")
    assert (conn.execute("SHOW statement_timeout").fetchone()[0],
            conn.execute("SHOW search_path").fetchone()[0]) == before
    assert conn.execute("SELECT current_user").fetchone()[0] != "clipsql_filter"


def _free(conn, *key) -> bool:
    args = ", ".join(["%s"] * len(key))
    free = conn.execute(f"SELECT pg_try_advisory_lock({args})", key).fetchone()[0]
    if free:
        conn.execute(f"SELECT pg_advisory_unlock({args})", key)
    return free


@pytest.mark.parametrize("runner", ["search", "classify", "flag"])
def test_advisory_locks_do_not_outlive_the_call(loaded, other, runner):
    conn = loaded.conn
    conn.execute("SELECT pg_advisory_lock(777)")  # the caller's own lock stays
    where = ("pg_advisory_lock(4242) IS NOT NULL AND pg_advisory_lock(4242) IS NOT NULL "
             "AND pg_advisory_xact_lock(4243) IS NOT NULL AND pg_advisory_lock(7, -8) IS NOT NULL "
             "AND pg_advisory_lock_shared(-5000000000) IS NOT NULL")
    RUNNERS[runner](loaded, where)
    assert _free(other, 4242) and _free(other, 4243) and _free(other, 7, -8)
    assert _free(other, -5000000000)
    assert not _free(other, 777)
    conn.execute("SELECT pg_advisory_unlock(777)")
    RUNNERS[runner](loaded, "pg_advisory_lock(4244) IS NOT NULL")  # none held before: unlock_all
    assert _free(other, 4244) and _free(other, 777)


def test_literal_percent_in_the_python_api(loaded):
    a = loaded.search("x", where="path LIKE '%/a/%'", limit=12)
    assert len(a) == 6 and all("/a/" in h.path for h in a)
    png = loaded.search("x", where="path LIKE '%/a/%' AND format = %s", params=["PNG"], limit=12)
    assert {h.format for h in png} == {"PNG"} and all("/a/" in h.path for h in png)
    assert len(loaded.search("x", where="id % 2 = 0", limit=12)) == 6
    assert len(loaded.search("x", where="id %% 2 = 0", limit=12)) == 6
    assert loaded.search("x", where="path = '%s'", limit=12) == []  # a literal, not a placeholder
    assert len(loaded.classify(["red", "blue"], where="path LIKE '%/b/%'").ids) == 6


def test_literal_percent_in_the_cli(dsn, tiny_model, photo_folder):
    import json

    from click.testing import CliRunner

    from clipsql.cli import main

    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    runner = CliRunner()
    assert runner.invoke(main, ["load", str(photo_folder)], env=env).exit_code == 0
    result = runner.invoke(main, ["search", "x", "--where", "path LIKE '%/a/%'", "--limit", "12",
                                  "--json"], env=env)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 6 and all("/a/" in h["path"] for h in hits)
    denied = runner.invoke(main, ["search", "x", "--where", "pg_read_file('/etc/passwd') <> ''"],
                           env=env)
    assert denied.exit_code == 1 and "permission denied" in denied.output
    assert "root:" not in denied.output and "Traceback" not in denied.output


def test_huge_error_messages_are_truncated(loaded):
    where = "CAST(repeat('x', 10000000) AS int) = 1"
    with pytest.raises(QueryError, match="invalid input syntax") as err:
        loaded.search("x", where=where)
    assert len(str(err.value)) < 700
    with pytest.raises(QueryError) as err:
        loaded.search("x", where="id::text = " + "'" + "y" * 20000 + "' OR nope")
    assert len(str(err.value)) < 700 and "nope" in str(err.value)


def test_nul_and_non_text_are_refused(loaded):
    with pytest.raises(QueryError, match="NUL"):
        loaded.search("x", where="true\x00")
    with pytest.raises(QueryError, match="must be text"):
        loaded.search("x", where=1)


@pytest.fixture
def owner_dsn(pg_admin_url):
    """A database owned by a new LOGIN role without superuser or CREATEROLE."""
    if os.environ.get("CLIPSQL_TEST_DATABASE_URL"):
        pytest.skip("needs an embedded server that trusts local connections")
    from urllib.parse import urlsplit, urlunsplit

    role, name = f"clipsql_owner_{uuid.uuid4().hex[:8]}", f"clipsql_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'CREATE DATABASE "{name}" OWNER {role}')
        with psycopg.connect(urlunsplit(urlsplit(pg_admin_url)._replace(path="/" + name)),
                             autocommit=True) as db:
            db.execute("CREATE EXTENSION IF NOT EXISTS vector")
    parts = urlsplit(pg_admin_url)
    netloc = role + "@" + parts.netloc.rpartition("@")[2]
    try:
        yield role, urlunsplit(parts._replace(netloc=netloc, path="/" + name))
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_non_superuser_owner(owner_dsn, pg_admin_url, tiny_model, photo_folder):
    """An owner that is no superuser: filters log in as the role too."""
    import clipsql

    role, url = owner_dsn
    with clipsql.connect(url, model=tiny_model) as db:  # migrations run as the owner
        db.load(photo_folder)
        assert db.conn.execute("SELECT current_user").fetchone()[0] == role
        with pytest.raises(QueryError, match="permission denied"):
            db.search("x", where="pg_read_file('/etc/passwd') IS NOT NULL")
        hits = db.search("x", where="session_user = 'clipsql_filter'", limit=12)
        assert len(hits) == 12
        assert db.conn.execute("SELECT current_user").fetchone()[0] == role


def test_filters_run_on_a_connection_that_logged_in_as_the_filter_role(loaded):
    assert loaded.conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user"
                               ).fetchone()[0]  # the collection itself is a superuser
    hits = loaded.search("x", where="session_user = 'clipsql_filter'", limit=3)
    assert len(hits) == 3
    assert len(loaded.classify(["red", "blue"], where="session_user = 'clipsql_filter'")) > 0


def test_role_cannot_be_reset_from_inside_a_filter(loaded):
    """Resetting the role goes back to the session user, which is clipsql_filter itself."""
    where = ("EXISTS (SELECT 1 FROM ts_stat(CASE WHEN set_config('role', 'none', true) "
             "IS NOT NULL THEN 'SELECT to_tsvector(pg_read_file(''/etc/hostname''))' END))")
    with pytest.raises(QueryError, match="permission denied"):
        loaded.search("x", where=where)
