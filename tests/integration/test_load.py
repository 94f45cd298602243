"""Loader on real PostgreSQL: incremental, every file a row or a failure, real EXIF samples."""

import os
import shutil

import pytest

from clipsql.errors import ConfigError, LoadError
from clipsql.ingest import accounting
from tests.conftest import make_image

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}


def count(db, table):
    return db.conn.execute(f"SELECT count(*) FROM clipsql.{table}").fetchone()[0]


def test_load_is_incremental(db, photo_folder):
    first = db.load(photo_folder)
    assert (first.added, first.updated, first.unchanged, first.failed) == (12, 0, 0, 0)
    again = db.load(photo_folder)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 12)
    assert count(db, "images") == 12
    rows = db.conn.execute("SELECT count(DISTINCT path), count(*) FROM clipsql.images").fetchone()
    assert rows == (12, 12)


def test_changed_file_is_re_embedded_and_prune_removes_gone_files(db, photo_folder):
    db.load(photo_folder)
    target = next(photo_folder.rglob("img03.*"))
    before = db.conn.execute("SELECT sha256, embedding FROM clipsql.images WHERE path = %s",
                             (str(target),)).fetchone()
    make_image(target, color=(1, 2, 3), pattern=9)
    os.utime(target, (1_700_000_000, 1_700_000_000))
    victim = next(photo_folder.rglob("img04.*"))
    victim.unlink()
    report = db.load(photo_folder)
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 1, 10, 0)
    after = db.conn.execute("SELECT sha256, embedding FROM clipsql.images WHERE path = %s",
                            (str(target),)).fetchone()
    assert after[0] != before[0] and after[1] != before[1]
    assert count(db, "images") == 12  # without --prune the gone file stays
    pruned = db.load(photo_folder, prune=True)
    assert pruned.removed == 1 and count(db, "images") == 11


def test_prune_only_touches_the_loaded_folder(db, tmp_path):
    make_image(tmp_path / "one" / "a.png")
    make_image(tmp_path / "two" / "b.png", color=(0, 0, 255))
    db.load(tmp_path / "one", tmp_path / "two")
    (tmp_path / "two" / "b.png").unlink()
    assert db.load(tmp_path / "one", prune=True).removed == 0
    with pytest.raises(LoadError, match="two is empty"):  # emptied: refused unless forced
        db.load(tmp_path / "two", prune=True)
    assert db.load(tmp_path / "two", prune=True, force=True).removed == 1


def test_broken_files_become_failures_and_the_rest_loads(db, tmp_path):
    folder = tmp_path / "mixed"
    make_image(folder / "good.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    data = (make_image(tmp_path / "src.jpg", size=(400, 300), pattern=5)).read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    report = db.load(folder)
    assert report.added == 1 and report.failed == 3
    reasons = dict(db.conn.execute("SELECT path, reason FROM clipsql.failures"))
    assert reasons == {str(folder / "empty.jpg"): "empty",
                       str(folder / "text.jpg"): "unsupported",
                       str(folder / "truncated.jpg"): "truncated"}
    assert db.load(folder).unchanged == 4  # known failures are not retried until they change
    (folder / "text.jpg").unlink()
    make_image(folder / "text.jpg", color=(9, 9, 9))
    fixed = db.load(folder)
    assert fixed.added == 1 and count(db, "failures") == 2


def test_decompression_bomb_is_refused_without_decoding(db, tmp_path):
    from PIL import Image

    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png", optimize=True)
    report = db.load(tmp_path)
    assert report.failed == 1
    assert db.conn.execute("SELECT reason FROM clipsql.failures").fetchone()[0] == "decompression_bomb"


def test_exif_samples_every_file_is_a_row_or_a_failure(db, exif_samples, tmp_path):
    report = db.load(exif_samples)
    files = [p for p in exif_samples.rglob("*") if p.suffix.lower() in IMAGE_EXTS
             and not any(part.startswith(".") for part in p.parts)]
    assert report.added + report.failed == len(files)
    assert count(db, "images") + count(db, "failures") == len(files)
    assert all(reason for _, reason in report.failures)
    again = db.load(exif_samples)
    assert (again.added, again.updated, again.failed, again.unchanged) == (0, 0, 0, len(files))


def test_exif_orientation_gives_displayed_width_and_height(db, exif_samples):
    db.load(exif_samples / "jpg" / "orientation")
    rows = db.conn.execute(
        "SELECT path, width, height, orientation FROM clipsql.images ORDER BY path").fetchall()
    assert len(rows) == 16
    for path, width, height, orientation in rows:
        name = os.path.basename(path)
        assert orientation == int(name[-5])
        if name.startswith("landscape"):
            assert width > height, name
        else:
            assert height > width, name


def test_gps_photos_get_coordinates_and_dates(db, exif_samples):
    db.load(exif_samples / "jpg" / "gps")
    rows = db.conn.execute(
        "SELECT latitude, longitude, taken_at, camera_make FROM clipsql.images").fetchall()
    assert len(rows) == 9
    for lat, lon, taken, make in rows:
        assert 43.4 < lat < 43.5 and 11.8 < lon < 11.9  # Tuscany, per the folder's README
        assert taken.year == 2008 and make == "NIKON"


def test_heic_and_unicode_tiff_load(db, exif_samples):
    report = db.load(exif_samples / "heic", exif_samples / "tiff")
    assert report.failed == 0
    formats = {r[0] for r in db.conn.execute("SELECT DISTINCT format FROM clipsql.images")}
    assert {"HEIF", "TIFF"} <= formats
    assert db.conn.execute(
        "SELECT count(*) FROM clipsql.images WHERE path LIKE '%Crémieux%'").fetchone()[0] == 1


def test_single_file_and_symlink_loop(db, tmp_path):
    folder = tmp_path / "loop"
    make_image(folder / "x.png")
    os.symlink(folder, folder / "back")
    report = db.load(folder)
    assert report.added == 1
    assert any("symlink loop" in reason for _, reason in report.skipped)
    shutil.copy(folder / "x.png", tmp_path / "single.png")
    assert db.load(tmp_path / "single.png").added == 1


def test_file_name_that_is_not_utf8_is_a_recorded_failure(db, tmp_path):
    make_image(tmp_path / "ok.png")
    bad = os.fsencode(str(tmp_path)) + b"/caf\xe9.png"
    shutil.copy(tmp_path / "ok.png", bad)
    report = db.load(tmp_path)
    assert report.added == 1 and report.failed == 1 and report.skipped == []
    (path, reason), = report.failures
    assert path == str(tmp_path) + "/caf\\xe9.png" and reason.startswith("bad_name: ")
    stored = db.conn.execute("SELECT path, reason FROM clipsql.failures").fetchall()
    assert stored == [(path, "bad_name")]
    assert db.load(tmp_path, prune=True).removed == 0  # still there, still a failure
    assert db.conn.execute("SELECT count(*) FROM clipsql.failures").fetchone()[0] == 1


def test_decoding_in_processes_gives_the_same_rows_and_failures(pg_admin_url, tiny_model,
                                                               photo_folder):
    """processes=True (spawned decoder processes) stores exactly what the thread pool stores,
    and a broken file still ends as a failure with its reason (ImageError crosses processes)."""
    import numpy as np
    import psycopg

    import clipsql
    from tests.conftest import fresh_database

    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photo_folder / "empty.png").write_bytes(b"")
    query = ("SELECT path, sha256, width, height, taken_at, embedding::text FROM clipsql.images "
             "ORDER BY path")
    rows = {}
    for processes in (False, True):
        with fresh_database(pg_admin_url) as url:
            with clipsql.connect(url, model=tiny_model) as db:
                report = db.load(photo_folder, batch_size=5, workers=2, processes=processes)
                assert (report.added, report.failed) == (12, 2)
                failures = db.conn.execute(
                    "SELECT reason FROM clipsql.failures ORDER BY path").fetchall()
                assert [r for (r,) in failures] == ["truncated", "empty"]
            with psycopg.connect(url) as conn:
                rows[processes] = conn.execute(query).fetchall()
    threads, procs = rows[False], rows[True]
    assert [r[:5] for r in threads] == [r[:5] for r in procs]
    a = np.array([np.fromstring(r[5][1:-1], sep=",") for r in threads])
    b = np.array([np.fromstring(r[5][1:-1], sep=",") for r in procs])
    assert np.abs(a - b).max() <= 1e-3


def load_rows(db):
    return {r[0] for r in db.conn.execute("SELECT path FROM clipsql.images")}


def test_prune_refuses_an_emptied_folder_and_a_remount_reembeds_nothing(db, photo_folder,
                                                                       tmp_path):
    """An empty mount point (a share not mounted): the prune is refused with the count, the
    rows stay, and once the files are back nothing is embedded again; forced, it prunes."""
    db.load(photo_folder)
    before = load_rows(db)
    aside = tmp_path / "aside"
    shutil.move(photo_folder, aside)  # the folder stays, empty: like an unmounted share
    photo_folder.mkdir()
    with pytest.raises(LoadError, match=r"is empty .*would remove 12 of the 12 rows under it"
                                        r".*Nothing was loaded or removed.*force=True"):
        db.load(photo_folder, prune=True)
    assert load_rows(db) == before
    photo_folder.rmdir()
    shutil.move(aside, photo_folder)  # mounted again (mtimes kept)
    again = db.load(photo_folder, prune=True)
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 12, 0)
    shutil.rmtree(photo_folder)
    photo_folder.mkdir()
    assert db.load(photo_folder, prune=True, force=True).removed == 12
    assert load_rows(db) == set()


def test_prune_of_a_missing_folder_removes_nothing(db, photo_folder, tmp_path):
    db.load(photo_folder)
    photo_folder.rename(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="does not exist"):
        db.load(photo_folder, prune=True, force=True)
    assert count(db, "images") == 12


def test_prune_refuses_to_remove_most_of_a_folder_unless_forced(db, tmp_path):
    many = accounting.PRUNE_MIN_ROWS * 3
    folder = tmp_path / "photos"
    for i in range(many):
        make_image(folder / f"p{i:02d}.png", color=(i * 9 % 256, 40, 90), pattern=i % 7)
    db.load(folder)
    files = sorted(folder.iterdir())
    few = int(many * accounting.PRUNE_MAX_SHARE)  # exactly the share: allowed
    for f in files[:few]:
        f.unlink()
    assert db.load(folder, prune=True).removed == few
    for f in files[few:-1]:  # all but one of the rest: over the share, and enough rows
        f.unlink()
    gone = many - few - 1
    with pytest.raises(LoadError, match=rf"more than 50% of the files under {folder} are gone; "
                                        rf"it would remove {gone} of the {many - few} rows"):
        db.load(folder, prune=True)
    assert count(db, "images") == many - few
    assert db.load(folder, prune=True, force=True).removed == gone
    assert count(db, "images") == 1


def test_a_small_folder_under_the_row_minimum_prunes_freely(db, tmp_path):
    for i in range(3):
        make_image(tmp_path / "few" / f"{i}.png", color=(i * 80, 0, 0))
    make_image(tmp_path / "few" / "kept.png", color=(0, 0, 99))
    db.load(tmp_path / "few")
    for i in range(3):
        (tmp_path / "few" / f"{i}.png").unlink()
    assert db.load(tmp_path / "few", prune=True).removed == 3 < accounting.PRUNE_MIN_ROWS


def test_the_command_refuses_with_the_option_to_force(dsn, tiny_model, photo_folder):
    from click.testing import CliRunner

    from clipsql.cli import main

    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    runner = CliRunner()
    assert runner.invoke(main, ["load", str(photo_folder)], env=env).exit_code == 0
    shutil.rmtree(photo_folder)
    photo_folder.mkdir()
    refused = runner.invoke(main, ["load", str(photo_folder), "--prune"], env=env)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "would remove 12 of the 12 rows" in refused.output
    assert "--force" in refused.output and "force=True" not in refused.output
    misuse = runner.invoke(main, ["load", str(photo_folder), "--force"], env=env)
    assert misuse.exit_code == 2 and "--force only changes a prune" in misuse.output
    forced = runner.invoke(main, ["load", str(photo_folder), "--prune", "--force"], env=env)
    assert forced.exit_code == 0 and "removed 12" in forced.output
