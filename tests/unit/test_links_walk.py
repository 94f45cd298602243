"""The walk's link rule (clipsql.ingest.walk) and the server's place check
(clipsql.web.files) on real links in a temporary folder; no database."""

from __future__ import annotations

import hashlib
import os

import pytest

from clipsql.errors import ConfigError
from clipsql.ingest.reasons import Ignored
from clipsql.ingest.walk import discover, inside


@pytest.fixture
def tree(tmp_path):
    photos, private = tmp_path / "photos", tmp_path / "private"
    (photos / "sub").mkdir(parents=True)
    private.mkdir()
    (photos / "a.png").write_bytes(b"a")
    (photos / "sub" / "b.jpg").write_bytes(b"b")
    (private / "secret.png").write_bytes(b"secret")
    os.symlink(private, photos / "folder")
    os.symlink(private / "secret.png", photos / "cat.png")
    os.symlink("/", photos / "root")
    os.symlink(tmp_path, photos / "sub" / "parent")  # an ancestor of the root
    os.symlink(photos / "sub", photos / "zz_inside")  # inside: followed (loop-checked)
    return photos, private


def test_links_out_of_the_roots_are_ignored(tree):
    photos, _private = tree
    found = discover([photos])
    assert sorted(found.files) == [str(photos / "a.png"), str(photos / "sub" / "b.jpg")]
    assert found.ignored == {str(photos / n): Ignored.LINK_OUTSIDE
                             for n in ("cat.png", "folder", "root", "sub/parent")}
    assert found.followed == [] and found.inside == [os.path.realpath(photos)]
    assert (str(photos / "zz_inside"), "symlink loop: folder already visited") in found.skipped


def test_follow_links_never_follows_a_cycle_or_a_system_tree(tree):
    photos, private = tree
    if os.path.isdir("/proc/self"):
        os.symlink("/proc/self", photos / "proc")
        (photos / "self.jpg").symlink_to("/proc/self/environ")
    found = discover([photos], follow_links=True)
    assert str(photos / "cat.png") in found.files
    assert str(photos / "folder" / "secret.png") in found.files
    assert set(found.followed) == {(str(photos / "cat.png"), str(private / "secret.png")),
                                   (str(photos / "folder"), str(private))}
    never = {"root", "sub/parent"} | ({"proc", "self.jpg"} if os.path.isdir("/proc/self") else set())
    assert found.ignored == {str(photos / n): Ignored.LINK_OUTSIDE for n in never}
    assert all(p.startswith(str(photos) + os.sep) for p in found.files)
    assert not any("/proc/" in p for p in [*found.files, *found.failed])


def test_paths_named_one_by_one_stay_within_their_folders(tree):
    photos, _private = tree
    found = discover([photos / "cat.png", photos / "a.png"], within=[photos])
    assert list(found.files) == [str(photos / "a.png")]
    assert found.ignored == {str(photos / "cat.png"): Ignored.LINK_OUTSIDE}
    # named by the user, not under a watched folder: their choice
    assert str(photos / "cat.png") in discover([photos / "cat.png"]).files


def test_a_system_tree_is_never_a_root():
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    with pytest.raises(ConfigError, match="system tree"):
        discover(["/proc/self"])


def test_inside_compares_whole_names():
    assert inside("/p/a", ["/p"]) and inside("/p", ["/p"]) and inside("/x/y", ["/"])
    assert not inside("/photos2/a", ["/photos"]) and not inside("/p", ["/p/a"])


def test_the_server_sends_nothing_that_resolves_outside_or_was_swapped_in(tmp_path):
    from fastapi import HTTPException

    from clipsql.web import files

    photos, private = tmp_path / "photos", tmp_path / "private"
    photos.mkdir()
    private.mkdir()
    (photos / "a.png").write_bytes(b"same bytes")
    digest = hashlib.sha256(b"same bytes").hexdigest()
    loaded = [os.path.realpath(photos)]

    def holds(real):
        return inside(real, loaded)

    real = files.resolve_inside(str(photos / "a.png"), holds)
    f, size = files.open_verified(real, digest)
    f.close()
    assert size == len(b"same bytes")
    # the same bytes moved outside, a link left in their place
    os.replace(photos / "a.png", private / "a.png")
    os.symlink(private / "a.png", photos / "a.png")
    with pytest.raises(HTTPException) as refused:
        files.resolve_inside(str(photos / "a.png"), holds)
    assert refused.value.status_code == 404
    if os.path.isdir("/proc/self/fd"):  # swapped after the check: the descriptor tells
        with pytest.raises(HTTPException) as refused:
            files.open_verified(real, digest)
        assert refused.value.status_code == 404


# --- the file opened is checked, not the name the walk listed (clipsql.ingest.confine) -------
@pytest.fixture
def swapped(tmp_path):
    """``photos/`` with a real photo and a real video, each then replaced by a link to a
    private file of the same kind (what a folder writer does between the walk and the read),
    and a FIFO in the place of a third file."""
    from tests.conftest import make_image
    from tests.videos import make_video

    photos, private = tmp_path / "photos", tmp_path / "private"
    make_image(private / "secret.png", color=(1, 2, 3), pattern=3)
    make_video(private / "secret.mp4", [((10, 10, 200), 1.0)])
    make_image(photos / "a.png", color=(200, 10, 10), pattern=1)
    make_video(photos / "v.mp4", [((200, 10, 10), 1.0)])
    (photos / "f.jpg").write_bytes(b"x")
    for name, target in (("a.png", "secret.png"), ("v.mp4", "secret.mp4")):
        os.replace(photos / name, tmp_path / f"was-{name}")
        os.symlink(private / target, photos / name)
    os.unlink(photos / "f.jpg")
    os.mkfifo(photos / "f.jpg")
    return photos, private


def _reason(call):
    from clipsql.errors import ImageError

    with pytest.raises(ImageError) as raised:
        call()
    return str(raised.value.reason)


def test_decoders_refuse_a_file_that_leads_outside_the_places(swapped):
    from clipsql.ingest import decode, video
    from clipsql.ingest.decoder_pool import read_file

    photos, private = swapped
    places = [str(photos.resolve())]
    same = lambda img: img  # noqa: E731
    assert _reason(lambda: decode.read(str(photos / "a.png"), same, places=places)) == \
        "link_outside"
    assert _reason(lambda: video.read_video(str(photos / "v.mp4"), same, places=places)) == \
        "link_outside"
    assert _reason(lambda: video.frame_at(str(photos / "v.mp4"), 0.0, places=places)) == \
        "link_outside"
    assert _reason(lambda: video.read_moment(str(photos / "v.mp4"), 0.0, same,
                                             places=places)) == "link_outside"
    assert _reason(lambda: read_file(str(photos / "a.png"), same, places=places)) == \
        "link_outside"
    # the same files, read where the user allowed their place (follow_links), or unconfined
    allowed = places + [str(private.resolve())]
    assert decode.read(str(photos / "a.png"), same, places=allowed).width == 96
    assert len(video.read_video(str(photos / "v.mp4"), same, places=allowed)) >= 1
    assert decode.read(str(photos / "a.png"), same).width == 96


def test_a_fifo_in_the_place_of_a_file_is_refused_not_waited_on(swapped):
    """Opening a FIFO for reading waits for a writer for ever; the decoders open without
    waiting and refuse what is not a regular file (run in a thread: a hang fails the test)."""
    import threading

    from clipsql.ingest import decode, video

    photos, _ = swapped
    answers = []

    def read_all():
        for call in (lambda: decode.read(str(photos / "f.jpg"), lambda i: i),
                     lambda: video.read_video(str(photos / "f.jpg"), lambda i: i)):
            answers.append(_reason(call))

    worker = threading.Thread(target=read_all, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "a decoder waited on the FIFO"
    assert answers == ["unreadable", "unreadable"]
