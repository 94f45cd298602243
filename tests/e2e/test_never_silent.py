"""Never silent: every long command says what it is doing before a slow step, and says it
again while that step runs (issue 31). Each test makes one step slow: the step waits for a
new stderr line written while it runs, and records what stderr held when it began. The
tests assert that order (a line naming the step came first; another came while it ran),
never this machine's timings. ``--json`` keeps stdout one document and stderr empty.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from clipsql.cli import main
from clipsql.cli import output as cli_output
from tests.integration.test_captions import coca_model  # noqa: F401  (a fixture)

#: How long a slow step waits for a line at most (the heartbeat writes one after about
#: ``STILL_S`` seconds; this is only the bound of a failing test).
PATIENCE_S = 20.0


def stderr_now() -> str:
    """What the command wrote to stderr so far (CliRunner's captured stream)."""
    sys.stderr.flush()
    return sys.stderr.buffer.getvalue().decode("utf-8", "replace")


class Slow:
    """Wraps ``owner.name``: on its first call it records stderr, waits until a new line is
    written while it runs (or ``PATIENCE_S``), then calls the original."""

    def __init__(self, monkeypatch, owner, name: str):
        self.original = getattr(owner, name)
        self.before: str | None = None
        self.during: str | None = None
        wrapper = self._wrap()
        monkeypatch.setattr(owner, name, wrapper)

    def _wrap(self):
        slow = self

        def wrapper(*args, **kwargs):
            if slow.before is None:
                slow.before = stderr_now()
                deadline = time.monotonic() + PATIENCE_S
                while time.monotonic() < deadline:
                    now = stderr_now()
                    if len(now.splitlines()) > len(slow.before.splitlines()):
                        slow.during = now[len(slow.before):]
                        break
                    time.sleep(0.05)
            return slow.original(*args, **kwargs)

        return wrapper

    def check(self, names: str) -> None:
        assert self.before is not None, "the slow step never ran"
        assert self.before.startswith("clipsql: "), self.before
        assert names in self.before.splitlines()[-1] or names in self.before, self.before
        assert self.during and "still" in self.during, (
            f"nothing was written while the slow step ran; before it:\n{self.before}")


@pytest.fixture
def cli(dsn, tiny_model):
    runner = CliRunner()

    def invoke(*args, code=0, env=None):
        result = runner.invoke(main, [*args], env={"CLIPSQL_DATABASE_URL": dsn,
                                                   "CLIPSQL_MODEL": tiny_model, **(env or {})},
                               catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result
    return invoke


def test_a_first_load_says_each_step_and_that_it_is_still_embedding(cli, photo_folder,
                                                                    monkeypatch):
    from clipsql.ingest import loader

    slow = Slow(monkeypatch, loader, "_run_pipeline")
    result = cli("load", str(photo_folder))
    slow.check("embedding 12 files with onnx-")
    first = result.stderr.splitlines()[0]
    assert first.startswith("clipsql: opening the collection ["), first
    assert "added 12," in result.stdout


def test_json_keeps_stdout_one_document_and_stderr_empty(cli, photo_folder, monkeypatch):
    from clipsql.ingest import loader

    monkeypatch.setattr(cli_output, "STILL_S", 0.05)
    original = loader._run_pipeline

    def slow(*args, **kwargs):
        time.sleep(0.3)   # long enough for a heartbeat, were one to print
        return original(*args, **kwargs)

    monkeypatch.setattr(loader, "_run_pipeline", slow)
    result = cli("load", str(photo_folder), "--json")
    assert json.loads(result.stdout)["added"] == 12
    assert result.stderr == ""


def test_caption_says_it_loads_the_model_and_is_still_captioning(cli, photo_folder,
                                                                  coca_model,  # noqa: F811
                                                                  monkeypatch):
    from clipsql.models import openclip
    from clipsql.models.captioner import Captioner

    cli("load", str(photo_folder), "--json")
    loading = Slow(monkeypatch, openclip.ClipModel, "_torch_model")
    generating = Slow(monkeypatch, Captioner, "generate")
    result = cli("caption", "--model", coca_model, "--max-length", "4")
    loading.check(f"loading {coca_model} on torch")
    generating.check("captioning: 0 of 12 images")
    assert "captioned 12 images" in result.stdout


def test_reembed_says_it_prepares_the_new_model(cli, photo_folder, other_tiny_model,
                                                monkeypatch):
    from clipsql.models import openclip

    cli("load", str(photo_folder), "--json")
    slow = Slow(monkeypatch, openclip.ClipModel, "prepare")
    result = cli("reembed", "--model", other_tiny_model)
    slow.check(f"preparing {other_tiny_model}")
    assert "switched to" in result.stdout
    steps = [line.split(" [")[0] for line in result.stderr.splitlines()]
    assert steps.index("clipsql: switching to the new model") > steps.index(
        f"clipsql: preparing {other_tiny_model}")


def test_ocr_says_it_starts_tesseract_and_looks_for_images(cli, photo_folder, monkeypatch):
    from clipsql.errors import OcrLanguageDataError
    from clipsql.ocr import engine, run
    from tests.conftest import missing_ocr

    try:
        engine.OcrEngine("eng").close()
    except OcrLanguageDataError as exc:
        missing_ocr(str(exc))
    cli("load", str(photo_folder), "--json")
    slow = Slow(monkeypatch, run, "pending")
    result = cli("ocr", "--languages", "eng")
    slow.check("finding the images without a current OCR row")
    assert "read words in 12 images" in result.stdout


def test_a_step_printer_says_a_long_step_is_still_running():
    """The heartbeat itself, without a command: a step line, then ``still`` lines while the
    step runs, then none once the activity is closed."""
    runner = CliRunner()
    done = threading.Event()

    import click

    @click.command()
    def long_step():
        steps = cli_output.step_printer()
        with steps:
            steps("counting the stars")
            before = stderr_now()
            deadline = time.monotonic() + PATIENCE_S
            while "still" not in stderr_now() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert before.count("\n") == 1
        done.set()

    result = runner.invoke(long_step, catch_exceptions=False)
    assert done.is_set()
    lines = result.stderr.splitlines()
    assert lines[0].startswith("clipsql: counting the stars [0.0 s]"), lines
    assert lines[1].startswith("clipsql: still counting the stars... ["), lines
