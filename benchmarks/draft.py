"""What the load's JPEG draft size costs and saves: CPU per photo of clipsql's decode
(``clipsql.ingest.decode.read``: read, header checks, draft decode, EXIF, orientation, the
model's preprocessing, SHA-256) at a full decode, at twice the model input (the rule until
2026-12-07) and at :func:`clipsql.ingest.decode.draft_size` (now), beside the floor of any
JPEG decode (entropy decoding alone, at 1/8, no preprocessing); and the embeddings' cosine
to a full decode's (fp32, so the engine's int8 rounding is not counted).

    python benchmarks/draft.py [--count 40] [--samples 60] [--model SPEC] [--repeats 3]

Photos: ``--count`` camera-sized JPEGs of ../shared/bench/make_photos.py (1600x1200 to
4032x3024) plus ``--samples`` JPEGs of ../shared/data/exif-samples (cosines only: their
sizes are all over the place). CPU seconds are this process's (one thread), the median of
``--repeats`` passes after one untimed pass.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from common import (
    MAKE_PHOTOS,
    ROOT,
    load_average,
    make_photos,
    print_machine,
    random_vitb32,
    scratch_dir,
)

sys.path.insert(0, str(ROOT))
EXIF_SAMPLES = ROOT.parent / "shared" / "data" / "exif-samples"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=40, help="camera-sized photos (timed)")
    ap.add_argument("--samples", type=int, default=60, help="exif-samples JPEGs (cosines)")
    ap.add_argument("--model", help="CLIP model spec (default: ViT-B-32, seeded random weights)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print_machine()
    if not MAKE_PHOTOS.exists():
        sys.exit(f"{MAKE_PHOTOS} is missing")
    tmp = scratch_dir("clipsql-bench-draft-")
    spec = args.model or random_vitb32(tmp)
    import numpy as np
    from PIL import Image

    from clipsql.ingest import decode
    from clipsql.models.openclip import ClipModel

    model = ClipModel(spec, device="cpu", precision="fp32")
    preprocess, size = model.preprocess, model.image_size
    photos = sorted(str(p) for p in make_photos(tmp / "photos", args.count).glob("*.jpg"))
    samples = sorted(str(p) for p in EXIF_SAMPLES.rglob("*.jpg"))[:args.samples]
    drafts = {"full decode": None, f"twice the input (>= {2 * size} px, before)": 2 * size,
              f"draft_size (>= {decode.draft_size(size)} px, now)": decode.draft_size(size)}

    def pixels(files, draft):
        out = []
        for f in files:
            try:
                out.append(decode.read(f, preprocess, draft).pixels)
            except Exception:  # a sample Pillow cannot read (ImageError...): not compared
                out.append(None)
        return out

    def cpu_ms(run) -> float:
        run()
        spent = []
        for _ in range(args.repeats):
            started = time.process_time()
            run()
            spent.append(time.process_time() - started)
        return 1000 * statistics.median(spent) / len(photos)

    def entropy_floor():
        for f in photos:
            with Image.open(io.BytesIO(Path(f).read_bytes())) as img:
                img.draft("RGB", (1, 1))
                img.load()

    print(f"{len(photos)} photos of make_photos.py, {len(samples)} exif-samples JPEGs; "
          f"model {model.spec.arch}, input {size} px", flush=True)
    every = photos + samples
    decoded = {label: pixels(every, draft) for label, draft in drafts.items()}
    ok = [i for i in range(len(every)) if all(d[i] is not None for d in decoded.values())]

    def embed(label):
        rows = [decoded[label][i] for i in ok]
        return np.concatenate([model.encode_images(np.stack(rows[j:j + 16]))
                               for j in range(0, len(rows), 16)])

    full = embed("full decode")
    for label, draft in drafts.items():
        ms = cpu_ms(lambda draft=draft: pixels(photos, draft))
        got = embed(label)
        cos = (got * full).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(full, axis=1)
        print(f"{label}: {ms:.1f} ms CPU per photo; cosine to a full decode over {len(ok)} "
              f"images: worst {cos.min():.5f}, median {np.median(cos):.5f}", flush=True)
    print(f"entropy decoding alone (1/8 scale, no preprocessing): {cpu_ms(entropy_floor):.1f} ms "
          "CPU per photo, the floor of any JPEG decode", flush=True)
    print(f"machine: {load_average()} at the end")


if __name__ == "__main__":
    main()
