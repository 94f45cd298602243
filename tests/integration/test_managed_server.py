"""Filters on a server set up like a managed database (tests/integration/managed_cluster.py):
the owner ``app`` is no superuser and may not create roles, every login needs a scram
password over TCP, and ``public.customers`` holds the app's own secret.

Before an administrator runs ``clipsql admin sql``, every filtered surface (search, hybrid,
classify, flag, label-search, the CLI, the web API's where and camera filters) refuses with a
message that says what to run, and no payload reads the secret; after it, with
``CLIPSQL_FILTER_DATABASE_URL`` set, every surface works for the owner, and still no payload
reads it (docs/security-filters.md).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys

import httpx
import psycopg
import pytest
from click.testing import CliRunner

import clipsql
from clipsql.cli import main
from clipsql.errors import ClipsqlError, FilterSetupError, QueryError
from tests.conftest import make_image
from tests.integration.managed_cluster import CARD, FILTER_ROLE

LEGIT = "width > 0"
_TS_STAT = ("(SELECT string_agg(word, ' ') FROM ts_stat("
            "'SELECT to_tsvector(''simple'', card) FROM public.customers'))")
#: Each tries to read public.customers with more than the filter role's rights, and what
#: the filter role answers it. ``query_to_xml`` is the issue's own payload; this build of
#: PostgreSQL has no libxml ("unsupported XML feature"), so the ``ts_stat`` ones, which run
#: a query string just the same, are those that read the table where the wall is missing.
PAYLOADS = {
    "issue_query_to_xml": ("CAST(set_config('role','none',true) || query_to_xml("
                           "'select card from public.customers',true,true,'')::text AS int) = 1",
                           "permission denied|unsupported XML feature"),
    "role_reset": (f"CAST(set_config('role','none',true) || {_TS_STAT} AS int) = 1",
                   "permission denied for table customers"),
    "plain_subquery": ("CAST((SELECT card FROM public.customers LIMIT 1) AS int) = 1",
                       "permission denied for table customers"),
    "set_role_owner": (f"CAST(set_config('role','app',true) || {_TS_STAT} AS int) = 1",
                       "permission denied to set role"),
    "session_authorization": ("CAST(set_config('session_authorization','app',true) || "
                              f"{_TS_STAT} AS int) = 1",
                              "permission denied to set session authorization"),
}
SURFACES = ["search", "hybrid", "classify", "flag", "label_search"]


def run(db, surface: str, where: str):
    """One filtered call of the library (the surfaces of the CLI and the web call these)."""
    calls = {
        "search": lambda: db.search("red", where=where, limit=5),
        "hybrid": lambda: db.hybrid_search("red", where=where, limit=5),
        "classify": lambda: db.classify(["red", "blue"], where=where),
        "flag": lambda: db.flag("colors", 0.01, where=where),
        "label_search": lambda: db.label_search("red", "colors", where=where, limit=5),
    }
    return calls[surface]()


def leaked(text: str) -> bool:
    return CARD in text or "quokkafield" in text.lower()


@pytest.fixture(scope="module")
def loaded(managed_server, tiny_model, tmp_path_factory):
    """The owner's collection on the managed server: 8 images (2 of a Canon), labels,
    captions; loaded by ``app`` itself, so migration 0006 could not make the role."""
    managed_server.drop_filter_role()
    root = tmp_path_factory.mktemp("managed-photos")
    for i in range(8):
        make_image(root / f"img{i}.png", color=(30 * i, 200 - 20 * i, 90), pattern=i)
    with clipsql.connect(managed_server.app_url, model=tiny_model) as db:
        assert db.load(root).added == 8
        db.add_labels(["red", "blue"], label_set="colors")
        c = db.conn
        c.execute("UPDATE clipsql.images SET camera_make = 'Canon' WHERE id IN "
                  "(SELECT id FROM clipsql.images ORDER BY id LIMIT 2)")
        c.execute("INSERT INTO clipsql.captions (image_id, model, caption, image_sha256) "
                  "SELECT id, 'test/captions', 'a red square', sha256 FROM clipsql.images")
    return managed_server


@pytest.fixture
def before(loaded, monkeypatch):
    """No DBA step yet: no role clipsql_filter, no filter URL."""
    loaded.drop_filter_role()
    monkeypatch.delenv("CLIPSQL_FILTER_DATABASE_URL", raising=False)
    return loaded


def admin_sql(cluster, *args) -> str:
    result = CliRunner().invoke(main, ["admin", "sql", "--db", cluster.app_url, *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def filter_url(sql: str) -> str:
    last = sql.strip().splitlines()[-1]
    assert last.startswith("-- CLIPSQL_FILTER_DATABASE_URL=postgresql://clipsql_filter:")
    return last.partition("=")[2]


@pytest.fixture
def after(loaded, monkeypatch):
    """The DBA step done: ``clipsql admin sql``'s output applied as the superuser, and the
    URL it ends with set."""
    loaded.drop_filter_role()
    sql = admin_sql(loaded)
    loaded.run_as_superuser(sql)
    monkeypatch.setenv("CLIPSQL_FILTER_DATABASE_URL", filter_url(sql))
    return loaded


@pytest.fixture
def owner(loaded, tiny_model):
    with clipsql.connect(loaded.app_url, model=tiny_model) as db:
        yield db


def test_the_cluster_is_set_up_like_a_managed_database(loaded):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(loaded.url("app", password=""), connect_timeout=5).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(loaded.url("app", password="wrong"), connect_timeout=5).close()
    with loaded.superuser() as admin:
        hba = admin.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
        assert hba == [("scram-sha-256",)]
        assert admin.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert admin.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                             "WHERE rolname = 'app'").fetchone() == (False, False, False)
        assert admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                             "WHERE datname = 'app'").fetchone() == ("app",)
    with psycopg.connect(loaded.app_url) as app:
        assert app.execute("SELECT card FROM public.customers").fetchall() == [(CARD,)]
        assert app.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'"
                           ).fetchone() == ("vector",)


@pytest.mark.parametrize("surface", SURFACES)
def test_before_setup_filters_are_refused_with_what_to_run(before, owner, surface):
    with pytest.raises(FilterSetupError, match="clipsql admin sql") as err:
        run(owner, surface, LEGIT)
    assert "CLIPSQL_FILTER_DATABASE_URL" in str(err.value)
    assert len(owner.search("red", limit=3)) == 3  # no filter, no user SQL: the owner's own


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_before_setup_no_payload_leaks(before, owner, surface, payload):
    with pytest.raises(FilterSetupError) as err:
        run(owner, surface, PAYLOADS[payload][0])
    assert not leaked(str(err.value))


@pytest.mark.parametrize("how", ["no_url", "wrong_password", "wrong_database", "not_filter_role"])
def test_a_role_that_cannot_log_in_is_never_bypassed_by_set_role(before, owner, tiny_model,
                                                                  monkeypatch, how):
    """The leak of the issue: the role exists without a password (as compose made it), the
    owner is a member and may SET ROLE to it; that must not be used, ever."""
    with before.superuser() as admin:
        admin.execute(f"CREATE ROLE {FILTER_ROLE} LOGIN NOINHERIT")
        admin.execute(f"GRANT USAGE ON SCHEMA clipsql TO {FILTER_ROLE}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA clipsql TO {FILTER_ROLE}")
        admin.execute(f"GRANT {FILTER_ROLE} TO app")
        admin.execute(f"ALTER ROLE {FILTER_ROLE} PASSWORD 'right'")
    urls = {"wrong_password": before.url(FILTER_ROLE, "wrong"),
            "wrong_database": before.url(FILTER_ROLE, "right", database="postgres"),
            "not_filter_role": before.app_url}
    if how in urls:
        monkeypatch.setenv("CLIPSQL_FILTER_DATABASE_URL", urls[how])
    for surface in SURFACES:
        with pytest.raises(FilterSetupError, match="clipsql admin sql") as err:
            run(owner, surface, PAYLOADS["role_reset"][0])
        assert not leaked(str(err.value))
    monkeypatch.setenv("CLIPSQL_FILTER_DATABASE_URL", before.url(FILTER_ROLE, "right"))
    with clipsql.connect(before.app_url, model=tiny_model) as db:  # the right URL: walled
        with pytest.raises(ClipsqlError, match="permission denied for table customers") as err:
            db.search("red", where=PAYLOADS["role_reset"][0])
        assert not leaked(str(err.value))


def test_after_setup_every_filtered_surface_works_as_the_owner(after, owner):
    assert owner.conn.execute("SELECT current_user").fetchone() == ("app",)
    every = owner.search("red", limit=8)
    for surface in SURFACES:
        found = run(owner, surface, LEGIT)
        assert len(found) > 0, surface
    canon = owner.search("red", where="camera_make = %s", params=["Canon"], limit=8)
    assert len(canon) == 2 and len(every) == 8
    hybrid = owner.hybrid_search("square", where=LEGIT, limit=8)
    assert len(hybrid) == 8 and all(h.text_score is not None for h in hybrid)
    mine = owner.search("red", where="session_user = 'clipsql_filter'", limit=8)
    assert [h.id for h in mine] == [h.id for h in every]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_after_setup_no_payload_leaks(after, owner, surface, payload):
    sql, answer = PAYLOADS[payload]
    with pytest.raises(ClipsqlError, match=answer) as err:
        run(owner, surface, sql)
    assert not leaked(str(err.value))


def test_the_cli_refuses_then_works(before, tiny_model, monkeypatch):
    env = {"CLIPSQL_DATABASE_URL": before.app_url, "CLIPSQL_MODEL": tiny_model}
    runner = CliRunner()
    args = ["search", "red", "--where", LEGIT, "--json"]
    refused = runner.invoke(main, args, env=env)
    assert refused.exit_code == 1 and "clipsql admin sql" in refused.output
    status = runner.invoke(main, ["status"], env=env)
    assert status.exit_code == 0, status.output
    assert re.search(r"^filters: +refused \(.*\); run `clipsql admin sql` as an administrator",
                     status.output, re.M), status.output
    sql = admin_sql(before)
    before.run_as_superuser(sql)
    env["CLIPSQL_FILTER_DATABASE_URL"] = filter_url(sql)
    works = runner.invoke(main, args, env=env)
    assert works.exit_code == 0, works.output
    status = runner.invoke(main, ["status"], env=env)
    assert "filters:    logged in as clipsql_filter (least privilege)" in status.output
    leak = runner.invoke(main, ["search", "red", "--where", PAYLOADS["role_reset"][0]], env=env)
    assert leak.exit_code == 1 and "permission denied for table customers" in leak.output
    assert not leaked(leak.output)


@pytest.fixture
def web(loaded, tiny_model, tmp_path):
    """Start the web server on the owner's URL (after the fixture that sets the stage)."""
    from clipsql.web import create_app, serve_in_thread

    def start():
        app = create_app(loaded.app_url, model=tiny_model, thumbnails_dir=tmp_path)
        return serve_in_thread(app)
    return start


WEB_FILTERS = [{"where": LEGIT}, {"camera": "Canon"}, {"where": LEGIT, "hybrid": "true"}]


def test_the_web_api_refuses_before_setup(before, web):
    with web() as url, httpx.Client(base_url=url, timeout=60) as client:
        for extra in WEB_FILTERS:
            r = client.get("/api/search", params={"q": "red", **extra})
            assert r.status_code == 503, (extra, r.text)
            assert "clipsql admin sql" in r.json()["detail"]
        for payload, _ in PAYLOADS.values():
            r = client.get("/api/search", params={"q": "red", "where": payload})
            assert r.status_code in (400, 503) and not leaked(r.text)
        assert client.get("/api/search", params={"q": "red"}).status_code == 200
        facets = client.get("/api/facets")
        assert facets.status_code == 200 and facets.json()["images"] == 8
        status = client.get("/api/status").json()["filters"]
        assert status["ok"] is False and status["runs_as"] is None


def test_the_web_api_works_after_setup(after, web):
    with web() as url, httpx.Client(base_url=url, timeout=60) as client:
        results = {}
        for extra in WEB_FILTERS:
            r = client.get("/api/search", params={"q": "red", "limit": 8, **extra})
            assert r.status_code == 200, (extra, r.text)
            results[tuple(extra)] = r.json()["results"]
        assert len(results[("where",)]) == 8 and len(results[("camera",)]) == 2
        assert {h["camera_make"] for h in results[("camera",)]} == {"Canon"}
        for payload, _ in PAYLOADS.values():
            r = client.get("/api/search", params={"q": "red", "where": payload})
            assert r.status_code == 400 and not leaked(r.text)
        facets = client.get("/api/facets").json()
        assert facets["cameras"] == [{"camera_make": "Canon", "images": 2}]
        assert client.get("/api/status").json()["filters"] == {
            "ok": True, "runs_as": FILTER_ROLE,
            "summary": "logged in as clipsql_filter (least privilege)"}


def test_serve_says_how_filters_run_at_start_up(before, tiny_model):
    import queue
    import socket
    import threading
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "clipsql", "serve", "--db", before.app_url,
                             "--model", tiny_model, "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    said, deadline = [], time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not any("clipsql: open http" in x for x in said):
            with contextlib.suppress(queue.Empty):
                said.append(lines.get(timeout=1))
            if proc.poll() is not None and lines.empty():
                break
    finally:
        proc.terminate()
        proc.wait(30)
    filters = [line for line in said if line.startswith("clipsql: filters:")]
    assert len(filters) == 1, said
    assert "refused" in filters[0] and "clipsql admin sql" in filters[0]


def test_the_grants_are_those_of_a_superuser_migration(after, dsn):
    """What the admin SQL grants is what migration 0006 (and the default privileges it set)
    grant where the migrating role may create the role: the embedded server's."""
    query = ("SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'clipsql'::regnamespace "
             "AND c.relkind IN ('r', 'v') AND has_table_privilege('clipsql_filter', c.oid, 'SELECT') "
             "ORDER BY 1")
    with after.superuser() as managed, psycopg.connect(dsn) as embedded:
        granted = managed.execute(query).fetchall()
        assert granted == embedded.execute(query).fetchall()
        assert ("index_config",) in granted and ("captions",) in granted
        assert ("schema_version",) not in granted


def test_tables_of_later_migrations_are_covered(after):
    """ALTER DEFAULT PRIVILEGES FOR ROLE app: a table the owner adds later is readable."""
    with psycopg.connect(after.app_url, autocommit=True) as app:
        app.execute("CREATE TABLE clipsql.later_migration (x int)")
        try:
            assert app.execute("SELECT has_table_privilege('clipsql_filter', "
                               "'clipsql.later_migration', 'SELECT')").fetchone() == (True,)
        finally:
            app.execute("DROP TABLE clipsql.later_migration")


def test_a_filter_role_with_more_rights_is_refused(after, tiny_model):
    with after.superuser() as admin:
        admin.execute(f"GRANT app TO {FILTER_ROLE}")
    try:
        with clipsql.connect(after.app_url, model=tiny_model) as db:
            with pytest.raises(FilterSetupError, match="member of app") as err:
                db.search("red", where=PAYLOADS["set_role_owner"][0])
            assert not leaked(str(err.value))
            assert db.status()["filters"]["ok"] is False
    finally:
        with after.superuser() as admin:
            admin.execute(f"REVOKE app FROM {FILTER_ROLE}")


def test_a_missing_grant_is_the_servers_fault_not_the_filters(after, tiny_model):
    with clipsql.connect(after.app_url, model=tiny_model) as db:
        assert len(db.search("red", where=LEGIT, limit=3)) == 3  # logged in, grants checked
        for own_fault in ("id IN (SELECT id FROM clipsql.images FOR UPDATE)",
                          "EXISTS (SELECT 1 FROM clipsql.schema_version)"):
            with pytest.raises(QueryError, match="permission denied for table") as err:
                db.search("red", where=own_fault)
            assert not isinstance(err.value, FilterSetupError)
            assert str(err.value).startswith("bad WHERE fragment")
        with after.superuser() as admin:
            admin.execute(f"REVOKE SELECT ON clipsql.index_config FROM {FILTER_ROLE}")
        with pytest.raises(FilterSetupError, match="index_config.*clipsql admin sql") as err:
            db.search("red", where=LEGIT, limit=3)
        assert "bad WHERE fragment" not in str(err.value)
    with clipsql.connect(after.app_url, model=tiny_model) as db:  # a new login checks first
        with pytest.raises(FilterSetupError, match="lacks SELECT ON clipsql.index_config"):
            db.search("red", where=LEGIT, limit=3)


def test_a_given_password_is_applied_as_given(before, tiny_model, monkeypatch):
    password = "it's a p@ss:word; -- /x%"
    sql = admin_sql(before, "--filter-password", password, "--owner", "app",
                    "--database", "app")
    before.run_as_superuser(sql)
    url = filter_url(sql)
    with psycopg.connect(url) as login:
        assert login.execute("SELECT session_user, current_database()").fetchone() == (
            FILTER_ROLE, "app")
    monkeypatch.setenv("CLIPSQL_FILTER_DATABASE_URL", url)
    with clipsql.connect(before.app_url, model=tiny_model) as db:
        assert len(db.search("red", where=LEGIT, limit=3)) == 3
    again = admin_sql(before, "--filter-password", password)  # a second run changes nothing
    before.run_as_superuser(again)
    assert filter_url(again) == url


def test_admin_sql_needs_a_migrated_schema(loaded):
    result = CliRunner().invoke(main, ["admin", "sql", "--db", loaded.url(database="postgres")])
    assert result.exit_code == 1
    assert "open the collection once as its owner" in result.output
