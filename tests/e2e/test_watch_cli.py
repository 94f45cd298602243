"""`clipsql load --watch` as a process of its own: the first load, a file added while it
watches found by SQL and by `clipsql search`, one line per sync, SIGINT: exit 0."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from click.testing import CliRunner

from clipsql.cli import main
from tests.conftest import make_image

TIMEOUT = 120.0


def wait_until(condition, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Lines:
    """A stream's lines, read in a thread as they come."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def as_at_a_terminal() -> None:
    """The child's SIGINT as a terminal's foreground process has it (a parent that runs the
    tests in the background, as `cmd &` does, ignores it, and the child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(proc, out: Lines, err: Lines, what: str) -> None:
    """Ctrl-C (SIGINT) to ``proc``: it must stop with exit status 0 and no traceback."""
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # -X faulthandler: every thread's stack on stderr
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        proc.kill()
        err.thread.join(5)
        pytest.fail(f"{what} did not stop on SIGINT:\n" + "\n".join(err.lines[-80:]))
    out.thread.join(5)
    err.thread.join(5)
    assert code == 0, "\n".join(out.lines + err.lines)
    assert "Traceback" not in "\n".join(err.lines)


def test_load_watch_syncs_until_sigint(dsn, tiny_model, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        make_image(root / f"{i}.png", color=(i * 70, 20, 20), pattern=i)
    env = {**os.environ, "CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "clipsql", "load", str(root), "--watch", "--debounce", "0.3",
         "--settle", "0.5"], env=env, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=as_at_a_terminal)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        wait_until(lambda: err.has("watching 1 folder") or proc.poll() is not None,
                   "the first load")
        assert proc.poll() is None, "\n".join(out.lines + err.lines)
        assert out.has("added 3,"), out.lines

        def count():
            with psycopg.connect(dsn) as conn:
                return conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0]

        new = make_image(root / "new.png", color=(10, 10, 240), pattern=4)
        wait_until(lambda: count() == 4, "the new file's row")
        wait_until(lambda: out.has("+1 ~0 -0"), "the sync's line")
        hits = CliRunner().invoke(main, ["search", "blue", "--limit", "10"],
                                  env={"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model})
        assert hits.exit_code == 0 and str(new) in hits.stdout, hits.output

        (root / "0.png").unlink()
        wait_until(lambda: count() == 3, "the deleted file's row to go")
        wait_until(lambda: out.has("+0 ~0 -1"), "the removal's line")
    finally:
        interrupt(proc, out, err, "clipsql load --watch")
    assert err.has("stopped watching")


def test_load_watch_refuses_what_it_cannot_do(run, tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    assert "--watch loads on this machine" in run(
        "load", str(tmp_path), "--watch", "--ray", ok=False).output
    misuse = run("load", str(tmp_path), "--debounce", "2", ok=False)
    assert misuse.exit_code == 2 and "options of --watch" in misuse.output
    single = run("load", str(tmp_path / "a.png"), "--watch", ok=False)
    assert single.exit_code == 1 and "only folders are watched" in single.output


def test_serve_watch_keeps_the_served_collection_in_sync(dsn, tiny_model, tmp_path):
    """`clipsql serve --watch FOLDER`: the page's API finds a file copied into the folder
    while it serves; SIGINT stops both the server and its watcher (exit 0)."""
    import json
    import socket
    import urllib.request

    root = tmp_path / "photos"
    make_image(root / "red.png", color=(230, 20, 20), pattern=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsql", "serve", "--port", str(port), "--watch", str(root)],
        env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, preexec_fn=as_at_a_terminal)
    out, err = Lines(proc.stdout), Lines(proc.stderr)

    def found() -> set:
        url = f"http://127.0.0.1:{port}/api/search?q=a+photo&limit=10"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return {h["path"] for h in json.load(answer)["results"]}
        except OSError:
            return set()
    try:
        wait_until(lambda: err.has("watching 1 folder") or proc.poll() is not None,
                   "the watcher's first load")
        assert proc.poll() is None, "\n".join(out.lines + err.lines)
        wait_until(lambda: found() == {str(root / "red.png")}, "the first photo in the API")
        blue = make_image(root / "blue.png", color=(20, 20, 230), pattern=2)
        wait_until(lambda: str(blue) in found(), "the new photo in the API")
        wait_until(lambda: out.has("+1 ~0 -0"), "the sync's line")
    finally:
        interrupt(proc, out, err, "clipsql serve --watch")
