"""Docs that drifted once (issue 31), now checked against the code: the sample `clipsql
status` sessions of docs/cli.md and docs/models.md against the lines the command prints and
the newest migration; the failure and ignored reasons of docs/internals.md against
clipsql/ingest/reasons.py; no "Figures to come" box over figures that came."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clipsql.ingest.reasons import Ignored, Reason

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def sample_info(images: int = 101, videos: int = 0, moments: int = 0, text: bool = True) -> dict:
    """A :meth:`Collection.status` dict with every key ``clipsql status`` prints."""
    return {
        "database": "postgresql://postgres:***@/postgres?host=/tmp/pgdata",
        "server_version": "18.4", "pgvector": "0.8.5", "schema_version": newest_migration(),
        "model": {"arch": "clipsql-tiny", "pretrained": "file:tiny.pt#1", "dim": 32},
        "images": images, "videos": videos, "moments": moments, "table_bytes": 300_000,
        "failures": 0, "failures_by_reason": {}, "ignored": 8,
        "index": "images_embedding_hnsw",
        "filters": {"summary": "as clipsql_filter (least privilege)"},
        "sql_text": {"mode": "any text", "reason": "clipsql_native runs here"},
        "backend": {"backend": "onnx-int8", "reason": "auto",
                    **({"text": "onnx-int8"} if text else {})},
        "cache": {"path": "/tmp/cache", "bytes": 27_000_000},
        "reembed": None,
    }


def newest_migration() -> int:
    return max(int(p.name[:4]) for p in (ROOT / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))


def status_samples(page: Path) -> list[list[str]]:
    """The lines after each ``$ clipsql status`` in ``page``'s text blocks."""
    samples, lines = [], page.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "$ clipsql status":
            block = []
            for following in lines[i + 1:]:
                if following.startswith(("$ ", "```")):
                    break
                block.append(following)
            samples.append(block)
    return samples


def label(line: str) -> str:
    return line.split(":", 1)[0].strip()


@pytest.mark.parametrize("page", ["cli.md", "models.md"])
def test_status_samples_are_what_status_prints(page):
    from clipsql.cli.load import status_lines

    samples = status_samples(DOCS / page)
    assert samples, f"docs/{page} has no `$ clipsql status` sample"
    for sample in samples:
        text = any(line.startswith("text:") for line in sample)
        printed = status_lines(sample_info(text=text))
        assert [label(line) for line in sample] == [label(line) for line in printed], (
            f"docs/{page}: the sample's lines are not those `clipsql status` prints now "
            f"(clipsql/cli/load.py status_lines):\n" + "\n".join(printed))
        versions = {int(v) for v in re.findall(r"schema v(\d+)", "\n".join(sample))}
        assert versions == {newest_migration()}, (
            f"docs/{page}: `schema v{versions}` but the newest migration is "
            f"{newest_migration()}")
    prose = (DOCS / page).read_text(encoding="utf-8")
    for v in re.findall(r"`schema v(\d+)`", prose):
        assert int(v) == newest_migration(), f"docs/{page} says `schema v{v}`"


def test_internals_names_every_failure_and_ignored_reason():
    text = (DOCS / "internals.md").read_text(encoding="utf-8")
    start = text.index("<!-- reasons:start")
    section = text[start:text.index("<!-- reasons:end -->")]
    named = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert named == [r.value for r in Reason] + [i.value for i in Ignored], (
        "docs/internals.md's reasons table is not clipsql/ingest/reasons.py's: " + ", ".join(named))
    for code in [*Reason, *Ignored]:
        table = "clipsql.failures" if isinstance(code, Reason) else "clipsql.ignored"
        row = next(line for line in section.splitlines()
                   if line.startswith(f"| `{code.value}` | `{table}` |"))
        assert code.description in row, (code.value, row)


def test_no_box_announces_figures_that_came():
    text = (DOCS / "performance.md").read_text(encoding="utf-8")
    assert "Figures to come" not in text


def test_cli_md_says_which_commands_take_the_shared_options():
    """The sentence once claimed every command took --db, --model and --device; the table
    that says it now is generated (docs/generate_cli.py) from the commands themselves."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert "Every command that opens the collection takes" not in text
    assert "<!-- cli-shared:start" in text and "<!-- cli-shared:end -->" in text
