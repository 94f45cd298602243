"""Video moments: precision and recall of cuts on a synthetic set beside PySceneDetect, then
reading throughput: decoding with scene detection, and decoding plus embedding the
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
    ROOT,
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


#: The real camera photos the cut set is made of (never copied into the repository).
EXIF = ROOT.parent / "shared" / "data" / "exif-samples" / "jpg"
SET_SIZE, SET_FPS = (320, 180), 25


def source_photos(root: Path = EXIF) -> list[np.ndarray]:
    """The distinct photos under ``root`` (300 px or more a side; not blank, not a rotated
    copy of another, not a broken file), upright, RGB."""
    from PIL import Image, ImageOps

    out = []
    for p in sorted(root.glob("**/*.jpg")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith("orientation/") and rel not in ("orientation/landscape_1.jpg", "orientation/portrait_1.jpg"):
            continue
        if rel.endswith("_YES.jpg") or rel in ("corrupted.jpg",):
            continue
        try:
            with Image.open(p) as im:
                if min(im.size) < 300:
                    continue
                im.draft("RGB", (800, 800))
                img = ImageOps.exif_transpose(im).convert("RGB")
        except Exception:
            continue
        a = np.asarray(img.resize((64, 48)), np.float32)
        if a.std() < 10:
            continue
        out.append(np.asarray(img))
    return out


def _cover(photo: np.ndarray, w: int, h: int, zoom: float = 1.3) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(photo)
    s = max(zoom * w / img.width, zoom * h / img.height)
    return np.asarray(img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))), Image.BILINEAR))


class Shots:
    """Frames of one video, with the true boundaries [(start_s, end_s)] (a hard cut: equal)."""

    def __init__(self, size=SET_SIZE, fps=SET_FPS):
        self.w, self.h = size
        self.fps = fps
        self.frames: list[np.ndarray] = []
        self.bounds: list[tuple[float, float]] = []

    def time(self) -> float:
        return len(self.frames) / self.fps

    def cut(self):
        if self.frames:
            self.bounds.append((self.time(), self.time()))

    def pan(self, photo, seconds, rng, travel=0.2, start=None):
        """A slow pan across ``photo``: the view moves ``travel`` of its width over the shot."""
        big = _cover(photo, self.w, self.h)
        dx, dy = big.shape[1] - self.w, big.shape[0] - self.h
        n = round(seconds * self.fps)
        x0 = rng.uniform(0, max(0, dx - travel * self.w)) if start is None else start
        y = int(dy * rng.uniform(0.2, 0.8))
        sign = rng.choice([-1, 1])
        out = []
        for i in range(n):
            x = x0 + travel * self.w * i / max(1, n)
            x = int(min(dx, x)) if sign > 0 else int(max(0, dx - x))
            out.append(np.ascontiguousarray(big[y:y + self.h, x:x + self.w]))
        return out

    def add(self, frames):
        self.frames.extend(frames)

    def fade(self, a_frames, b_frames, seconds):
        """A fade through black: a's last frames out, b's first frames in (half each)."""
        n = round(seconds * self.fps / 2)
        start = self.time() + (len(a_frames) - n) / self.fps
        for i, f in enumerate(a_frames):
            k = max(0, i - (len(a_frames) - n) + 1)
            self.frames.append((f * (1 - k / n)).astype(np.uint8) if k else f)
        for i, f in enumerate(b_frames):
            self.frames.append((f * (i / n)).astype(np.uint8) if i < n else f)
        self.bounds.append((start, start + 2 * n / self.fps))

    def dissolve(self, a_frames, b_frames, seconds):
        n = round(seconds * self.fps)
        start = self.time() + (len(a_frames) - n) / self.fps
        self.frames.extend(a_frames[:-n])
        for i in range(n):
            t = (i + 1) / (n + 1)
            self.frames.append((a_frames[len(a_frames) - n + i] * (1 - t) + b_frames[i] * t).astype(np.uint8))
        self.frames.extend(b_frames[n:])
        self.bounds.append((start, start + n / self.fps))

    def whips(self, photos, rng, slow_s=(2.0, 4.0), whip_s=(0.25, 0.5)):
        """Photos side by side, seen by a camera that pans slowly across each, then whips
        (motion blurred, eased) to the next: a boundary over each whip."""
        tiles = [_cover(p, self.w, self.h, 1.0)[:self.h] for p in photos]
        strip = np.concatenate(tiles, axis=1)
        lefts = np.cumsum([0] + [t.shape[1] for t in tiles])
        slow = 0.15 * self.w / self.fps  # pixels per frame: 15% of the width a second
        xs, bounds = [], []
        for i in range(len(tiles)):
            n = round(rng.uniform(*slow_s) * self.fps)
            x0 = lefts[i] if i else 0
            xs += [min(lefts[i + 1] - self.w, x0 + j * slow) for j in range(n)]
            if i + 1 < len(tiles):
                nb = round(rng.uniform(*whip_s) * self.fps)
                a, b = xs[-1], lefts[i + 1]
                t0 = self.time() + len(xs) / self.fps
                xs += [a + (b - a) * (1 - np.cos(np.pi * j / (nb + 1))) / 2 for j in range(1, nb + 1)]
                bounds.append((t0, t0 + nb / self.fps))
        prev = xs[0]
        for x in xs:
            sub = np.linspace(prev, x, 8) if abs(x - prev) > 2 else [x]
            acc = np.zeros((self.h, self.w, 3), np.float32)
            for s in sub:
                s = int(round(s))
                acc += strip[:, s:s + self.w]
            self.frames.append((acc / len(sub)).astype(np.uint8))
            prev = x
        self.bounds += bounds

    def write(self, path: Path) -> None:
        import av

        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.w, self.h, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23"}
            for n, f in enumerate(self.frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                frame.pts, frame.time_base = n, Fraction(1, self.fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


def equal_luma_colours(luma=120.0, count=8, chroma=70.0):
    """Colours of one grey level (BT.601) around the hue circle."""
    out = []
    for k in range(count):
        a = 2 * np.pi * k / count
        cb, cr = chroma * np.cos(a), chroma * np.sin(a)
        r = luma + 1.402 * cr
        g = luma - 0.344136 * cb - 0.714136 * cr
        b = luma + 1.772 * cb
        out.append(np.clip([r, g, b], 0, 255))
    return out


def texture(kind: str, w: int, h: int, shift: int, rng_seed: int) -> np.ndarray:
    """Grey textures of mean 128 and the same contrast (+-60), drifting ``shift`` pixels."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x = x + shift
    if kind == "vstripes":
        v = np.sign(np.sin(2 * np.pi * x / 16))
    elif kind == "hstripes":
        v = np.sign(np.sin(2 * np.pi * y / 16))
    elif kind == "checker":
        v = np.sign(np.sin(2 * np.pi * x / 24) * np.sin(2 * np.pi * y / 24))
    elif kind == "diagonal":
        v = np.sign(np.sin(2 * np.pi * (x + y) / 20))
    elif kind == "fine":
        v = np.sign(np.sin(2 * np.pi * x / 6))
    elif kind == "coarse":
        v = np.sign(np.sin(2 * np.pi * x / 64))
    elif kind == "blobs":
        from PIL import Image

        r = np.random.default_rng(rng_seed).normal(size=(h // 8 + 2, (w + 64) // 8 + 2))
        big = np.asarray(Image.fromarray(r.astype(np.float32)).resize(((w + 64 + 16), h + 16), Image.BICUBIC))
        v = np.sign(big[8:8 + h, 8 + shift % 64:8 + shift % 64 + w])
    elif kind == "flat":
        v = np.zeros((h, w), np.float32)
    else:  # noise dots
        v = np.sign(np.random.default_rng(rng_seed).normal(size=(h, w + 64)))[:, shift % 64:shift % 64 + w]
    g = np.clip(128 + 60 * v, 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def make_set(folder: Path, photos: list[np.ndarray], seed: int = 0):
    """[(name, path, bounds)] of the synthetic set."""
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(photos)))
    take = lambda: photos[order.pop() if order else rng.integers(len(photos))]  # noqa: E731
    videos = []

    def done(name, shots):
        path = folder / f"{name}.mp4"
        shots.write(path)
        videos.append((name, path, shots.bounds))

    for k in range(2):  # hard cuts between photos, each shot a slow pan
        s = Shots()
        for _ in range(10):
            s.cut()
            s.add(s.pan(take(), rng.uniform(1.5, 4), rng, travel=rng.uniform(0, 0.3)))
        done(f"photo_cuts_{k}", s)
    s = Shots()  # colour only: one grey level, another hue, light sensor noise
    colours = equal_luma_colours()
    for i in range(10):
        s.cut()
        c = colours[(i * 3) % len(colours)]
        n = round(rng.uniform(1.5, 3) * s.fps)
        for _ in range(n):
            noise = rng.normal(0, 3, (s.h, s.w, 1))
            s.frames.append(np.clip(c + noise, 0, 255).astype(np.uint8))
    done("colour_only", s)
    s = Shots()  # texture only: one mean grey and contrast, drifting a pixel a frame
    kinds = ["vstripes", "hstripes", "checker", "diagonal", "fine", "coarse", "blobs", "dots",
             "hstripes", "checker"]
    for i, kind in enumerate(kinds):
        s.cut()
        n = round(rng.uniform(1.5, 3) * s.fps)
        s.add([texture(kind, s.w, s.h, j, i) for j in range(n)])
    done("texture_only", s)
    for k in range(2):  # fades through black and cross-dissolves between photo pans
        s = Shots()
        a = s.pan(take(), 3, rng)
        s.add(a[:10])
        a = a[10:]
        for i in range(6):
            b = s.pan(take(), rng.uniform(2.5, 4), rng)
            if (i + k) % 2:
                s.fade(a, b[:len(b) // 2], rng.uniform(0.8, 1.6))
            else:
                s.dissolve(a, b[:len(b) // 2], rng.uniform(0.5, 1.2))
            a = b[len(b) // 2:]
        s.add(a)
        done(f"fades_{k}", s)
    s = Shots()  # whip pans between photos, slow pans on each
    s.whips([take() for _ in range(5)], rng)
    done("whip_pans", s)
    s = Shots()  # one shot each: slow pans only, no cut
    s.add(s.pan(take(), 12, rng, travel=0.3, start=0))
    done("slow_pan_0", s)
    s = Shots()
    s.add(s.pan(take(), 12, rng, travel=0.3, start=0))
    done("slow_pan_1", s)
    return videos


def match(found: list[float], bounds: list[tuple[float, float]], tolerance: float = 0.5) -> int:
    """True positives: detected cuts within ``tolerance`` s of a true boundary (a hard cut's
    time, or anywhere in a transition), each boundary matched once."""
    used: set[int] = set()
    for t in found:
        for i, (a, b) in enumerate(bounds):
            if i not in used and a - tolerance <= t <= b + tolerance:
                used.add(i)
                break
    return len(used)


def pyscenedetect_cuts(path: Path) -> list[float] | None:
    """PySceneDetect's ContentDetector (its defaults: threshold 27, 15 frames at least between
    cuts), read through PyAV as clipsql reads: the cut times; None if it is not installed."""
    try:
        from scenedetect import ContentDetector, SceneManager, open_video
    except ImportError:
        return None
    video = open_video(str(path), backend="pyav")
    manager = SceneManager()
    manager.add_detector(ContentDetector())
    manager.detect_scenes(video, show_progress=False)
    return [float(start.seconds) for start, _ in manager.get_scene_list()[1:]]


def cut_quality(tmp: Path) -> None:
    """Precision and recall of cuts of clipsql's detector and PySceneDetect's on the synthetic
    set (:func:`make_set`), per video and in all."""
    from clipsql.ingest.video import read_video

    try:
        import scenedetect

        peer = f"PySceneDetect {scenedetect.__version__} ContentDetector"
    except ImportError:
        peer = "PySceneDetect (not installed: pip install scenedetect-headless)"
    folder = tmp / "cuts"
    folder.mkdir()
    started = time.perf_counter()
    photos = source_photos()
    videos = make_set(folder, photos)
    print(f"\ncut set: {len(videos)} videos {SET_SIZE[0]}x{SET_SIZE[1]} {SET_FPS} fps H.264 from "
          f"{len(photos)} photos of {EXIF.relative_to(ROOT.parent)}, "
          f"{sum(len(b) for _, _, b in videos)} true boundaries "
          f"(made in {time.perf_counter() - started:.0f} s); a cut counts within 0.5 s of a hard "
          "cut or of a transition", flush=True)
    print(f"  {'video':14s} {'true':>4s}  {'clipsql found/right':>20s}  {'PySceneDetect found/right':>26s}")
    totals = {"clipsql": [0, 0, 0.0], "peer": [0, 0, 0.0]}
    boundaries = 0
    for name, path, bounds in videos:
        boundaries += len(bounds)
        started = time.perf_counter()
        moments = read_video(str(path), lambda img: None, max_interval_s=1e9)
        ours = [m.start_s for m in moments[1:]]
        totals["clipsql"][2] += time.perf_counter() - started
        started = time.perf_counter()
        theirs = pyscenedetect_cuts(path)
        totals["peer"][2] += time.perf_counter() - started
        cells = []
        for key, found in (("clipsql", ours), ("peer", theirs)):
            if found is None:
                cells.append("-")
                continue
            right = match(found, bounds)
            totals[key][0] += len(found)
            totals[key][1] += right
            cells.append(f"{len(found)}/{right}")
        print(f"  {name:14s} {len(bounds):4d}  {cells[0]:>20s}  {cells[1]:>26s}", flush=True)
    for key, label in (("clipsql", "clipsql (colour, texture, layout; transitions)"), ("peer", peer)):
        found, right, seconds = totals[key]
        if key == "peer" and not found and not right and peer.endswith("scenedetect-headless)"):
            print(f"  {label}")
            continue
        precision = right / found if found else 0.0
        print(f"  {label}: precision {precision:.3f}, recall {right / boundaries:.3f} "
              f"({right} of {boundaries} boundaries, {found - right} false cuts; "
              f"{seconds:.1f} s for the set)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="length of each test video")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", help="model spec (default: ViT-B-32 with random weights)")
    ap.add_argument("--sizes", default="1280x720,1920x1080")
    ap.add_argument("--cuts-only", action="store_true",
                    help="only the precision and recall of cuts on the synthetic set")
    args = ap.parse_args()
    print_machine()
    tmp = scratch_dir("clipsql-bench-video-")
    cut_quality(tmp)
    if args.cuts_only:
        return

    from clipsql.ingest.video import read_video
    from clipsql.models.image import stack
    from clipsql.models.openclip import ClipModel

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
