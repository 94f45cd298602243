"""Videos as moments (:mod:`clipsql.ingest.video`), on videos these tests encode with PyAV:
scenes of known colours and lengths in every container the loader reads, so moments have
known times; long ones for the interval, the moment cap and memory; broken, cut short and
hostile files for the failures. No database, no model (``preprocess`` is a stand-in)."""

from __future__ import annotations

import gc
import os
import struct
import threading
import tracemalloc
import weakref
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from clipsql.errors import ImageError
from clipsql.ingest import decode, video
from clipsql.ingest.reasons import Reason

W, H, FPS = 160, 120, 25
RED, BLUE = (220, 0, 0), (0, 0, 220)
#: 3 s red, 4 s of a moving noise pattern, 2 s blue: cuts at 3 s and 7 s, 9 s long.
SCENES = [(RED, 3.0), ("noise", 4.0), (BLUE, 2.0)]
CUTS = [0.0, 3.0, 7.0]
#: Container, codec per file of the scenes above.
CONTAINERS = {"scenes.mp4": ("mp4", "libx264"), "scenes.webm": ("webm", "libvpx-vp9"),
              "scenes.avi": ("avi", "mpeg4"), "scenes.mkv": ("matroska", "libx264"),
              "scenes.mov": ("mov", "mpeg4")}
STEP = 1 / video.SAMPLE_FPS


def encode(path: Path, scenes, *, fmt=None, codec="mpeg4", size=(W, H), fps=FPS,
           metadata=None, options=None, rotation=None) -> Path:
    """Write ``scenes`` ([(rgb | "noise" | "drift", seconds)]) as a video and return it."""
    w, h = size
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        solid: dict = {}
        n = 0
        for kind, seconds in scenes:
            for i in range(round(seconds * fps)):
                if kind == "noise":
                    a = np.roll(noise, 3 * i, axis=1)
                elif kind == "drift":  # one scene: a pattern that drifts a pixel a frame
                    a = np.roll(noise, n // 2, axis=1)
                else:
                    a = solid.get(kind)
                    if a is None:
                        a = solid[kind] = np.empty((h, w, 3), np.uint8)
                        a[:] = kind
                frame = av.VideoFrame.from_ndarray(a, format="rgb24")
                frame.pts = n
                frame.time_base = Fraction(1, fps)
                n += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def sizes(img):
    return img.size


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for name, (fmt, codec) in CONTAINERS.items():
        encode(folder / name, SCENES, fmt=fmt, codec=codec)
    return folder


def starts(moments):
    return [m.start_s for m in moments]


# --- names -------------------------------------------------------------------------------
def test_video_names_are_not_image_names():
    assert video.is_video("/a/B.MP4") and video.is_video("x.webm") and video.is_video("y.mts")
    assert not video.is_video("a.jpg") and not video.is_video("app.ts")  # TypeScript
    assert not video.VIDEO_EXTENSIONS & decode.EXTENSIONS


# --- moments -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_moments_start_at_the_cuts_and_end_at_the_next(videos, name):
    moments = video.read_video(str(videos / name), sizes, 448)
    assert len(moments) == len(CUTS), [(m.start_s, m.end_s) for m in moments]
    for m, cut in zip(moments, CUTS):
        assert cut <= m.start_s <= cut + STEP + 2 / FPS, (name, starts(moments))
    for a, b in zip(moments, moments[1:]):
        assert a.end_s == b.start_s
    assert moments[-1].end_s == pytest.approx(9.0, abs=2 / FPS)
    first = moments[0]
    assert first.pixels == (W, H)  # never enlarged to draft_size
    assert (first.width, first.height) == (W, H)
    assert first.bytes == os.path.getsize(videos / name) and len(first.sha256) == 64
    assert {m.sha256 for m in moments} == {first.sha256}
    assert first.mtime == decode.mtime_of(os.stat(videos / name))
    assert first.meta["exif"]["moments"] == 3 and first.meta["exif"]["fps"] == FPS
    for column in ("orientation", "taken_at", "camera_make", "camera_model", "latitude",
                   "longitude", "exif"):
        assert column in first.meta
    assert first.format == {"scenes.mp4": "MP4", "scenes.webm": "WEBM", "scenes.avi": "AVI",
                            "scenes.mkv": "MATROSKA", "scenes.mov": "QUICKTIME"}[name]


def test_keyframes_are_the_scenes_and_are_shrunk_to_draft_size(tmp_path, videos):
    colours = []

    def keep(img):
        colours.append(img.resize((1, 1)).getpixel((0, 0)))
        return img.size

    moments = video.read_video(str(videos / "scenes.mp4"), keep, 60)
    assert [m.pixels for m in moments] == [(80, 60)] * 3  # the shorter side at draft_size
    red, _, blue = colours
    assert red[0] > 150 and red[2] < 60 and blue[2] > 150 and blue[0] < 60


def test_a_single_scene_gets_a_moment_each_max_interval(tmp_path):
    path = encode(tmp_path / "long.avi", [("drift", 95.0)], size=(64, 48), fps=5)
    moments = video.read_video(str(path), sizes)
    assert starts(moments) == [0.0, 30.0, 60.0, 90.0]
    assert moments[-1].end_s == pytest.approx(95.0, abs=0.3)
    short = video.read_video(str(path), sizes, max_interval_s=20)
    assert starts(short) == [0.0, 20.0, 40.0, 60.0, 80.0]


def test_cuts_closer_than_min_scene_make_no_moment(tmp_path):
    path = encode(tmp_path / "flash.avi", [(RED, 2.0), (BLUE, 0.5), (RED, 2.5)], fps=10)
    assert starts(video.read_video(str(path), sizes)) == [0.0, 2.0]  # not 2.5: 0.5 s later
    assert starts(video.read_video(str(path), sizes, scene_threshold=1.0)) == [0.0]


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory) -> Path:
    """10 minutes, a cut every 5 s (alternating red and blue), small and fast to encode."""
    path = tmp_path_factory.mktemp("long") / "ten.avi"
    return encode(path, [(RED if i % 2 else BLUE, 5.0) for i in range(120)], size=(64, 48),
                  fps=4)


def test_max_moments_spreads_them_over_a_long_video(ten_minutes):
    moments = video.read_video(str(ten_minutes), sizes, max_moments=10)
    assert 2 <= len(moments) <= 10
    assert moments[-1].start_s >= 480  # the whole video, not its first 10 cuts
    assert all(b.start_s - a.start_s >= 59 for a, b in zip(moments, moments[1:]))
    assert moments[-1].end_s == pytest.approx(600, abs=1)
    every = video.read_video(str(ten_minutes), sizes)
    assert len(every) == video.MAX_MOMENTS  # a cut every 5 s: 120, the cap


def test_reading_a_long_video_keeps_only_its_moments(ten_minutes):
    """Streaming: what a read holds is its kept keyframes (one small tensor-like array each
    here) and a frame or two, never the video's frames or thumbnails."""
    alive: list = []
    held_at_calls: list = []

    def preprocess(img):
        gc.collect()
        held_at_calls.append(sum(r() is not None for r in alive))
        alive.append(weakref.ref(img))
        return np.zeros(100, np.float32)

    tracemalloc.start()
    try:
        moments = video.read_video(str(ten_minutes), preprocess, max_moments=12)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(moments) <= 12
    assert max(held_at_calls) <= 1  # no keyframe image kept once preprocessed
    # the SHA-256's 1 MB read buffer and small change; the 2400 samples' thumbnails (64x36)
    # alone would be 5.5 MB, the frames as arrays 22 MB
    assert peak < 2_000_000, peak


def test_reads_run_in_threads(videos):
    path = str(videos / "scenes.webm")
    expected = starts(video.read_video(path, sizes))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(
        starts(video.read_video(path, sizes)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4


@pytest.mark.parametrize("name", ["sound.mp4", "sound.mkv"])
def test_a_video_with_sound_is_read_from_its_video_stream(tmp_path, name):
    path = tmp_path / name
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=44100)  # the first stream: audio
        picture = out.add_stream("libx264", rate=FPS)
        picture.width, picture.height, picture.pix_fmt = W, H, "yuv420p"
        for i in range(4 * FPS):
            a = np.zeros((H, W, 3), np.uint8)
            a[..., 0 if i < 2 * FPS else 2] = 220
            frame = av.VideoFrame.from_ndarray(a, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for p in picture.encode(frame):
                out.mux(p)
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 44100 // FPS), np.float32),
                                                 format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 44100, i * (44100 // FPS)
            for p in sound.encode(samples):
                out.mux(p)
        for stream in (picture, sound):
            for p in stream.encode():
                out.mux(p)
    moments = video.read_video(str(path), sizes)
    assert starts(moments) == [0.0, 2.0] and moments[-1].end_s == pytest.approx(4.0, abs=0.1)
    assert video.frame_at(str(path), 3.0).getpixel((5, 5))[2] > 150
    assert video.frame_at(str(path), 1.0).getpixel((5, 5))[0] > 150


# --- metadata and display ----------------------------------------------------------------
def test_rotation_is_applied_to_size_and_frames(tmp_path):
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.set_display_rotation(90)
        a = np.zeros((H, W, 3), np.uint8)
        a[: H // 2, :, 0] = 220  # top red, bottom blue: turned 90 degrees counter-clockwise,
        a[H // 2:, :, 2] = 220   # red is on the left
        for _ in range(10):
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    (m,) = video.read_video(str(path), sizes)
    assert (m.width, m.height) == (H, W) and m.pixels == (H, W)
    assert m.meta["exif"]["rotation"] == 90
    img = video.frame_at(str(path), 0.5)
    assert img.size == (H, W)
    assert img.getpixel((10, W // 2))[0] > 150 and img.getpixel((H - 10, W // 2))[2] > 150


def test_tags_become_metadata_columns(tmp_path):
    apple = encode(tmp_path / "phone.mp4", [(RED, 1.0)], fps=5, options={
        "movflags": "use_metadata_tags"}, metadata={
        "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 12",
        "com.apple.quicktime.creationdate": "2022-08-14T18:05:09+0200",
        "com.apple.quicktime.location.ISO6709": "+37.7858-122.4064+012.345/",
        "creation_time": "2022-08-14T16:05:09.000000Z"})
    meta = video.read_video(str(apple), sizes)[0].meta
    assert meta["taken_at"] == datetime(2022, 8, 14, 18, 5, 9)  # local time, as photos
    assert (meta["camera_make"], meta["camera_model"]) == ("Apple", "iPhone 12")
    assert (meta["latitude"], meta["longitude"]) == (37.7858, -122.4064)
    assert meta["orientation"] is None
    camera = encode(tmp_path / "camera.mov", [(RED, 1.0)], fps=5, fmt="mov", metadata={
        "make": "Canon", "model": "EOS R5", "creation_time": "2021-06-01T10:20:30.000000Z",
        "location": "+48.8584+002.2945/"})
    meta = video.read_video(str(camera), sizes)[0].meta
    assert meta["taken_at"] == datetime(2021, 6, 1, 10, 20, 30)  # as written, zone dropped
    assert (meta["camera_make"], meta["latitude"], meta["longitude"]) == ("Canon", 48.8584, 2.2945)


# --- frame_at ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["scenes.mp4", "scenes.webm", "scenes.avi"])
def test_frame_at_shows_the_scene_of_that_time(videos, name):
    path = str(videos / name)

    def colour(seconds):
        return video.frame_at(path, seconds).resize((1, 1)).getpixel((0, 0))

    for t in (0.0, 1.5, 2.9):
        r, _, b = colour(t)
        assert r > 150 and b < 60, (t, r, b)
    for t in (7.0, 8.0, 8.96, 500.0):  # past the end: the last frame
        r, _, b = colour(t)
        assert b > 150 and r < 60, (t, r, b)
    noise = np.asarray(video.frame_at(path, 5.0).convert("L"), np.float32)
    assert noise.std() > 40  # the noise scene, not a solid one
    for m in video.read_video(path, sizes):  # a moment's keyframe is frame_at its start
        assert video.frame_at(path, m.start_s).size == (W, H)
    small = video.frame_at(path, 1.0, max_side=80)
    assert small.size == (80, 60)


@pytest.mark.parametrize("name", ["scenes.mp4", "scenes.webm"])
def test_a_moment_read_again_is_the_same_keyframe(videos, name):
    path = str(videos / name)
    moments = video.read_video(path, np.asarray, 60)
    for m in moments:
        again = video.read_moment(path, m.start_s, np.asarray, 60, end_s=m.end_s)
        assert np.array_equal(again.pixels, m.pixels)
        assert np.array_equal(np.asarray(video.frame_at(path, m.start_s, min_side=60)), m.pixels)
        for fact in ("sha256", "bytes", "mtime", "width", "height", "format", "start_s", "end_s"):
            assert getattr(again, fact) == getattr(m, fact)
        assert {k: v for k, v in again.meta.items() if k != "exif"} == \
            {k: v for k, v in m.meta.items() if k != "exif"}


# --- failures ----------------------------------------------------------------------------
def reason_of(path, *args, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        video.read_video(str(path), sizes, *args, **kwargs)
    return caught.value.reason


def test_broken_files_fail_with_their_reason(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert reason_of(tmp_path / "empty.mp4") == Reason.EMPTY
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(20000))
    assert reason_of(tmp_path / "garbage.mp4") == Reason.CORRUPT
    assert reason_of(tmp_path / "gone.mp4") == Reason.VANISHED
    Image.new("RGB", (10, 10)).save(tmp_path / "picture.mp4", "PNG")
    assert reason_of(tmp_path / "picture.mp4") == Reason.UNSUPPORTED
    with pytest.raises(ImageError) as caught:
        video.frame_at(str(tmp_path / "garbage.mp4"), 1.0)
    assert caught.value.reason == Reason.CORRUPT


def test_audio_only_is_unsupported(tmp_path):
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=44100)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    with pytest.raises(ImageError) as caught:
        video.read_video(str(path), sizes)
    assert caught.value.reason == Reason.UNSUPPORTED and "audio only" in caught.value.detail


def test_a_playlist_named_mp4_opens_nothing_else(tmp_path, videos):
    path = tmp_path / "list.mp4"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n"
                    f"file://{videos / 'scenes.mp4'}\n#EXT-X-ENDLIST\n")
    assert reason_of(path) == Reason.CORRUPT
    concat = tmp_path / "list.avi"
    concat.write_text(f"ffconcat version 1.0\nfile '{videos / 'scenes.avi'}'\n")
    assert reason_of(concat) == Reason.UNSUPPORTED  # FFmpeg's concat demuxer: not allowed


@pytest.fixture(scope="module")
def faststart(tmp_path_factory) -> bytes:
    """The scenes as an MP4 with its index first (as phones write them), as bytes."""
    path = tmp_path_factory.mktemp("fast") / "fast.mp4"
    return encode(path, SCENES, codec="libx264", options={"movflags": "faststart"}).read_bytes()


def test_a_video_cut_short_keeps_the_moments_before_the_cut(tmp_path, faststart, videos):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart[:int(len(faststart) * 0.6)])
    moments = video.read_video(str(cut), sizes)
    assert 1 <= len(moments) < 3 and moments[0].start_s == 0.0
    assert moments[-1].end_s < 8.0
    assert "cut short" in moments[0].meta["exif"]["incomplete"]
    mkv = (videos / "scenes.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(mkv[:len(mkv) // 2])
    moments = video.read_video(str(tmp_path / "cut.mkv"), sizes)
    assert moments and moments[-1].end_s < 8.0 and moments[0].meta["exif"]["incomplete"]


def test_a_damaged_stretch_costs_its_frames_not_the_video(tmp_path, faststart):
    damaged = bytearray(faststart)
    middle = len(damaged) // 2
    damaged[middle:middle + 3000] = np.random.default_rng(3).bytes(3000)
    (tmp_path / "damaged.mp4").write_bytes(bytes(damaged))
    moments = video.read_video(str(tmp_path / "damaged.mp4"), sizes)
    assert len(moments) == 3 and moments[-1].end_s == pytest.approx(9.0, abs=0.1)
    assert moments[0].meta["exif"]["damaged_packets"] >= 1


def test_a_video_cut_before_any_frame_is_truncated(tmp_path, faststart, videos):
    cut = tmp_path / "header_only.mp4"
    cut.write_bytes(faststart[:faststart.index(b"mdat") + 8])
    assert reason_of(cut) == Reason.TRUNCATED
    index_at_end = (videos / "scenes.mp4").read_bytes()  # moov after the frames: never written
    (tmp_path / "recording.mp4").write_bytes(index_at_end[:len(index_at_end) // 2])
    assert reason_of(tmp_path / "recording.mp4") == Reason.TRUNCATED


@pytest.mark.parametrize("name", ["scenes.mp4", "scenes.webm", "scenes.avi", "scenes.mkv"])
def test_damaged_videos_give_moments_or_an_image_error(tmp_path, videos, name):
    """Bytes overwritten at random places (headers included): whatever FFmpeg makes of it,
    the read gives moments in order or an ImageError, nothing else."""
    data = (videos / name).read_bytes()
    rng = np.random.default_rng(sum(map(ord, name)))
    for i in range(6):
        damaged = bytearray(data)
        for at in rng.integers(0, len(data) if i % 2 else min(len(data), 4096), 12):
            damaged[at:at + 4] = rng.bytes(4)
        path = tmp_path / f"{i}{Path(name).suffix}"
        path.write_bytes(bytes(damaged))
        try:
            moments = video.read_video(str(path), sizes)
        except ImageError as exc:
            assert Reason.of(exc.reason)
            continue
        assert moments and all(0 <= m.start_s <= m.end_s for m in moments)
        assert starts(moments) == sorted(set(starts(moments)))


def test_a_huge_frame_size_is_refused_before_decoding(tmp_path, videos, monkeypatch):
    """An AVI whose header and JPEG frames claim 15000x13000 (195 MP): refused by the
    header, nothing decoded (the file is 1 kB)."""
    jpeg = bytearray(_tiny_jpeg())
    sof = jpeg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 13000, 15000)
    path = tmp_path / "bomb.avi"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=5)
        s.width, s.height, s.pix_fmt = 15000, 13000, "yuvj420p"
        s.time_base = Fraction(1, 5)
        for i in range(5):
            packet = av.Packet(bytes(jpeg))
            packet.stream, packet.pts, packet.dts = s, i, i
            packet.time_base, packet.is_keyframe = s.time_base, True
            out.mux(packet)
    for call in (lambda: video.read_video(str(path), sizes), lambda: video.frame_at(str(path), 0)):
        with pytest.raises(ImageError) as caught:
            call()
        assert caught.value.reason == Reason.DECOMPRESSION_BOMB
        assert "15000x13000" in caught.value.detail
    monkeypatch.setattr(decode, "MAX_PIXELS", W * H - 1)  # the limit is decode's, read live
    assert reason_of(videos / "scenes.mp4") == Reason.DECOMPRESSION_BOMB


def test_the_image_byte_limit_does_not_apply(videos, monkeypatch):
    monkeypatch.setattr(decode, "MAX_BYTES", 100)
    assert len(video.read_video(str(videos / "scenes.avi"), sizes)) == 3


def _tiny_jpeg() -> bytes:
    import io

    out = io.BytesIO()
    Image.new("RGB", (16, 16), RED).save(out, "JPEG")
    return out.getvalue()
