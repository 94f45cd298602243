"""docker/: Docker cannot run on the test machines, so check what can be checked without it:
the compose files parse and are wired together (clipsql connects as the database's owner,
never the superuser, with the filter role's URL; every variable is required or defaulted
and documented; init runs before serve, which has a healthcheck and a restart policy; a
local checkpoint is mounted where the model spec points), every clipsql command line in
them is a real command with real options, and the Dockerfile installs clipsql with the
README's own install command, ships the init script with psql and runs the real
``clipsql serve``. ``tests/integration/test_docker_init.py`` runs the init script itself
against a real PostgreSQL."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def docker_env() -> dict:
    env = {}
    for args in instructions("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def readme_install_commands() -> list[str]:
    """The README's install line: the fenced shell line marked ``# install``."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             if re.search(r"#\s*install\s*$", line) and "pip install" in line]
    assert lines, "README.md has no install line marked with '# install'"
    return [c.strip() for c in lines[0].split("#")[0].split("&&")]


def normalise(command: str) -> list[str]:
    """A command's words with the development-only parts dropped: -e, test extras, paths."""
    words = []
    for word in shlex.split(command):
        if word in ("-e", "--editable"):
            continue
        word = re.sub(r"\[[^\]]*\]$", "", word)          # ".[test]" -> "."
        word = re.sub(r"^(/opt/venv|\.venv)", "VENV", word)
        words.append(word)
    return words


@pytest.fixture(scope="module")
def compose():
    import yaml  # PyYAML: in the [test] extras

    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_pgvector_and_clipsql_wired_together(compose):
    db, app = compose["services"]["db"], compose["services"]["clipsql"]
    assert (ROOT / "docker" / db["build"]["context"] / db["build"]["dockerfile"]).resolve() == \
        (DOCKER / "Dockerfile.db").resolve()
    base = [line for line in (DOCKER / "Dockerfile.db").read_text().splitlines()
            if line.startswith("FROM ")]
    assert base == ["FROM pgvector/pgvector:pg17"]
    url = url_of(app["environment"]["CLIPSQL_DATABASE_URL"])
    assert (url.hostname, url.port) == ("db", 5432)
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert (ROOT / "docker" / app["build"]["context"] / app["build"]["dockerfile"]).resolve() == \
        (DOCKER / "Dockerfile").resolve()


def test_compose_serves_the_ui_with_photos_and_a_persistent_model_cache(compose):
    app = compose["services"]["clipsql"]
    command = app["command"]
    assert command[:2] == ["clipsql", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert app["ports"] == [f"127.0.0.1:{port}:{port}"]  # published to this machine only
    mounts = {}
    for volume in app["volumes"]:  # SOURCE:TARGET[:MODE]; SOURCE may be ${VAR:?message}
        source, target, mode = re.fullmatch(r"(.+):(/[^:]*)(?::(ro|rw))?", volume).groups()
        mounts[target] = (source, mode)
    assert mounts["/photos"][1] == "ro" and mounts["/photos"][0].startswith("${PHOTOS")
    named = set(compose["volumes"])
    for variable in ("HF_HOME", "CLIPSQL_CACHE", "CLIPSQL_HOME"):  # weights; exports; thumbnails
        top = "/" + Path(docker_env()[variable]).parts[1]
        assert mounts[top][0] in named, variable  # a named volume: survives `compose down`


def test_compose_keeps_the_folder_in_sync_with_the_served_one(compose):
    """The ``watch`` service loads the same read-only /photos into the same database as the
    server serves, as the owner, once ``init`` made them, and restarts with the stack."""
    app, watch = compose["services"]["clipsql"], compose["services"]["watch"]
    from click.testing import CliRunner

    from clipsql.cli import main

    command = watch["command"]
    assert command[:3] == ["clipsql", "load", "/photos"] and "--watch" in command
    # the command's options are the CLI's own (a renamed flag would break the service)
    help_text = CliRunner().invoke(main, ["load", "--help"]).output
    assert all(a in help_text for a in command[3:] if a.startswith("--"))
    assert watch["environment"]["CLIPSQL_DATABASE_URL"] == app["environment"]["CLIPSQL_DATABASE_URL"]
    assert "CLIPSQL_FILTER_DATABASE_URL" not in watch["environment"]  # it runs no filters
    photos = [v for v in app["volumes"] if v.endswith(":/photos:ro")]
    assert photos and photos[0] in watch["volumes"] and "models:/cache" in watch["volumes"]
    assert watch["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert watch["restart"] == "unless-stopped"


def test_dockerfile_installs_the_way_the_readme_does():
    assert instructions("FROM") == ["python:3.11-slim"]
    runs = [c.strip() for args in instructions("RUN") for c in args.split("&&")]
    readme = readme_install_commands()
    assert any("pip install" in c for c in readme)
    for command in readme:
        assert normalise(command) in [normalise(r) for r in runs], command
    for args in instructions("COPY"):
        for source in shlex.split(args)[:-1]:
            assert (ROOT / source).exists(), source


def test_dockerfile_runs_the_real_serve_command():
    import json

    from click.testing import CliRunner

    from clipsql.cli import main

    cmd = json.loads(instructions("CMD")[0])
    assert cmd[:2] == ["clipsql", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert instructions("EXPOSE") == [cmd[cmd.index("--port") + 1]]
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "--host" in result.output and "--port" in result.output


COMPOSE_FILES = ("compose.yaml", "compose.checkpoint.yaml")
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def url_of(value: str):
    """A compose URL parsed, each ``${VAR...}`` in it replaced by ``VAR``."""
    return urlsplit(VARIABLE.sub(lambda m: m.group(1), value))


def compose_file(name: str) -> dict:
    import yaml

    return yaml.safe_load((DOCKER / name).read_text())


def test_every_variable_the_compose_files_use_is_required_or_defaulted_and_documented():
    example = (DOCKER / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)=", example, flags=re.M))
    docs = (ROOT / "docs" / "web.md").read_text()
    used = set()
    for name in COMPOSE_FILES:
        text = (DOCKER / name).read_text()
        body = "\n".join(line.split(" #")[0] for line in text.splitlines()
                         if not line.lstrip().startswith("#"))
        assert not re.search(r"(?<!\$)\$(?![{$])", body), f"{name}: a bare $VAR"
        for variable, operator, _ in VARIABLE.findall(body):
            assert operator in (":?", ":-"), f"{name}: ${{{variable}}} is neither required nor defaulted"
            used.add(variable)
    assert used >= {"PHOTOS", "POSTGRES_PASSWORD", "CLIPSQL_OWNER_PASSWORD",
                    "CLIPSQL_FILTER_PASSWORD", "CHECKPOINTS", "CLIPSQL_MODEL"}
    for variable in used:
        assert variable in documented, f"{variable} is not in docker/.env.example"
        assert f"`{variable}`" in docs, f"{variable} is not in docs/web.md"


def test_clipsql_connects_as_the_owner_never_the_superuser(compose):
    from clipsql.database.filter_login import FILTER_ROLE

    db, init, app = (compose["services"][s] for s in ("db", "init", "clipsql"))
    superuser = db["environment"].get("POSTGRES_USER", "postgres")  # the image's default
    assert init["environment"]["PGUSER"] == superuser
    owner = url_of(app["environment"]["CLIPSQL_DATABASE_URL"])
    login = url_of(app["environment"]["CLIPSQL_FILTER_DATABASE_URL"])
    assert (owner.username, owner.path) == (init["environment"]["CLIPSQL_OWNER"],
                                            "/" + init["environment"]["CLIPSQL_DB"])
    assert owner.username != superuser and login.username == FILTER_ROLE
    assert (owner.hostname, owner.port) == (login.hostname, login.port) == (
        init["environment"]["PGHOST"], int(init["environment"]["PGPORT"]))
    assert owner.path == login.path
    assert (owner.password, login.password) == ("CLIPSQL_OWNER_PASSWORD", "CLIPSQL_FILTER_PASSWORD")
    assert "${CLIPSQL_OWNER_PASSWORD:?" in init["environment"]["CLIPSQL_OWNER_PASSWORD"]
    assert "${CLIPSQL_FILTER_PASSWORD:?" in init["environment"]["CLIPSQL_FILTER_PASSWORD"]
    assert "POSTGRES_PASSWORD" not in str(app)  # the superuser's password never reaches clipsql


def test_init_runs_before_serve_which_is_supervised(compose):
    db, init, app = (compose["services"][s] for s in ("db", "init", "clipsql"))
    assert init["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert db["restart"] == app["restart"] == "unless-stopped" and init["restart"] == "no"
    check = app["healthcheck"]
    port = app["command"][app["command"].index("--port") + 1]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    assert f"//127.0.0.1:{port}/api/status" in check["test"][3]
    assert check["start_period"] and check["retries"] >= 1
    assert init["build"] == app["build"] and init["image"] == app["image"]


def test_the_init_script_is_in_the_image_with_psql():
    command = compose_file("compose.yaml")["services"]["init"]["command"]
    copies = {shlex.split(args)[-1]: shlex.split(args)[:-1] for args in instructions("COPY")}
    assert command[0] == "sh" and copies[command[1]] == ["docker/init.sh"]
    assert (ROOT / "docker" / "init.sh").is_file()
    assert any("postgresql-client" in args for args in instructions("RUN"))
    assert "psql " in (DOCKER / "init.sh").read_text()


def clipsql_command_lines():
    """Every clipsql command line the docker files run or show."""
    lines = []
    for name in COMPOSE_FILES:
        for service in compose_file(name)["services"].values():
            if isinstance(service.get("command"), list) and service["command"][0] == "clipsql":
                lines.append(service["command"])
        lines += [shlex.split(m) for m in re.findall(
            r"run --rm clipsql (clipsql [^\n]*)", (DOCKER / name).read_text())]
    import json

    lines.append(json.loads(instructions("CMD")[0]))
    script = re.sub(r"\\\n\s*", " ", (DOCKER / "init.sh").read_text())
    for found in re.findall(r"^\s*(?:\w+=\$\()?(clipsql [^|)\n]*)", script, flags=re.M):
        lines.append(shlex.split(found))  # a command, alone or in var=$(...)
    return lines


def test_every_clipsql_command_line_names_real_commands_and_options():
    import click

    from clipsql.cli import main

    lines = clipsql_command_lines()
    assert ["clipsql", "status"] in lines and any(line[1:3] == ["admin", "sql"] for line in lines)
    for words in lines:
        command, rest = main, words[1:]
        while isinstance(command, click.Group):
            assert rest and rest[0] in command.commands, words
            command, rest = command.commands[rest[0]], rest[1:]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in options, (words, word)


def test_a_local_checkpoint_is_mounted_where_the_model_spec_points():
    from clipsql.models.spec import ModelSpec

    app = compose_file("compose.checkpoint.yaml")["services"]["clipsql"]
    (mount,) = app["volumes"]
    source, target, mode = mount.rsplit(":", 2)
    assert source.startswith("${CHECKPOINTS:?") and mode == "ro"
    example = re.search(r"e\.g\. (\S+)\}", app["environment"]["CLIPSQL_MODEL"]).group(1)
    path = Path(ModelSpec.parse(example).pretrained)
    assert path.is_absolute() and path.parent == Path(target)
    header = (DOCKER / "compose.checkpoint.yaml").read_text()
    assert f"CLIPSQL_MODEL={example}" in header


def test_the_database_image_has_the_model_inside():
    """docker/Dockerfile.db builds clipsql_native with the image's PGXS into the server,
    points the worker at the image's Python (postgresql.conf's sample), reads the exports the
    clipsql service makes (the same volume, read-only), and init.sh creates the extension."""
    text = (DOCKER / "Dockerfile.db").read_text()
    assert "postgresql-server-dev-17" in text and "libpython3" in text
    assert "make -C clipsql/database/native install" in text
    assert "python -m clipsql.database.native conf" in text
    assert ">> /usr/share/postgresql/postgresql.conf.sample" in text
    import yaml

    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    cache = [v for v in compose["services"]["clipsql"]["volumes"] if v.startswith("models:")]
    assert "models:/cache:ro" in compose["services"]["db"]["volumes"] and cache == ["models:/cache"]
    assert "CLIPSQL_CACHE=/cache/clipsql" in text
    assert "CLIPSQL_CACHE=/cache/clipsql" in (DOCKER / "Dockerfile").read_text()
    init = (DOCKER / "init.sh").read_text()
    assert "CREATE EXTENSION IF NOT EXISTS clipsql_native" in init
    assert "pg_available_extensions WHERE name = 'clipsql_native'" in init
