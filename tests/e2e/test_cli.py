"""The `clipsql` command end to end (CliRunner) on real folders and a real database."""

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from clipsql.cli import main


def test_load_search_similar_status_json(run, photo_folder):
    summary = json.loads(run("load", str(photo_folder), "--json").stdout)
    assert summary["added"] == 12 and summary["failed"] == 0
    hits = json.loads(run("search", "a green square", "--limit", "5", "--json").stdout)
    assert len(hits) == 5 and {"id", "path", "score", "taken_at", "camera_make"} <= hits[0].keys()
    assert hits == sorted(hits, key=lambda h: -h["score"])
    filtered = json.loads(run("search", "x", "--where", "format = %s", "--param", "PNG", "--json").stdout)
    assert {h["format"] for h in filtered} == {"PNG"}
    similar = json.loads(run("similar", str(hits[0]["id"]), "--limit", "3", "--json").stdout)
    assert len(similar) == 3 and hits[0]["id"] not in [h["id"] for h in similar]
    by_path = json.loads(run("similar", hits[0]["path"], "--limit", "3", "--json").stdout)
    assert [h["id"] for h in by_path] == [h["id"] for h in similar]
    status = json.loads(run("status", "--json").stdout)
    assert status["images"] == 12 and status["model"]["dim"] == 32
    again = json.loads(run("load", str(photo_folder), "--json").stdout)
    assert again["added"] == 0 and again["unchanged"] == 12


def test_human_output(run, photo_folder, tmp_path):
    (photo_folder / "broken.jpg").write_text("not a jpeg")
    out = run("load", str(photo_folder), "--processes", "--workers", "2").output
    assert "added 12" in out and "failed 1" in out and "broken.jpg" in out
    lines = run("search", "red", "--limit", "3").stdout.strip().splitlines()
    assert len(lines) == 3 and all(str(photo_folder) in line for line in lines)
    assert "images:     12" in run("status").stdout


def test_errors_are_one_line_messages(run, photo_folder, dsn):
    result = run("search", "x", ok=False)
    assert result.exit_code == 1 and "clipsql load" in result.output and "Traceback" not in result.output
    run("load", str(photo_folder))
    bad_where = run("search", "x", "--where", "no_such_column = 1", ok=False)
    assert bad_where.exit_code == 1 and "no_such_column" in bad_where.output
    assert run("load", "/definitely/not/here", ok=False).exit_code == 1
    bad_db = CliRunner().invoke(main, ["status", "--db", "postgresql://u:pw123@127.0.0.1:1/x"])
    assert bad_db.exit_code == 1 and "cannot connect" in bad_db.output and "pw123" not in bad_db.output
    bad_model = CliRunner().invoke(main, ["search", "x", "--db", dsn, "--model", "NoSuchNet/x"])
    assert bad_model.exit_code == 1 and "NoSuchNet" in bad_model.output
    usage = run("search", ok=False)
    assert usage.exit_code == 2


def test_embedded_server_lifecycle(tmp_path, monkeypatch, tiny_model, photo_folder):
    """No --db: the embedded server starts on demand; `db start/url/status/stop` manage it."""
    monkeypatch.setenv("CLIPSQL_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    env = {"CLIPSQL_DATABASE_URL": None, "CLIPSQL_MODEL": tiny_model}
    try:
        url = runner.invoke(main, ["db", "start"], env=env).stdout.strip()
        assert url.startswith("postgresql://") and str(tmp_path) in url
        st = json.loads(runner.invoke(main, ["db", "status", "--json"], env=env).stdout)
        assert st["running"] and st["kept_running"]
        assert runner.invoke(main, ["db", "url"], env=env).stdout.strip() == url
        loaded = runner.invoke(main, ["load", str(photo_folder), "--json"], env=env)
        assert json.loads(loaded.stdout)["added"] == 12
        import psycopg

        with psycopg.connect(url) as conn:  # other clients can use the URL
            assert conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0] == 12
    finally:
        stopped = runner.invoke(main, ["db", "stop"], env=env)
    assert stopped.stdout.strip() == "stopped"
    st = json.loads(runner.invoke(main, ["db", "status", "--json"], env=env).stdout)
    assert not st["running"] and not st["kept_running"]


#: What a load that finds nothing new must not import: the model's runtimes (its weights
#: are not needed), the video decoder, numpy (nothing is decoded or embedded).
HEAVY = ("onnxruntime", "torch", "torchvision", "open_clip", "av", "numpy", "rawpy")


def test_a_load_that_finds_nothing_new_imports_no_model_nor_decoder(run, photo_folder, dsn,
                                                                   tiny_model):
    """`clipsql load` of a folder loaded before, in a process of its own: the same report as
    ever (every file unchanged), and none of :data:`HEAVY` imported, no model opened."""
    first = json.loads(run("load", str(photo_folder), "--json").stdout)
    assert first["added"] == 12
    code = ("import json, sys\n"
            "from clipsql.cli import main\n"
            f"main(['load', {str(photo_folder)!r}, '--json'], standalone_mode=False)\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    env = {**os.environ, "CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report, heavy = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert (report["added"], report["updated"], report["unchanged"], report["failed"],
            report["backend"]) == (0, 0, 12, 0, "")
    assert heavy == [], f"a load that found nothing new imported {heavy}"


def test_a_query_image_that_does_not_exist_is_said_not_to(run, photo_folder, tmp_path,
                                                          monkeypatch):
    """The README's `clipsql search --image sunset.jpg` without a sunset.jpg: no such file,
    not a file that "vanished" (that is a load's word for a file listed, then gone)."""
    run("load", str(photo_folder))
    monkeypatch.chdir(tmp_path)
    for args in (["search", "--image", "sunset.jpg"], ["similar", "sunset.jpg"],
                 ["search", "beach", "--minus-image", "sunset.jpg"]):
        result = run(*args, ok=False)
        assert result.exit_code == 1, result.output
        assert "sunset.jpg as a query image: no such file" in result.output, result.output
        assert "vanished" not in result.output and "disappeared" not in result.output


def test_similar_takes_a_stored_key_before_a_local_path(run, photo_folder, tmp_path,
                                                        monkeypatch):
    """`similar KEY`: the key of an imported row (a URL) is looked up as stored; only what is
    not a stored key is a local path (relative to the current folder)."""
    vecs = np.random.default_rng(3).normal(size=(5, 32)).astype(np.float32)
    np.save(tmp_path / "features.npy", vecs)
    (tmp_path / "ids.csv").write_text("photo_id\nAAA\nBBB\nCCC\nDDD\nEEE\n")
    run("import-embeddings", str(tmp_path / "features.npy"), "--ids", str(tmp_path / "ids.csv"),
        "--prefix", "https://unsplash.com/photos/")
    key = "https://unsplash.com/photos/BBB"
    by_key = run("similar", key, "--limit", "4", "--json", ok=False)
    assert by_key.exit_code == 0, by_key.output
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    others = [i for i in range(5) if i != 1]
    expected = sorted(others, key=lambda i: -float(unit[i] @ unit[1]))
    assert [h["path"] for h in json.loads(by_key.stdout)] == \
        [f"https://unsplash.com/photos/{'ABCDE'[i] * 3}" for i in expected]
    monkeypatch.chdir(photo_folder)  # a local path still works, relative or not
    run("load", ".")
    relative = next(p for p in sorted(photo_folder.rglob("img0*")))
    local = json.loads(run("similar", str(relative.relative_to(photo_folder)), "--json").stdout)
    assert local and str(relative) not in [h["path"] for h in local]


def test_min_score_says_what_it_kept(run, photo_folder):
    run("load", str(photo_folder))
    none = run("search", "red", "--min-score", "0.9999")
    assert none.stdout == "" and "no hit reaches --min-score 0.9999" in none.stderr
    assert "candidates" not in none.stderr
    some = run("search", "red", "--min-score", "-1", "--limit", "3")
    assert len(some.stdout.splitlines()) == 3
    assert "kept 3 hits at or above --min-score -1" in some.stderr, some.stderr
    within = run("search", "red", "--within", "0", "--limit", "3")
    assert "cut by --within at score" in within.stderr and "of the best 12 hits" in within.stderr


def _clipsql(home, *args):
    env = {k: v for k, v in os.environ.items() if k != "CLIPSQL_DATABASE_URL"}
    env["CLIPSQL_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "clipsql", *args], env=env, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=300)


def test_db_stop_says_what_happened_and_nothing_else(tmp_path):
    """`db stop` in processes of its own (their exit hooks run): "stopped" once, then "not
    running", exit status 0, and nothing on stderr (no pg_ctl failures)."""
    home = tmp_path / "home"
    try:
        started = _clipsql(home, "db", "start")
        assert started.returncode == 0 and started.stdout.startswith("postgresql://"), started
        stopped = _clipsql(home, "db", "stop")
        assert (stopped.returncode, stopped.stdout, stopped.stderr) == (0, "stopped\n", "")
        again = _clipsql(home, "db", "stop")
        assert (again.returncode, again.stdout, again.stderr) == (0, "not running\n", "")
        status = _clipsql(home, "db", "status", "--json")
        assert json.loads(status.stdout)["running"] is False
    finally:
        _clipsql(home, "db", "stop")


def test_db_stop_fails_when_the_server_runs_on(tmp_path, monkeypatch):
    from clipsql.database import embedded

    home = tmp_path / "home"
    monkeypatch.setenv("CLIPSQL_HOME", str(home))
    try:
        assert _clipsql(home, "db", "start").returncode == 0
        monkeypatch.setattr(embedded, "_pg_ctl_stop", lambda *a: "pg_ctl: server does not shut down")
        refused = CliRunner().invoke(main, ["db", "stop"], env={"CLIPSQL_DATABASE_URL": None})
        assert refused.exit_code == 1 and "could not stop the embedded PostgreSQL" in refused.output
        assert "server does not shut down" in refused.output and "stopped" not in refused.stdout
        assert embedded.status()["running"]
    finally:
        monkeypatch.undo()
        assert _clipsql(home, "db", "stop").stdout == "stopped\n"


def _commands(group=main, path=()):
    for name, command in getattr(group, "commands", {}).items():
        yield (*path, name), command
        yield from _commands(command, (*path, name))


def test_option_defaults_and_blocks_are_the_librarys():
    """--batch-size defaults are the library's constants (its functions' defaults too), and
    --db/--device are the shared declarations wherever a command offers them."""
    from clipsql import config
    from clipsql.captions import generate
    from clipsql.cli import options
    from clipsql.ingest import loader, ray_engine
    from clipsql.ocr import run as ocr_run
    from clipsql.reembed import switch

    for function in (loader.load, ray_engine.load, switch.run):
        assert inspect.signature(function).parameters["batch_size"].default == config.BATCH_SIZE
    shared = {}
    for decorator in (options.db_option, options.device_option):
        option = decorator(click.command()(lambda **kw: None)).params[0]
        shared[option.name] = option.to_info_dict()
    batch = {}
    for words, command in _commands():
        for param in getattr(command, "params", []):
            if param.name == "batch_size":
                batch[" ".join(words)] = param.default
            if param.name in shared:
                assert param.to_info_dict() == shared[param.name], (words, param.name)
    assert batch == {"load": config.BATCH_SIZE, "reembed": config.BATCH_SIZE,
                     "caption": generate.BATCH, "ocr": ocr_run.BATCH}
    for path in Path(options.__file__).parent.glob("*.py"):  # declared once, in options.py
        if path.name == "options.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "option":
                flags = {a.value for a in node.args if isinstance(a, ast.Constant)}
                assert not flags & {"--db", "--device", "--batch-size"}, (path.name, flags)


@pytest.mark.parametrize("command", ["caption", "reembed"])
def test_commands_that_choose_their_model_offer_no_collection_model(command):
    params = {p.name: p for p in main.commands[command].params}
    assert {"dsn", "device"} <= set(params)
    assert params.get("model") is None  # caption's --model is its caption_model
