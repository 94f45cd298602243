"""Video reading throughput: decoding with scene detection, and decoding plus embedding the
moments, per minute of 720p and 1080p video, in one run.

    python benchmarks/video.py                         # 2-minute test videos, ViT-B-32 random
    python benchmarks/video.py --minutes 5 --repeat 5
    python benchmarks/video.py --model ViT-B-32/laion2b_s34b_b79k   # real weights if you have them

The test videos are made first (not timed): camera photos from
``../shared/bench/make_photos.py`` (never copied into the repository), each shown for 5 to
20 s as a slow pan across it, with a cut to the next photo: 30 fps H.264 in MP4 (libx264,
``veryfast``, B-frames as cameras write them). Then, per video, ``--repeat`` times each:

* **decode + scenes**: :func:`clipsql.ingest.video.read_video` with a ``preprocess`` that
  does nothing: every frame decoded (B-frames skipped), 4 samples a second compared,
  the keyframes converted to RGB at the loader's ``draft_size`` (2x the model input);
* **decode + embed**: the same with the model's ``preprocess``, then its ``encode_images``
  on the moments' keyframes in one batch (what a load adds, without the database).

Prints the machine line (and the load average again at the end: other processes share the
cores), the moments found against the true cuts (found within 0.5 s, and moments at no
cut), and the median seconds per minute of video of both (the two interleaved, so that a
busy spell of the machine falls on both). Without
--model it builds ViT-B-32 with random weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import statistics
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from common import (
    load_average,
    make_photos,
    print_machine,
    random_vitb32,
    scratch_dir,
    timed_prepare,
)

FPS = 30


def make_video(path: Path, photos: list[Path], size: tuple[int, int], minutes: float,
               seed: int = 0) -> list[float]:
    """An H.264 MP4 of ``minutes`` of slow pans across ``photos`` with cuts between them;
    the times of the cuts (seconds; 0 included)."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    total = round(minutes * 60 * FPS)
    cuts, n, shot = [], 0, 0
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        while n < total:
            frames = min(total - n, int(rng.uniform(5, 20) * FPS))
            cuts.append(n / FPS)
            photo = Image.open(photos[shot % len(photos)]).convert("RGB")
            shot += 1
            # the photo a quarter wider and taller than the frame; the view pans across it
            scale = max(1.25 * w / photo.width, 1.25 * h / photo.height)
            big = np.asarray(photo.resize((round(photo.width * scale), round(photo.height * scale)),
                                          Image.BILINEAR))
            dx, dy = big.shape[1] - w, big.shape[0] - h
            direction = rng.choice([-1, 1])
            for i in range(frames):
                x = int(dx * (i / frames if direction > 0 else 1 - i / frames))
                y = int(dy * 0.5 * (1 + np.sin(i / frames * np.pi)) / 2)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[y:y + h, x:x + w]),
                                                   format="rgb24")
                frame.pts, frame.time_base = n, Fraction(1, FPS)
                n += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return cuts


def detection(moments, cuts: list[float]) -> str:
    starts = [m.start_s for m in moments]
    found = sum(any(abs(s - c) <= 0.5 for s in starts) for c in cuts)
    extra = sum(not any(abs(s - c) <= 0.5 for c in cuts) for s in starts)
    return (f"{len(moments)} moments; {found} of {len(cuts)} cuts found within 0.5 s, "
            f"{extra} at no cut (the interval, or a false cut)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="length of each test video")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", help="model spec (default: ViT-B-32 with random weights)")
    ap.add_argument("--sizes", default="1280x720,1920x1080")
    args = ap.parse_args()
    print_machine()

    from clipsql.ingest.video import read_video
    from clipsql.models.image import stack
    from clipsql.models.openclip import ClipModel

    tmp = scratch_dir("clipsql-bench-video-")
    photos = sorted(make_photos(tmp / "photos", 12).glob("*.jpg"))
    spec = args.model or random_vitb32(tmp)
    model = ClipModel(spec)
    seconds, steps = timed_prepare(model)
    print(f"model {model.spec.arch}: {model.backend} ({model.backend_reason}); "
          + (f"export made now in {seconds:.1f} s" if steps else "export found in the cache"),
          flush=True)
    draft = 2 * model.image_size
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        path = tmp / f"pan_{h}p.mp4"
        started = time.perf_counter()
        cuts = make_video(path, photos, (w, h), args.minutes)
        print(f"\n{h}p: {args.minutes:g} min, {FPS} fps H.264, {path.stat().st_size / 1e6:.1f} MB, "
              f"{len(cuts)} shots (made in {time.perf_counter() - started:.0f} s)", flush=True)
        per_minute = args.minutes
        scan, embed = [], []
        for _ in range(args.repeat):  # interleaved: a busy spell of the machine hits both
            started = time.perf_counter()
            moments = read_video(str(path), lambda img: None, draft)
            scan.append((time.perf_counter() - started) / per_minute)
            started = time.perf_counter()
            found = read_video(str(path), model.preprocess, draft)
            model.encode_images(stack([m.pixels for m in found]))
            embed.append((time.perf_counter() - started) / per_minute)
        print("  " + detection(moments, cuts), flush=True)
        print(f"  decode + scenes: {statistics.median(scan):6.2f} s per minute of video "
              f"(median of {args.repeat}; {60 / statistics.median(scan):.1f}x real time)")
        print(f"  decode + embed:  {statistics.median(embed):6.2f} s per minute of video "
              f"(median of {args.repeat}; {len(found)} moments embedded with {model.backend})",
              flush=True)
    print(f"\nmachine: {load_average()} at the end")


if __name__ == "__main__":
    main()
