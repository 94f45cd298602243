"""Videos in a load: one file, many rows (its moments), written, replaced and removed
together; incremental, kill -9 safe, searchable like images, reembedded, on Ray too."""

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

import clipsql
from clipsql.errors import QueryError
from tests.conftest import make_image
from tests.integration.test_faults import wait_for_orphaned_backends
from tests.videos import THREE_SCENES, make_video

pytestmark = pytest.mark.integration


def moments(dsn, path=None):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT path, start_s, end_s FROM clipsql.images WHERE start_s IS NOT NULL "
            "AND (%s::text IS NULL OR path = %s) ORDER BY path, start_s",
            (path, path)).fetchall()


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    make_image(root / "still.png", color=(200, 200, 30))
    make_video(root / "clip.mp4", THREE_SCENES)
    return root


def test_a_video_is_one_file_of_moments_with_their_times(db, dsn, media):
    report = db.load(media)
    assert (report.added, report.failed, report.ignored) == (2, 0, 0)
    assert report.moments == 3
    rows = moments(dsn)
    starts = [round(s, 1) for _, s, _ in rows]
    assert len(rows) == 3 and starts[0] == 0
    assert abs(starts[1] - 3) <= 0.5 and abs(starts[2] - 7) <= 0.5
    assert [e for _, _, e in rows[:-1]] == [s for _, s, _ in rows[1:]]  # end = next start
    assert abs(rows[-1][2] - 9) <= 0.5
    with psycopg.connect(dsn) as conn:
        facts = conn.execute("SELECT count(DISTINCT sha256), min(bytes), min(format), "
                             "min(width), min(height) FROM clipsql.images "
                             "WHERE start_s IS NOT NULL").fetchone()
    assert facts[0] == 1 and facts[1] == os.path.getsize(media / "clip.mp4")
    assert (facts[3], facts[4]) == (160, 120)
    status = db.status()
    assert (status["images"], status["videos"], status["moments"]) == (4, 1, 3)
    hits = db.search("a green picture", limit=10)
    assert {h.path for h in hits} == {str(media / "still.png"), str(media / "clip.mp4")}
    assert sorted(h.start_s is None for h in hits) == [False, False, False, True]


def test_an_unchanged_video_is_not_decoded_again(db, media, monkeypatch):
    db.load(media)
    from clipsql.ingest import decoder_pool

    calls = []
    real = decoder_pool.read_video
    monkeypatch.setattr(decoder_pool, "read_video",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    report = db.load(media)
    assert (report.added, report.updated, report.unchanged, report.moments) == (0, 0, 2, 0)
    assert calls == []


def test_a_changed_video_replaces_all_its_moments(db, dsn, media):
    db.load(media)
    ids_before = {r for r in moments(dsn)}
    time.sleep(0.01)
    make_video(media / "clip.mp4", [((30, 30, 220), 4), ((250, 250, 250), 2)])
    report = db.load(media)
    assert (report.added, report.updated, report.unchanged, report.moments) == (0, 1, 1, 2)
    rows = moments(dsn)
    assert len(rows) == 2 and abs(rows[1][1] - 4) <= 0.5 and rows != ids_before
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(DISTINCT sha256) FROM clipsql.images "
                            "WHERE path LIKE '%%clip.mp4'").fetchone()[0] == 1


def test_a_broken_video_is_one_failure_and_a_pruned_video_loses_every_moment(db, dsn, media):
    (media / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000))
    (media / "empty.mov").write_bytes(b"")
    report = db.load(media)
    assert report.failed == 2 and report.added == 2
    with psycopg.connect(dsn) as conn:
        reasons = dict(conn.execute("SELECT path, reason FROM clipsql.failures").fetchall())
    assert reasons[str(media / "empty.mov")] == "empty"
    assert reasons[str(media / "broken.mp4")] in {"corrupt", "unsupported", "truncated"}
    (media / "clip.mp4").unlink()
    report = db.load(media, prune=True)
    assert report.removed == 3 and moments(dsn) == []


def test_similar_from_a_moment_by_its_time(db, dsn, media):
    db.load(media)
    video = str(media / "clip.mp4")
    rows = moments(dsn, video)
    with psycopg.connect(dsn) as conn:
        green = conn.execute("SELECT id FROM clipsql.images WHERE path = %s AND start_s = %s",
                             (video, rows[1][1])).fetchone()[0]
    hits = db.similar(f"{video}#t=5", limit=5)
    assert green not in {h.id for h in hits} and len(hits) == 3
    assert db.similar(green, limit=5) == hits
    first = db.similar(video, limit=5)  # the video's first moment
    assert rows[0][1] == 0 and len(first) == 3
    with pytest.raises(QueryError):
        db.similar(f"{video}.missing#t=5")


def test_kill_minus_nine_then_rerun_keeps_every_video_whole(dsn, tiny_model, tmp_path):
    folder = tmp_path / "videos"
    for i in range(12):
        scenes = [((i * 20 % 256, 200, 30), 2), ((30, i * 20 % 256, 200), 2),
                  ((200, 30, i * 20 % 256), 2)]
        make_video(folder / f"v{i:02d}.mp4", scenes, size=(96, 64))
    env = {**os.environ, "CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    cmd = [sys.executable, "-m", "clipsql", "load", str(folder), "--batch-size", "4",
           "--workers", "2", "--json"]
    clipsql.connect(dsn).close()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(moments(dsn)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for_orphaned_backends(dsn)
    per_video = {}
    for path, _, _ in moments(dsn):
        per_video[path] = per_video.get(path, 0) + 1
    assert per_video and set(per_video.values()) == {3}  # whole videos only
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["unchanged"] == len(per_video) and summary["added"] == 12 - len(per_video)
    rows = moments(dsn)
    assert len(rows) == 36 and len(set(rows)) == 36


def test_a_reembed_embeds_each_moment_from_its_frame(db, dsn, empty_dsn, media,
                                                    other_tiny_model):
    import numpy as np

    db.load(media)
    report = db.reembed(other_tiny_model)
    assert report.embedded == 4
    with clipsql.connect(empty_dsn, model=other_tiny_model) as fresh:  # loaded afresh
        fresh.load(media)

    def vectors(url):
        with psycopg.connect(url) as conn:
            return {(p, s): np.array(e[1:-1].split(","), dtype=np.float32) for p, s, e in
                    conn.execute("SELECT path, start_s, embedding::text FROM clipsql.images")}

    reembedded, loaded = vectors(dsn), vectors(empty_dsn)
    assert reembedded.keys() == loaded.keys() and len(loaded) == 4
    for key, v in loaded.items():
        w = reembedded[key]
        assert float(v @ w / (np.linalg.norm(v) * np.linalg.norm(w))) > 0.9999, key
