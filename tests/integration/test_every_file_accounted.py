"""Every file under a loaded folder is a row, a recorded failure or ignored: one file of
every format Pillow writes here, a DNG, a garbage NEF, text files, a .DS_Store, a broken
symlink, a FIFO, a file without permissions and a name that is not UTF-8, through
`clipsql load` and `clipsql status` (CliRunner, the real database)."""

import json
import os

import psycopg
import pytest
from click.testing import CliRunner
from PIL import Image

from clipsql.cli import main
from clipsql.ingest.reasons import Ignored, Reason
from tests.unit.test_formats import CANNOT, extension_for, write, write_dng

pytestmark = pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning")


def all_files(folder) -> list:
    """Every non-folder entry under ``folder`` (links, FIFOs and odd names included)."""
    out = []
    for parent, _dirs, files in os.walk(os.fsencode(folder)):
        out += [os.path.join(parent, f) for f in files]
    return out


def fill(folder) -> dict:
    """Write the mixed folder; returns the expected outcome per category."""
    expected = {"added": 0, "failed": set(), "ignored": 3}
    for fmt in sorted(Image.SAVE):
        if fmt not in CANNOT:
            write(fmt, folder / "formats" / f"picture-{fmt.lower()}{extension_for(fmt)}")
            expected["added"] += 1
    try:
        write_dng(folder / "raw" / "camera.dng")
        expected["added"] += 1
    except pytest.skip.Exception:
        pass
    (folder / "raw" / "garbage.nef").write_bytes(b"not a raw file " * 50)
    expected["failed"].add("garbage.nef")
    (folder / "notes.txt").write_text("hello")
    (folder / "formats" / "README.md").write_text("# formats")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    os.symlink(folder / "missing.jpg", folder / "dangling.jpg")
    expected["failed"].add("dangling.jpg")
    os.mkfifo(folder / "pipe.png")
    expected["failed"].add("pipe.png")
    locked = folder / "locked.png"
    write("PNG", locked)
    os.chmod(locked, 0)
    if os.access(locked, os.R_OK):   # root reads it all the same: then it is an image
        expected["added"] += 1
    else:
        expected["failed"].add("locked.png")
    with open(os.fsencode(folder) + b"/caf\xe9.png", "wb") as f:
        f.write((folder / "formats" / "picture-png.png").read_bytes())
    expected["failed"].add("caf\\xe9.png")
    return expected


@pytest.fixture
def mixed(tmp_path):
    folder = tmp_path / "mixed"
    (folder / "formats").mkdir(parents=True)
    (folder / "raw").mkdir()
    expected = fill(folder)
    yield folder, expected
    os.chmod(folder / "locked.png", 0o644)


def test_every_file_is_added_failed_or_ignored(dsn, tiny_model, mixed):
    folder, expected = mixed
    runner = CliRunner()
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}

    def run(*args):
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    report = json.loads(run("load", str(folder), "--json").stdout)
    files = all_files(folder)
    assert report["added"] + report["failed"] + report["ignored"] == len(files)
    assert report["added"] == expected["added"], report["failures"]
    assert {os.path.basename(p) for p, _ in report["failures"]} == expected["failed"]
    assert report["ignored"] == expected["ignored"]
    assert report["ignored_by_reason"] == {"not_image": 2, "hidden": 1}
    with psycopg.connect(dsn) as conn:
        stored = dict(conn.execute("SELECT path, reason FROM clipsql.failures").fetchall())
        rows = conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0]
        ignored = dict(conn.execute("SELECT path, reason FROM clipsql.ignored").fetchall())
    assert rows == expected["added"]
    assert set(stored) == {p for p, _ in report["failures"]}
    by_name = {os.path.basename(p): r for p, r in stored.items()}
    assert by_name["dangling.jpg"] == "broken_link" and by_name["pipe.png"] == "unreadable"
    assert by_name["caf\\xe9.png"] == "bad_name"
    assert by_name["garbage.nef"] in ("unsupported", "corrupt")
    assert ignored == {str(folder / "notes.txt"): "not_image",
                       str(folder / "formats" / "README.md"): "not_image",
                       str(folder / ".DS_Store"): "hidden"}
    status = json.loads(run("status", "--json").stdout)
    assert status["ignored"] == 3 and status["failures"] == len(expected["failed"])
    # every code stored is on the one list (clipsql.ingest.reasons), which says what it means
    assert set(stored.values()) | set(status["failures_by_reason"]) <= {r.value for r in Reason}
    assert set(ignored.values()) <= {r.value for r in Ignored}
    assert "ignored:    3" in run("status").stdout

    again = json.loads(run("load", str(folder), "--json").stdout)
    assert again["unchanged"] + again["failed"] + again["ignored"] == len(files)
    decode_failures = {"garbage.nef", "locked.png"} & expected["failed"]  # known: unchanged
    assert again["added"] == 0 and again["unchanged"] == expected["added"] + len(decode_failures)
    (folder / "notes.txt").unlink()
    text = run("load", str(folder)).output
    assert "ignored 2 (1 not images, 1 hidden)" in text and "broken_link" in text
    assert json.loads(run("status", "--json").stdout)["ignored"] == 2


def test_fixed_walk_failures_leave_the_failures_table(db, tmp_path):
    from tests.conftest import make_image

    make_image(tmp_path / "target.png")
    os.symlink(tmp_path / "later.png", tmp_path / "link.png")
    first = db.load(tmp_path)
    assert (first.added, first.failed) == (1, 1)
    make_image(tmp_path / "later.png", color=(0, 0, 250))   # the link now points somewhere
    fixed = db.load(tmp_path)
    assert fixed.added == 2 and fixed.failed == 0
    assert db.conn.execute("SELECT count(*) FROM clipsql.failures").fetchone()[0] == 0
    os.unlink(tmp_path / "later.png")
    broken = db.load(tmp_path, prune=True)
    assert broken.failed == 1 and broken.removed == 1   # later.png itself is gone
    reason = db.conn.execute("SELECT reason FROM clipsql.failures").fetchone()[0]
    assert reason == "broken_link"
    assert db.conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0] == 1


def test_a_reason_not_on_the_list_is_never_stored(db, dsn):
    """Both writers of clipsql.failures refuse a code that is not a Reason, writing nothing."""
    from clipsql.database import connection
    from clipsql.ingest import accounting, loader
    from clipsql.ingest.walk import Found

    found = Found()
    found.failed["/x/a.jpg"] = ("gone_missing", "a code nobody listed")
    with pytest.raises(ValueError, match="gone_missing"):
        accounting.record(db.conn, found)
    writer = loader.Writer(lambda: connection.connect(dsn), loader.LoadReport())
    writer.start()
    writer.put([], [("/x/b.jpg", "gone_missing", "a code nobody listed")])
    with pytest.raises(ValueError, match="gone_missing"):
        writer.close()
    assert db.conn.execute("SELECT count(*) FROM clipsql.failures").fetchone()[0] == 0
    found = Found()
    found.failed["/x/c.jpg"] = (Reason.VANISHED, "listed, then gone")
    assert accounting.record(db.conn, found) == [("/x/c.jpg", "vanished", "listed, then gone")]
