"""Image tower on this CPU: open_clip torch fp32 against clipsql's ONNX Runtime fp32 and int8,
on real photos, and which one the precision rule picks.

    python benchmarks/precision.py [--model ARCH/CHECKPOINT] [--folder ../shared/data/exif-samples/jpg]
                                   [--images 64] [--rounds 3]

Default model: ViT-B-32 with seeded random weights (``$CLIPSQL_BENCH_CHECKPOINT``: an existing
ViT-B-32 state_dict instead; speed does not depend on the weights, closeness may). Its export
is made first if the cache has none (timed). Photos are decoded and preprocessed as a load
does (``clipsql.ingest.decode.read``), then each engine embeds them in batches of 32
(interleaved rounds, median): per-image rate, and each embedding's cosine to open_clip torch
fp32 (worst and mean). int8 runs one image at a time, as the engine runs it (its activation
scale is then the image's own). Last, what ``--precision auto`` picks on this checkpoint and
why: a rule on the export's recorded check (int8 where it kept cosine >= 0.999 to fp32 on
the reference set), not a measurement.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import ROOT, print_machine, random_vitb32, scratch_dir, timed_prepare

BASELINE = "open_clip torch fp32"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="ARCH/CHECKPOINT (default: ViT-B-32, seeded random weights)")
    ap.add_argument("--folder", type=Path, default=ROOT.parent / "shared/data/exif-samples/jpg")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print_machine()
    tmp = scratch_dir("clipsql-precision-")
    spec = args.model or random_vitb32(tmp)

    from clipsql.errors import ImageError
    from clipsql.ingest.decode import read
    from clipsql.ingest.walk import discover
    from clipsql.models import export
    from clipsql.models.image import stack
    from clipsql.models.openclip import ClipModel

    auto = ClipModel(spec, device="cpu")
    seconds, steps = timed_prepare(auto)
    print(f"export: made now in {seconds:.1f} s (once per checkpoint and machine)" if steps
          else "export: found in the cache", flush=True)

    files = sorted(discover([args.folder]).files)[: args.images]
    if not files:
        raise SystemExit(f"no images in {args.folder}")
    pixels, unreadable = [], 0
    for f in files:
        try:
            pixels.append(read(f, auto.preprocess, 2 * auto.image_size).pixels)
        except ImageError:
            unreadable += 1
    if not pixels:
        raise SystemExit(f"no readable images in {args.folder}")
    batch = stack(pixels)

    import torch

    net = ClipModel(spec, device="cpu", precision="fp32").torch_model

    def torch_fp32(pixels):
        with torch.inference_mode():
            out = net.encode_image(torch.from_numpy(pixels))
            return torch.nn.functional.normalize(out.float(), dim=-1).numpy()

    encoders = {BASELINE: torch_fp32}
    for precision in ("fp32", "int8"):
        model = ClipModel(spec, device="cpu", precision=precision).prepare()
        if model.backend != f"onnx-{precision}":
            print(f"onnx-{precision}: not available ({model.backend}: {model.backend_reason})")
            continue
        encoders[model.backend] = model.encode_images

    chunks = [batch[i:i + 32] for i in range(0, len(batch), 32)]
    out = {n: np.concatenate([e(c) for c in chunks]) for n, e in encoders.items()}  # + warm-up
    times = {n: [] for n in encoders}
    for _ in range(args.rounds):
        for n, e in encoders.items():
            start = time.perf_counter()
            for c in chunks:
                e(c)
            times[n].append(time.perf_counter() - start)
    rate = {n: len(batch) / statistics.median(t) for n, t in times.items()}
    print(f"{spec.split('/')[0]}, {len(batch)} real photos from {args.folder}"
          + (f" ({unreadable} unreadable left out)" if unreadable else "") + ", batches of 32, "
          f"median of {args.rounds} interleaved rounds; torch threads {torch.get_num_threads()}, "
          f"ONNX Runtime on every core")
    for n in encoders:
        cos = export.cosines(out[n], out[BASELINE])
        print(f"  {n:<21} {rate[n]:6.1f} images/s  {rate[n] / rate[BASELINE]:5.2f}x torch fp32   "
              f"cosine to torch fp32: worst {cos.min():.5f} mean {cos.mean():.5f}")
    print(f"the rule (--precision auto) picks {auto.backend}: {auto.backend_reason} "
          f"(the export's check: its 16 reference images, int8 one image at a time)")
    if auto.backend in rate:
        cos = export.cosines(out[auto.backend], out[BASELINE])
        print(f"auto's choice on these photos: {rate[auto.backend]:.1f} images/s, "
              f"{rate[auto.backend] / rate[BASELINE]:.2f}x torch fp32, worst cosine "
              f"{cos.min():.5f} ({'keeps' if cos.min() >= export.ACCURACY_BAR else 'MISSES'} "
              f"the {export.ACCURACY_BAR} bar on these photos too); text queries: "
              f"{auto.engine.text_backend}")


if __name__ == "__main__":
    main()
