"""After ``kill -9`` of the process that started the embedded server, the next command
cleans up the stale state and the server stops when that command ends."""

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSQL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLIPSQL_DATABASE_URL", raising=False)
    yield tmp_path / "home"
    from clipsql.database import embedded

    if embedded.status()["running"]:  # never leave a server behind, whatever happened
        subprocess.run([sys.executable, "-m", "clipsql", "db", "stop"], env=dict(os.environ),
                       capture_output=True, timeout=120)


def status() -> dict:
    from clipsql.database import embedded

    return embedded.status()


def test_a_killed_owner_does_not_keep_the_server_running_forever(home):
    started = subprocess.Popen(
        [sys.executable, "-c", "import clipsql, sys, time; db = clipsql.connect(); "
         "print('up', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert started.stdout.readline().strip() == "up"
    assert status()["running"]
    started.send_signal(signal.SIGKILL)
    started.wait(timeout=30)
    assert status()["running"]  # nobody stopped it: the owner died without its exit hooks

    out = subprocess.run([sys.executable, "-m", "clipsql", "status", "--json"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 30
    while status()["running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not status()["running"], "the last living user exited, so the server must stop"


def test_a_server_kept_by_db_start_survives_a_killed_client(home):
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "clipsql", "db", "start"], env=env, check=True,
                   capture_output=True, timeout=300)
    client = subprocess.Popen([sys.executable, "-c", "import clipsql, time; clipsql.connect(); "
                               "print('up', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert client.stdout.readline().strip() == "up"
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=30)
    subprocess.run([sys.executable, "-m", "clipsql", "status"], env=env, check=True,
                   capture_output=True, timeout=300)
    assert status()["running"]  # `db start` asked for it to stay
    subprocess.run([sys.executable, "-m", "clipsql", "db", "stop"], env=env, check=True,
                   capture_output=True, timeout=120)
    assert not status()["running"]
