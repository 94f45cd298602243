"""The `clipsql` command end to end (CliRunner) on real folders and a real database."""

import json

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
