"""Never stuck: messages name the next step in the user's terms (issue 31): the option and
environment variable that give a local checkpoint offline, ``reembed --cancel`` first when
an unfinished reembed embedded nothing, what a load's numbers count, the text an
``embed-text`` stored, and no claim about ``db start`` that did not happen."""

from __future__ import annotations

import io
import json
import os

import click
import pytest
from click.testing import CliRunner

from clipsql.cli import main
from clipsql.cli.output import next_step
from clipsql.errors import ModelError, ReembedUnfinishedError, WeightsUnavailableError


def in_command(words: list[str], exc) -> str:
    """:func:`next_step` of ``exc`` as the command ``clipsql WORDS`` would print it."""
    ctx = click.Context(main, info_name="clipsql", **main.context_settings)
    command = main
    for word in words:
        command = command.get_command(ctx, word)
        ctx = click.Context(command, info_name=word, parent=ctx, **command.context_settings)
    with ctx:
        return next_step(exc)


OFFLINE = WeightsUnavailableError("cannot download the weights of ViT-B-32/laion2b_s34b_b79k "
                                  "(huggingface.co is unreachable)", "ViT-B-32")


@pytest.mark.parametrize("words", [["load"], ["search"], ["serve"], ["status"]])
def test_offline_default_model_names_model_option_and_variable(words):
    text = in_command(words, OFFLINE)
    assert f"`clipsql {' '.join(words)} --model ViT-B-32/PATH/TO/weights.bin`" in text
    assert "CLIPSQL_MODEL=ViT-B-32/PATH/TO/weights.bin" in text


def test_offline_caption_model_names_caption_model_option_and_variable():
    coca = WeightsUnavailableError("cannot download the weights of coca_ViT-B-32/x", "coca_ViT-B-32")
    text = in_command(["caption"], coca)
    assert "`clipsql caption --model coca_ViT-B-32/PATH/TO/weights.bin`" in text
    assert "CLIPSQL_CAPTION_MODEL=coca_ViT-B-32/PATH/TO/weights.bin" in text
    reembed = in_command(["reembed"], OFFLINE)
    assert "`clipsql reembed --model ViT-B-32/PATH/TO/weights.bin`" in reembed


def test_the_library_says_it_without_cli_flags():
    assert "--" not in str(OFFLINE) and "CLIPSQL_MODEL" in str(OFFLINE)


def test_weights_not_cached_and_hub_unreachable_is_the_typed_error(monkeypatch):
    import socket

    import huggingface_hub

    from clipsql.models import checkpoint
    from clipsql.models.spec import ModelSpec

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(WeightsUnavailableError) as caught:
        checkpoint.check_downloadable(ModelSpec.parse("ViT-B-32/laion2b_s34b_b79k"),
                                      "laion2b_s34b_b79k")
    assert caught.value.arch == "ViT-B-32"
    assert isinstance(checkpoint.load_error("ViT-B-32/x", OSError("Failed to download x")),
                      WeightsUnavailableError)


def test_the_export_process_hands_the_typed_error_back(monkeypatch, capsys):
    """The worker (``python -m clipsql.models export``) writes the error's parts; the parent
    raises the same typed error from them."""
    from clipsql.models import __main__ as worker
    from clipsql.models import checkpoint, export

    def offline(*args, **kwargs):
        raise OFFLINE

    monkeypatch.setattr(checkpoint, "build", offline)
    assert worker.export_worker("ViT-B-32/laion2b_s34b_b79k") == 1
    said = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    message = said[-1]
    assert message["weights"] == {"problem": OFFLINE.problem, "arch": "ViT-B-32"}

    class Finished:
        returncode = 1
        stdout = io.StringIO(json.dumps({"step": "importing torch"}) + "\n"
                             + json.dumps(message) + "\n")
        stderr = io.StringIO("")

        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(export.subprocess, "Popen", Finished)
    steps = []
    with pytest.raises(WeightsUnavailableError) as caught:
        export.in_subprocess("ViT-B-32/laion2b_s34b_b79k", steps.append)
    assert str(caught.value) == str(OFFLINE)
    assert steps[0] == "starting the export in a process of its own"   # before the process
    assert steps[1] == "importing torch"


def test_an_unfinished_reembed_that_embedded_nothing_says_cancel_first():
    nothing = ReembedUnfinishedError("a reembed to ViT-L-14/openai (768-d) is unfinished (0 of "
                                     "112 rows embedded)", "ViT-L-14/openai", 0, 112)
    text = in_command(["reembed"], nothing)
    assert text.index("`clipsql reembed --cancel`") < text.index(
        "`clipsql reembed --model ViT-L-14/openai`")
    assert "nothing is lost" in text
    some = ReembedUnfinishedError("a reembed ... (5 of 112 rows embedded)", "ViT-L-14/openai",
                                  5, 112)
    text = in_command(["reembed"], some)
    assert text.index("--model ViT-L-14/openai") < text.index("--cancel")
    assert isinstance(nothing, ModelError)
    assert "cancel=True" in str(nothing) and "--" not in str(nothing)


def test_the_status_lines_say_what_the_rows_are_and_a_pending_reembed():
    from clipsql.cli.load import status_lines
    from tests.unit.test_docs_drift import sample_info

    info = sample_info(videos=1, moments=2, images=112)
    info["reembed"] = {"arch": "ViT-L-14", "pretrained": "openai", "dim": 768,
                       "state": "embedding", "embedded": 0, "total": 112,
                       "spec": "ViT-L-14/openai", "finished_at": None}
    lines = status_lines(info)
    images = next(line for line in lines if line.startswith("images:"))
    assert "110 pictures and 2 moments of 1 video, a row each" in images
    pending = next(line for line in lines if line.startswith("reembed:"))
    assert "0 of 112 images embedded" in pending and "`clipsql reembed --cancel`" in pending


def test_db_status_says_kept_running_without_naming_a_command_that_did_not_run(monkeypatch):
    from clipsql.database import embedded

    monkeypatch.setattr(embedded, "status", lambda: {
        "pgdata": "/home/me/.clipsql/pgdata", "running": True, "pid": 1,
        "url": "postgresql://x", "kept_running": True})
    out = CliRunner().invoke(main, ["db", "status"], catch_exceptions=False).output
    assert "kept running by `clipsql db start`" not in out
    assert "kept running after clipsql exits" in out and "`clipsql db url`" in out
    monkeypatch.setattr(embedded, "status", lambda: {
        "pgdata": "/p", "running": False, "pid": None, "url": None, "kept_running": True})
    assert "kept" not in CliRunner().invoke(main, ["db", "status"]).output


def test_embed_text_shows_the_sql_with_the_text_itself():
    from clipsql.cli.search import sql_call

    assert sql_call("two dogs in snow") == "clipsql.text_embedding('two dogs in snow')"
    assert sql_call("Bob's\ndog") == "clipsql.text_embedding('Bob''s\\ndog')"


def test_ray_output_is_kept_off_the_terminal(monkeypatch):
    from clipsql.ingest import ray_engine

    monkeypatch.delenv("RAY_BACKEND_LOG_LEVEL", raising=False)
    with ray_engine.quiet_ray():
        assert os.environ["RAY_BACKEND_LOG_LEVEL"] == "error"
    assert "RAY_BACKEND_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("RAY_BACKEND_LOG_LEVEL", "debug")   # the user's own setting wins
    with ray_engine.quiet_ray():
        assert os.environ["RAY_BACKEND_LOG_LEVEL"] == "debug"
