"""Links stay inside the loaded folders, for real (issue 28): a private folder outside the
loaded one with a secret PNG, reached by a link to the folder, a link to the file and a link
to ``/``. A load (and a watch) takes nothing from outside and says so (``link_outside`` in
``clipsql.ignored``); ``follow_links=True`` is the explicit way out; the web server sends
no byte of a row's file once it resolves outside the loaded folders."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from tests.conftest import make_image
from tests.integration.test_watch import Running, wait_until


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def attack(tmp_path):
    """``photos/`` (loaded) with two photos, a sub-folder, a link inside it and three links
    out of it; ``private/`` next to it with the secrets."""
    private, photos = tmp_path / "private", tmp_path / "photos"
    make_image(private / "secret.png", color=(1, 2, 3), pattern=3)
    make_image(private / "secret2.png", color=(4, 5, 6), pattern=5)
    make_image(photos / "a.png", color=(200, 10, 10), pattern=1)
    make_image(photos / "b.jpg", color=(10, 200, 10), pattern=2)
    make_image(photos / "sub" / "c.png", color=(10, 10, 200), pattern=4)
    os.symlink(private, photos / "innocent_folder")
    os.symlink(private / "secret2.png", photos / "cat.png")
    os.symlink("/", photos / "rootlink")
    os.symlink(photos, photos / "sub" / "up")  # an ancestor, inside: a loop
    os.symlink(photos / "a.png", photos / "same.png")  # a link inside: still loaded
    return photos, private


def rows(db) -> dict:
    return dict(db.conn.execute("SELECT path, sha256 FROM clipsql.images"))


def ignored(db) -> dict:
    return dict(db.conn.execute("SELECT path, reason FROM clipsql.ignored"))


def test_links_out_of_the_folder_are_ignored_not_followed(db, attack):
    photos, private = attack
    secrets = {sha(p) for p in private.iterdir()}
    report = db.load(photos)
    assert set(rows(db)) == {str(photos / n) for n in ("a.png", "b.jpg", "same.png", "sub/c.png")}
    assert not secrets & set(rows(db).values())
    assert report.added == 4 and report.failed == 0
    outside = {str(photos / n) for n in ("innocent_folder", "cat.png", "rootlink")}
    assert ignored(db) == dict.fromkeys(outside, "link_outside")
    assert report.ignored_by_reason == {"link_outside": 3}
    assert any("symlink loop" in why for _p, why in report.skipped)
    # the walk never went to / (it would have found images there: this test's own files)
    assert all(p.startswith(str(photos) + os.sep) for p in [*rows(db), *ignored(db)])
    roots = dict(db.conn.execute("SELECT path, link FROM clipsql.roots"))
    assert roots == {os.path.realpath(photos): None}
    # a second load changes nothing, and every entry is accounted for once
    again = db.load(photos, prune=True)
    assert (again.added, again.removed, again.unchanged) == (0, 0, 4)


def test_follow_links_is_the_explicit_way_out_but_never_to_a_cycle(db, attack):
    photos, private = attack
    report = db.load(photos, follow_links=True)
    got = rows(db)
    assert got[str(photos / "cat.png")] == sha(private / "secret2.png")
    assert got[str(photos / "innocent_folder" / "secret.png")] == sha(private / "secret.png")
    assert ignored(db) == {str(photos / "rootlink"): "link_outside"}
    assert any(p == str(photos / "rootlink") and "cycle" in why for p, why in report.skipped)
    roots = dict(db.conn.execute("SELECT path, link FROM clipsql.roots"))
    assert roots[os.path.realpath(private)] == str(photos / "innocent_folder")
    assert roots[os.path.realpath(private / "secret2.png")] == str(photos / "cat.png")
    # loading again without the option drops what came through the links
    db.load(photos)
    assert not any(str(private) in p or "innocent_folder" in p or p.endswith("cat.png")
                   for p in rows(db))
    assert set(ignored(db).values()) == {"link_outside"} and len(ignored(db)) == 3


def test_a_file_replaced_by_a_link_out_of_the_folder_is_not_served(db, attack, tiny_model,
                                                                    tmp_path):
    from clipsql.web import create_app, serve_in_thread

    photos, private = attack
    db.load(photos)
    image_id = db.conn.execute("SELECT id FROM clipsql.images WHERE path = %s",
                               (str(photos / "a.png"),)).fetchone()[0]
    original = (photos / "a.png").read_bytes()
    app = create_app(db.dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/images/{image_id}").content == original
        # the same bytes, now outside: the hash still matches, the place does not
        os.replace(photos / "a.png", private / "a.png")
        os.symlink(private / "a.png", photos / "a.png")
        for route in ("images", "thumbs"):
            r = client.get(f"/{route}/{image_id}")
            assert r.status_code == 404, route
            assert original not in r.content
        os.unlink(photos / "a.png")
        os.replace(private / "a.png", photos / "a.png")
        assert client.get(f"/images/{image_id}").content == original
        # a folder of the loaded one replaced by a link out of it
        c_id = db.conn.execute("SELECT id FROM clipsql.images WHERE path = %s",
                               (str(photos / "sub" / "c.png"),)).fetchone()[0]
        c = (photos / "sub" / "c.png").read_bytes()
        assert client.get(f"/images/{c_id}").content == c
        os.replace(photos / "sub", private / "sub")
        os.symlink(private / "sub", photos / "sub")
        r = client.get(f"/images/{c_id}")
        assert r.status_code == 404 and c not in r.content
        os.unlink(photos / "sub")
        os.replace(private / "sub", photos / "sub")
        assert client.get(f"/images/{c_id}").content == c


def test_a_file_swapped_for_a_link_after_the_walk_is_not_read(db, attack, monkeypatch):
    """The walk lists ``b.jpg`` (a photo, inside); before it is read, the folder's writer
    replaces it by a link to a private photo. The file opened is checked, not the name: no row
    takes the secret, the file is a failure (``link_outside``), the rest is loaded."""
    from clipsql.ingest import loader

    photos, private = attack
    walk = loader.discover

    def walk_then_swap(*args, **kwargs):
        found = walk(*args, **kwargs)
        os.unlink(photos / "b.jpg")
        os.symlink(private / "secret.png", photos / "b.jpg")
        return found

    monkeypatch.setattr(loader, "discover", walk_then_swap)
    report = db.load(photos)
    assert str(photos / "b.jpg") not in rows(db)
    assert sha(private / "secret.png") not in set(rows(db).values())
    assert db.conn.execute("SELECT reason FROM clipsql.failures WHERE path = %s",
                           (str(photos / "b.jpg"),)).fetchone() == ("link_outside",)
    assert report.added == 3 and report.failed == 1


def test_ocr_reads_no_file_swapped_for_a_link_since_the_load(db, attack):
    """A loaded photo later replaced by a link to a private one: the OCR run reads the
    loaded folders only, so the private file's words are never read into the database."""
    photos, private = attack
    db.load(photos)
    os.unlink(photos / "b.jpg")
    os.symlink(private / "secret.png", photos / "b.jpg")
    report = db.ocr()
    assert report.failed.get(str(photos / "b.jpg"), "").startswith("link_outside"), report.failed
    assert not db.conn.execute(
        "SELECT 1 FROM clipsql.ocr o JOIN clipsql.images i ON i.id = o.image_id "
        "WHERE i.path = %s", (str(photos / "b.jpg"),)).fetchone()


def test_a_thumbnail_shows_the_checked_file_even_if_swapped_during_the_render(
        db, attack, tiny_model, tmp_path, monkeypatch):
    """The server checks the file, renders it, and checks the name again. A writer who swaps
    in a link to a private photo right after the first check and back before the second must
    not get a thumbnail of the private photo: the render reads the checked file itself."""
    import io

    from PIL import Image

    from clipsql.web import create_app, files, serve_in_thread

    photos, private = attack
    db.load(photos)
    image_id = db.conn.execute("SELECT id FROM clipsql.images WHERE path = %s",
                               (str(photos / "a.png"),)).fetchone()[0]
    check, calls = files.still_at, []

    def racing_check(f, path):  # what a writer racing the server does, at the worst time
        if path != str(photos / "a.png"):
            return check(f, path)
        calls.append(path)
        if len(calls) == 1:  # checked: now the name leads to the private photo
            check(f, path)
            os.replace(photos / "a.png", tmp_path / "a.kept")
            os.symlink(private / "secret.png", photos / "a.png")
        else:  # rendered: the name is put back before the second check
            os.unlink(photos / "a.png")
            os.replace(tmp_path / "a.kept", photos / "a.png")
            check(f, path)

    monkeypatch.setattr(files, "still_at", racing_check)
    app = create_app(db.dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = client.get(f"/thumbs/{image_id}")
    assert r.status_code == 200 and len(calls) == 2
    red, green, blue = Image.open(io.BytesIO(r.content)).convert("RGB").resize((1, 1)).getpixel(
        (0, 0))
    assert red > 100 and green < 100 and blue < 100, (red, green, blue)  # a.png, not the secret


def test_rows_loaded_through_links_are_served_only_while_their_place_is_recorded(
        db, attack, tiny_model, tmp_path):
    from clipsql.web import create_app, serve_in_thread

    photos, private = attack
    db.load(photos, follow_links=True)  # the user asked: their files are served
    secret_id = db.conn.execute("SELECT id FROM clipsql.images WHERE path = %s",
                                (str(photos / "cat.png"),)).fetchone()[0]
    secret = (private / "secret2.png").read_bytes()
    app = create_app(db.dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/images/{secret_id}").content == secret
        # a row from before the rule (or from a place no longer recorded): never sent
        db.conn.execute("DELETE FROM clipsql.roots WHERE link IS NOT NULL")
        for route in ("images", "thumbs"):
            r = client.get(f"/{route}/{secret_id}")
            assert r.status_code == 404 and secret not in r.content


def test_a_watch_ignores_a_new_link_out_of_the_folder(db, attack):
    photos, private = attack
    make_image(private / "secret_passport.jpg", color=(9, 9, 9), pattern=6)
    running = Running(db, [photos], {"debounce_s": 0.3, "settle_s": 0.5})
    try:
        os.symlink(private / "secret_passport.jpg", photos / "holiday.jpg")
        make_image(photos / "d.png", color=(90, 90, 90), pattern=7)
        wait_until(lambda: str(photos / "d.png") in rows(db), what="the new photo")
        wait_until(lambda: str(photos / "holiday.jpg") in ignored(db), what="the new link")
        assert ignored(db)[str(photos / "holiday.jpg")] == "link_outside"
        assert str(photos / "holiday.jpg") not in rows(db)
        assert sha(private / "secret_passport.jpg") not in set(rows(db).values())
    finally:
        running.finish()


def test_migration_0018_covers_the_rows_loaded_before_it(empty_dsn, monkeypatch):
    """A database from before the rule: each row's folder, as its path names it, becomes a
    place files are sent from (so the page keeps working until the next load), and
    ``link_outside`` becomes a stored reason."""
    import psycopg

    from clipsql.database import connection, migrations

    every = migrations.available()
    with connection.connect(empty_dsn) as conn:
        monkeypatch.setattr(migrations, "available", lambda: [m for m in every if m.version < 18])
        migrations.apply(conn)
        for path, digest in (("/photos/2020/a.jpg", "ab"), ("/photos/2020/b.jpg", "cd"),
                             ("/photos/c.jpg", "ef"), ("imported-key", None)):
            facts = (digest, 1, "2020-01-01", 1, 1, "PNG") if digest else (None,) * 6
            conn.execute("INSERT INTO clipsql.images (path, sha256, bytes, mtime, width, height, "
                         "format, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, '[1,0]')",
                         (path, *facts))
        monkeypatch.setattr(migrations, "available", lambda: every)
        migrations.apply(conn)
        roots = {r[0] for r in conn.execute("SELECT path FROM clipsql.roots")}
        assert roots == {"/photos/2020", "/photos"}
        from clipsql.ingest.roots import holds

        assert holds(conn, "/photos/2020/a.jpg") and holds(conn, "/photos/c.jpg")
        assert not holds(conn, "/photos2/c.jpg") and not holds(conn, "/private/a.jpg")
        conn.execute("INSERT INTO clipsql.ignored VALUES ('/photos/l.png', 'link_outside')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO clipsql.ignored VALUES ('/photos/x.png', 'nonsense')")
