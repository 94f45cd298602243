"""Never stuck (issue 31): a reembed that failed before embedding anything points at
``reembed --cancel`` first, with counts taken now, and ``clipsql status`` shows it; an
offline model leaves no unfinished reembed; ``embed-text`` prints the SQL with its text."""

from __future__ import annotations

import json

from click.testing import CliRunner

from clipsql.cli import main
from clipsql.errors import LoadError, WeightsUnavailableError
from tests.conftest import make_checkpoint, make_image


def test_a_failed_reembed_points_at_cancel_and_status_shows_it(dsn, tiny_model, other_tiny_model,
                                                               photo_folder, monkeypatch,
                                                               tmp_path):
    from clipsql.models import openclip
    from clipsql.reembed import rows

    runner = CliRunner()
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}

    def run(*args, code=0):
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    run("load", str(photo_folder), "--json")
    prepare = openclip.ClipModel.prepare

    def offline(self, steps=None):
        raise WeightsUnavailableError(f"cannot download the weights of {self.spec}", "clipsql-tiny")

    monkeypatch.setattr(openclip.ClipModel, "prepare", offline)
    failed = run("reembed", "--model", other_tiny_model, code=1)
    assert "`clipsql reembed --model clipsql-tiny/PATH/TO/weights.bin`" in failed.output
    assert "no reembed yet" in run("reembed", "--status").output   # nothing recorded
    monkeypatch.setattr(openclip.ClipModel, "prepare", prepare)

    def broken(self):
        raise LoadError("the decoders stopped")

    monkeypatch.setattr(rows.RowEmbedder, "fill", broken)
    run("reembed", "--model", other_tiny_model, code=1)
    monkeypatch.undo()
    for n in range(3):   # loaded after the run started: the counts are now's
        make_image(photo_folder / f"later-{n}.jpg", pattern=40 + n)
    run("load", str(photo_folder), "--json", )
    third = make_checkpoint("clipsql-tiny", tmp_path / "third.pt", seed=2)
    refused = run("reembed", "--model", third, code=1).output
    assert "(0 of 15 rows embedded)" in refused, refused
    assert refused.index("`clipsql reembed --cancel`") < refused.index(
        f"`clipsql reembed --model {other_tiny_model}`"), refused
    status = run("status").output
    assert "reembed:    to clipsql-tiny/" in status and "0 of 15 images embedded" in status
    assert "`clipsql reembed --cancel` gives it up" in status
    assert json.loads(run("status", "--json").stdout)["reembed"]["total"] == 15
    assert "cancelled" in run("reembed", "--cancel").output
    assert "reembed:" not in run("status").output


def test_embed_text_prints_the_sql_with_its_text(dsn, tiny_model, photo_folder):
    runner = CliRunner()
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    runner.invoke(main, ["load", str(photo_folder), "--json"], env=env, catch_exceptions=False)
    result = runner.invoke(main, ["embed-text", "Bob's dog"], env=env, catch_exceptions=False)
    assert "clipsql.text_embedding('Bob''s dog')" in result.stderr
    assert "'...'" not in result.output
