"""CPU inference precision: fp32 vs bf16 vs int8 (dynamic quantisation), on real photos.

    python benchmarks/precision.py [--model ViT-B-32] [--folder ../shared/data/exif-samples/jpg]

Throughput of the image tower on batches of 32 preprocessed real photos, and the cosine
similarity of each image's embedding to its fp32 embedding. Random weights unless a
pretrained spec is given: speed does not depend on the weights, closeness may.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--folder", type=Path, default=ROOT.parent / "shared/data/exif-samples/jpg")
    ap.add_argument("--images", type=int, default=64)
    args = ap.parse_args()
    import torch

    from clipsql.ingest.decode import read
    from clipsql.ingest.walk import discover
    from clipsql.models.openclip import ClipModel

    files = sorted(discover([args.folder]).files)[: args.images]
    models = {}
    for precision in ("fp32", "bf16", "int8"):
        torch.manual_seed(0)  # the same random weights for every precision
        models[precision] = ClipModel(args.model, device="cpu", precision=precision)
        models[precision].torch_model  # weights are made (and seeded) on load
    batch = torch.stack([read(f, models["fp32"].preprocess, 448).pixels for f in files])
    out, rate = {}, {}
    for name, m in models.items():
        m.encode_images(batch[:32])  # warm-up
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            out[name] = np.concatenate([m.encode_images(batch[i:i + 32]) for i in range(0, len(batch), 32)])
            best = min(best, time.perf_counter() - t)
        rate[name] = len(batch) / best
    print(f"{args.model}, {len(batch)} real photos from {args.folder}, torch threads {torch.get_num_threads()}")
    for name in models:
        cos = (out[name] * out["fp32"]).sum(axis=1)
        print(f"{name:5} {rate[name]:6.1f} images/s  {rate[name] / rate['fp32']:4.2f}x fp32   "
              f"cosine to fp32: min {cos.min():.4f} mean {cos.mean():.4f}")


if __name__ == "__main__":
    main()
