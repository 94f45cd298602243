"""Image tower backends on this CPU: torch fp32/bf16/int8 and ONNX Runtime fp32/int8, and
what ``--precision auto`` picks.

    python benchmarks/precision.py [--model ViT-B-32] [--folder ../shared/data/exif-samples/jpg]
                                   [--images 64] [--rounds 3]

Throughput of each backend on batches of 32 preprocessed real photos (interleaved rounds,
median), each embedding's cosine to torch fp32 (worst and mean), then the calibration that
``auto`` runs (:mod:`clipsql.models.calibrate`, on its own small synthetic batch) and how its
choice fares on these photos against fp32. Random weights (a seeded checkpoint): speed does
not depend on the weights, closeness may. bf16 is measured even where the CPU has no native
bf16, to show what auto avoids there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import ROOT, print_machine, random_vitb32, scratch_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--folder", type=Path, default=ROOT.parent / "shared/data/exif-samples/jpg")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print_machine()
    import torch

    from clipsql.ingest.decode import read
    from clipsql.ingest.walk import discover
    from clipsql.models import onnx_export, runner
    from clipsql.models.machine import has_native_bf16
    from clipsql.models.openclip import ClipModel

    tmp = scratch_dir("clipsql-precision-")
    spec = random_vitb32(tmp) if args.model == "ViT-B-32" else args.model
    model = ClipModel(spec, device="cpu", precision="fp32")
    files = sorted(discover([args.folder]).files)[: args.images]
    batch = torch.stack([read(f, model.preprocess, 2 * model.image_size).pixels for f in files])
    t = time.perf_counter()
    meta = runner.ensure_export(model)
    export_s = time.perf_counter() - t
    names = ["torch-fp32", "torch-bf16", "torch-int8"]
    if meta:
        names += [n for n in ("onnx-fp32", "onnx-int8") if runner.onnx_file(model, n)]
    encoders = {n: runner.encoder(model, n) for n in names}
    chunks = [batch[i:i + 32] for i in range(0, len(batch), 32)]
    out = {n: np.concatenate([e.encode(c) for c in chunks]) for n, e in encoders.items()}
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n, e in encoders.items():
            start = time.perf_counter()
            for c in chunks:
                e.encode(c)
            times[n].append(time.perf_counter() - start)
    rate = {n: len(batch) / statistics.median(t) for n, t in times.items()}
    print(f"{args.model}, {len(batch)} real photos from {args.folder}, batches of 32, "
          f"median of {args.rounds} interleaved rounds, torch threads {torch.get_num_threads()}")
    print(f"ONNX export + check + int8 quantisation: {export_s:.1f} s (once per checkpoint)"
          if meta else "ONNX: not installed or not exportable (pip install 'clipsql[onnx]')")
    for n in names:
        cos = onnx_export.cosines(out[n], out["torch-fp32"])
        note = " (emulated: no native bf16)" if n == "torch-bf16" and not has_native_bf16() else ""
        print(f"  {n:11} {rate[n]:6.1f} images/s  {rate[n] / rate['torch-fp32']:4.2f}x fp32   "
              f"cosine to fp32: worst {cos.min():.5f} mean {cos.mean():.5f}{note}")
    t = time.perf_counter()
    choice = runner.run_calibration(ClipModel(spec, device="cpu"))
    print(f"auto: calibration {time.perf_counter() - t:.1f} s (export cached) chose "
          f"{choice.backend}: {choice.reason}")
    print(f"auto's choice on these photos: {rate[choice.backend]:.1f} images/s, "
          f"{rate[choice.backend] / rate['torch-fp32']:.2f}x torch-fp32")


if __name__ == "__main__":
    main()
