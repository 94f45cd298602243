"""Decoding a video is bounded (issue 28): its decoder's memory is computed from what the
stream declares and taken from the decode budget (or the stream refused) before a frame is
decoded, every file has a deadline of CPU seconds (``too_slow``), a moment's frame is read by
seeking, and a file FFmpeg or Pillow refuses from its header is never hashed. Real files,
written here with PyAV (libx264 with ``refs``, long GOPs, huge declared sizes) and
``truncate`` (sparse files)."""

from __future__ import annotations

import os
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from clipsql import config
from clipsql.errors import ImageError
from clipsql.ingest import decode, video
from clipsql.ingest import h264 as sps
from clipsql.ingest.reasons import Reason


def h264(path: Path, size, frames: int, *, refs: int = 1, gop: int = 1000, fps: int = 1,
         moving: bool = False) -> Path:
    """An H.264 video of ``frames`` flat (or slowly moving) frames, no B-frames."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={
            "preset": "superfast", "x264-params":
            f"ref={refs}:bframes=0:keyint={gop}:min-keyint={gop}:scenecut=0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        base = np.full((h * 3 // 2, w), 128, np.uint8)  # yuv420p planes: grey
        for i in range(frames):
            a = base
            if moving:
                a = base.copy()
                a[: h // 4, : w // 4] = (i * 7) % 256
            frame = av.VideoFrame.from_ndarray(a, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header (CRC mended) says ``width`` x ``height``."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def refs_of(path: Path) -> int:
    with av.open(str(path)) as c:
        extradata = bytes(c.streams.video[0].codec_context.extradata)
    return max(sps.h264_refs(nal) for nal in sps.avcc_sps(extradata))


@pytest.fixture
def no_decode(monkeypatch):
    """Fails the test if a packet is decoded or the file hashed."""
    def decode_called(*a, **k):
        raise AssertionError("a frame was decoded")

    def hash_called(*a, **k):
        raise AssertionError("the file was hashed")
    monkeypatch.setattr(video._Video, "decoded", decode_called)
    monkeypatch.setattr(video, "_hash", hash_called)


# --- memory: what the decoder holds ---------------------------------------------------------
def test_the_cost_counts_reference_frames_pixels_and_threads():
    one = video.stream_cost(8192, 8192, "yuv420p", 1)
    sixteen = video.stream_cost(8192, 8192, "yuv420p", 16)
    assert sixteen == one * (16 + video.FRAMES_BESIDE_REFS) // (1 + video.FRAMES_BESIDE_REFS)
    assert video.stream_cost(8192, 8192, "yuv420p10le", 1) > one  # 16-bit samples
    assert video.stream_cost(8192, 8192, None, 1) >= video.stream_cost(8192, 8192, "yuv444p", 1)
    assert video.stream_cost(8192, 8192, "yuv420p", 1, threads=4) > one  # a frame a thread
    assert one < decode.DECODE_MEMORY < sixteen
    # what phones and cameras write fits
    assert video.stream_cost(3840, 2160, "yuv420p10le", 16, reorder=2) < decode.DECODE_MEMORY
    assert video.stream_cost(7680, 4320, "yuv420p", 4, reorder=2) < decode.DECODE_MEMORY


def test_a_small_file_declaring_16_reference_frames_of_8192x8192_is_refused_undecoded(
        tmp_path, no_decode):
    path = h264(tmp_path / "refs16.mp4", (8192, 8192), 1, refs=16)
    assert os.path.getsize(path) < 1_000_000 and refs_of(path) == 16
    for call in (lambda: video.read_video(str(path), lambda img: img),
                 lambda: video.frame_at(str(path), 0.0, max_side=320),
                 lambda: video.read_moment(str(path), 0.0, lambda img: img)):
        with pytest.raises(ImageError) as caught:
            call()
        assert caught.value.reason is Reason.DECOMPRESSION_BOMB
        assert "16 reference frames" in caught.value.detail and "budget" in caught.value.detail
    assert decode.BUDGET.used == 0


def test_the_same_size_with_one_reference_frame_is_decoded_within_its_cost(tmp_path,
                                                                            monkeypatch):
    path = h264(tmp_path / "refs1.mp4", (4096, 4096), 2, refs=1)
    budget = decode.MemoryBudget(decode.DECODE_MEMORY)
    monkeypatch.setattr(decode, "BUDGET", budget)
    frame = video.frame_at(str(path), 0.0, max_side=64)
    assert frame.size == (64, 64)
    assert budget.peak == video.stream_cost(4096, 4096, "yuv420p", 1) and budget.used == 0
    moments = video.read_video(str(path), lambda img: np.zeros(8, np.float32), 32)
    assert len(moments) == 1 and budget.used == 0
    assert budget.peak >= video.stream_cost(4096, 4096, "yuv420p", 1)


def test_a_later_sps_declaring_more_reference_frames_is_charged_before_it_is_decoded(
        tmp_path, monkeypatch):
    """MPEG-TS streams joined: the first's SPS declares 1 reference frame, the second's (in
    the stream, not in any header) 16. The packet carrying the new SPS is charged before it
    is decoded: here, with a budget that fits 1 but not 16, refused."""
    first, second = (tmp_path / "a.ts", tmp_path / "b.ts")
    for path, refs in ((first, 1), (second, 16)):
        with av.open(str(path), "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=1, options={
                "x264-params": f"ref={refs}:bframes=0"})
            stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
            for i in range(2):
                frame = av.VideoFrame.from_ndarray(np.full((768, 512), 100 + refs, np.uint8),
                                                   format="yuv420p")
                frame.pts, frame.time_base = i + (2 if refs == 16 else 0), Fraction(1, 1)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    joined = tmp_path / "joined.mts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    fits_one = video.stream_cost(512, 512, "yuv420p", 1) + 1
    monkeypatch.setattr(decode, "DECODE_MEMORY", fits_one)
    assert len(video.read_video(str(first), lambda img: img)) == 1  # 1 reference frame fits
    with pytest.raises(ImageError) as caught:
        video.read_video(str(joined), lambda img: img)
    assert caught.value.reason is Reason.DECOMPRESSION_BOMB
    assert "16 reference frames" in caught.value.detail


def test_an_sps_is_read_from_avcc_and_annex_b():
    nal = bytes.fromhex("6764003eac76110020000401a1")
    assert sps.h264_refs(nal) == 16
    assert sps.annexb_sps(b"\x00\x00\x00\x01" + nal + b"\x00\x00\x01\x68\xee") == [nal + b"\x00"]
    assert sps.lengthed_sps(len(nal).to_bytes(4, "big") + nal, 4) == [nal]
    assert sps.h264_refs(b"\x67") is None  # cut short: unreadable, never an exception


# --- time: a deadline per file, and seeking -------------------------------------------------
def test_a_file_past_its_deadline_is_too_slow(tmp_path, monkeypatch):
    path = h264(tmp_path / "skips.mp4", (1024, 1024), 40, fps=4)
    monkeypatch.setenv(config.ENV_DECODE_DEADLINE, "0.001")
    with pytest.raises(ImageError) as caught:
        video.read_video(str(path), lambda img: img)
    assert caught.value.reason is Reason.TOO_SLOW
    assert decode.BUDGET.used == 0
    monkeypatch.delenv(config.ENV_DECODE_DEADLINE)
    assert video.frame_at(str(path), 5.0, max_side=16).size == (16, 16)


def test_the_deadline_grows_with_the_bytes_on_disk_not_with_holes(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ENV_DECODE_DEADLINE, "60")
    sparse = tmp_path / "sparse.mp4"
    with open(sparse, "wb") as f:
        f.truncate(20 << 30)
    assert video.deadline_s(os.stat(sparse)) == pytest.approx(60, abs=1)
    full = tmp_path / "full.mp4"
    full.write_bytes(os.urandom(8 << 20))
    assert video.deadline_s(os.stat(full)) == pytest.approx(68, abs=1)
    monkeypatch.setenv(config.ENV_DECODE_DEADLINE, "nonsense")
    assert config.decode_deadline() == config.DECODE_DEADLINE_S


def test_a_late_moment_is_read_from_the_keyframe_before_it(tmp_path, monkeypatch):
    """A long video with a keyframe every 50 frames: the frame at 9/10 of it decodes at most
    a GOP's frames, not the 450 before it."""
    path = h264(tmp_path / "gop.mp4", (128, 96), 500, gop=50, fps=25, moving=True)
    counts = []
    close = video._Video.close

    def counting_close(self):
        counts.append(self.frames_decoded)
        close(self)
    monkeypatch.setattr(video._Video, "close", counting_close)
    counts.clear()
    frame = video.frame_at(str(path), 18.0)
    assert frame.size == (128, 96)
    assert 1 <= counts[0] <= 50 + 2, counts
    counts.clear()
    moment = video.read_moment(str(path), 18.0, lambda img: img.size)
    assert moment.pixels == (128, 96) and counts[0] <= 52
    assert moment.sha256 == video.read_video(str(path), lambda img: img)[0].sha256


# --- nothing hashed before FFmpeg or Pillow read it -----------------------------------------
def test_a_20_gb_sparse_file_named_mp4_is_refused_without_hashing(tmp_path, no_decode):
    path = tmp_path / "huge.mp4"
    with open(path, "wb") as f:
        f.truncate(20 << 30)
    with pytest.raises(ImageError) as caught:
        video.read_video(str(path), lambda img: img)
    assert caught.value.reason in (Reason.CORRUPT, Reason.UNSUPPORTED, Reason.TRUNCATED)


def test_an_image_pillow_refuses_from_its_header_is_not_read_or_hashed(tmp_path, monkeypatch):
    def hashed(*a, **k):
        raise AssertionError("hashed")
    monkeypatch.setattr(decode.hashlib, "sha256", hashed)
    sparse = tmp_path / "big.png"
    with open(sparse, "wb") as f:
        f.truncate(400 << 20)  # under the byte limit, all zeros: no format
    budget = decode.MemoryBudget(decode.DECODE_MEMORY)
    monkeypatch.setattr(decode, "BUDGET", budget)
    with pytest.raises(ImageError) as caught:
        decode.read(str(sparse), lambda img: img)
    assert caught.value.reason is Reason.UNSUPPORTED
    assert budget.peak == 0  # never read whole
    huge = png_declaring(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ImageError) as caught:
        decode.read(str(huge), lambda img: img)
    assert caught.value.reason is Reason.DECOMPRESSION_BOMB and budget.peak == 0


def test_thumbnails_stay_within_the_pixel_limit_and_the_budget(tmp_path, monkeypatch):
    from clipsql.ingest import thumbnails

    budget = decode.MemoryBudget(decode.DECODE_MEMORY)
    monkeypatch.setattr(decode, "BUDGET", budget)
    path = tmp_path / "clear.png"
    Image.new("RGBA", (1200, 800), (0, 0, 0, 0)).save(path)
    data = thumbnails.render(str(path), 100)
    assert data and budget.peak == 8 * 1200 * 800 and budget.used == 0
    with Image.open(__import__("io").BytesIO(data)) as img:
        assert img.size == (100, 67) and img.getpixel((50, 30)) == (255, 255, 255)
    huge = png_declaring(tmp_path / "huge.png", 20000, 20000)
    assert thumbnails.render(str(huge)) is None
