"""docker/: Docker cannot run on the test machines, so check what can be checked without it:
the compose file parses and is wired together, and the Dockerfile installs clipsql with the
README's own install command and runs the real ``clipsql serve``."""

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
    assert db["image"].startswith("pgvector/pgvector:pg")
    url = urlsplit(app["environment"]["CLIPSQL_DATABASE_URL"])
    env = db["environment"]
    assert (url.hostname, url.username, url.password, url.path) == (
        "db", env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], "/" + env["POSTGRES_DB"])
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
