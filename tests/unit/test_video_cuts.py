"""Scene cuts of :mod:`clipsql.ingest.video` that grey thumbnails missed: cuts that change
only colour or only texture (the same mean grey), and transitions that must make one cut
(a fade through black, a dissolve) or none (a slow pan, a flash, a dip to black and back).
Small videos these tests encode with PyAV; no database, no model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from clipsql.ingest import scenes, video

W, H, FPS = 160, 96, 25


def write(path: Path, frames) -> Path:
    """``frames`` (RGB uint8 arrays) as an H.264 MP4 at :data:`FPS`."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for n, a in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def grey_colour(angle: float, luma: float = 120.0, chroma: float = 70.0) -> np.ndarray:
    """A colour of BT.601 grey level ``luma`` (what a grey thumbnail sees) and hue ``angle``."""
    cb, cr = chroma * np.cos(angle), chroma * np.sin(angle)
    return np.clip([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb],
                   0, 255)


def texture(kind: str, shift: int = 0) -> np.ndarray:
    """Grey 128 +- 60 in fine stripes or checks: the same mean brightness and contrast (and
    the same grey in every 4x4 block of a 64x36 thumbnail: what the old detector saw)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    x += shift
    v = {"vertical": np.sin(2 * np.pi * x / 8), "horizontal": np.sin(2 * np.pi * y / 8),
         "checks": np.sin(2 * np.pi * x / 12) * np.sin(2 * np.pi * y / 12)}[kind]
    g = (128 + 60 * np.sign(v)).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def scenery(seed: int, width: int = W) -> np.ndarray:
    """A photo-like picture: smooth colour blobs and edges (blurred noise, upscaled)."""
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (H // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, H), Image.BICUBIC))


def starts(path: Path) -> list[float]:
    return [m.start_s for m in video.read_video(str(path), lambda img: None)]


def test_three_colours_of_one_grey_are_three_moments(tmp_path):
    colours = [grey_colour(a) for a in (0.0, 2.1, 4.2)]
    assert np.ptp([c @ [0.299, 0.587, 0.114] for c in colours]) < 1  # one grey level
    frames = [np.broadcast_to(c, (H, W, 3)).astype(np.uint8)
              for c in colours for _ in range(2 * FPS)]
    found = starts(write(tmp_path / "colours.mp4", frames))
    assert len(found) == 3, found
    assert found[1] == pytest.approx(2.0, abs=0.35) and found[2] == pytest.approx(4.0, abs=0.35)


def test_three_textures_of_one_brightness_are_three_moments(tmp_path):
    frames = [texture(kind, i // 5) for kind in ("vertical", "horizontal", "checks")
              for i in range(2 * FPS)]  # each drifting slowly
    assert np.ptp([f.mean() for f in frames[::FPS]]) < 4
    found = starts(write(tmp_path / "textures.mp4", frames))
    assert len(found) == 3, found
    assert found[1] == pytest.approx(2.0, abs=0.35) and found[2] == pytest.approx(4.0, abs=0.35)


def test_a_fade_through_black_is_one_cut_after_it(tmp_path):
    a, b = scenery(1), scenery(2)
    frames = [a] * (2 * FPS)
    frames += [(a * (1 - i / FPS)).astype(np.uint8) for i in range(1, FPS + 1)]  # 1 s out
    frames += [(b * (i / FPS)).astype(np.uint8) for i in range(FPS)]  # 1 s in
    frames += [b] * (2 * FPS)
    found = starts(write(tmp_path / "fade.mp4", frames))
    assert len(found) == 2, found  # no cut into the black, none on the way out of it
    assert 3.0 <= found[1] <= 4.5  # as the new picture comes up, not in the black


def test_a_dissolve_is_one_cut(tmp_path):
    a, b = scenery(3), scenery(4)
    frames = [a] * (2 * FPS)
    frames += [(a * (1 - i / FPS) + b * (i / FPS)).astype(np.uint8) for i in range(FPS)]
    frames += [b] * (2 * FPS)
    found = starts(write(tmp_path / "dissolve.mp4", frames))
    assert len(found) == 2 and 1.5 <= found[1] <= 3.5, found


def test_a_slow_pan_is_no_cut(tmp_path):
    wide = scenery(5, width=2 * W)
    frames = [wide[:, i // 2:i // 2 + W] for i in range(6 * FPS)]  # 12 px a second
    assert starts(write(tmp_path / "pan.mp4", frames)) == [0.0]


def test_a_flash_and_a_dip_to_black_are_no_cut(tmp_path):
    a = scenery(6)
    frames = [a] * (2 * FPS) + [np.full_like(a, 255)] * 2 + [a] * (2 * FPS)
    frames += [(a * abs(1 - i / 12)).astype(np.uint8) for i in range(1, 24)] + [a] * (2 * FPS)
    assert starts(write(tmp_path / "flash.mp4", frames)) == [0.0]


def test_the_detector_alone():
    flat = np.zeros((72, 128, 3), np.uint8)
    red, blue = scenes.picture_features(flat + [200, 40, 40]), scenes.picture_features(
        flat + [60, 60, 230])
    assert scenes.picture_distance(red, red) == 0.0
    assert scenes.picture_distance(red, blue) > scenes.SCENE_THRESHOLD
    cuts = scenes.SceneCuts(scenes.SCENE_THRESHOLD)
    said = [cuts.push(p) for p in [red, red, blue, blue, blue]]
    assert said == [False, False, False, True, False]  # one sample behind: the blue at 2
    assert scenes.picture_features(flat).blank and not red.blank
