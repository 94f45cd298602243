"""Captioning rate (CoCa, greedy, bounded length) beside the embedding rate (ViT-B-32), on CPU.

    python benchmarks/captions.py [--max-length 20] [--images 4] [--skip-full]

Random weights throughout (speed does not depend on the weights): a tiny CoCa (the test
suite's shape), the full coca_ViT-B-32 architecture, and ViT-B-32's image tower. Random
weights never write the end-of-text token, so every caption runs to ``--max-length``
tokens: the worst case (trained models stop after 10-15 tokens on COCO-like photos).
Images are synthetic 640x480 noise decoded and preprocessed like files (decode time is
included in neither rate). Prints the CPU model from /proc/cpuinfo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

from common import cpu_model

TINY_COCA = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                   "head_width": 32, "attentional_pool": True, "attn_pooler_heads": 2,
                   "attn_pooler_queries": 8, "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2, "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2,
                       "layers": 2, "attn_pooler_heads": 2},
    "custom_text": True,
}


def pixels(preprocess, n: int, folder: Path):
    """``n`` synthetic photos written as JPEG files, read back the way the caption run reads."""
    import numpy as np
    import torch
    from PIL import Image

    from clipsql.ingest.decode import read

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = folder / f"noise{i}.jpg"
        if not path.exists():
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
        out.append(read(str(path), preprocess).pixels)
    return torch.stack(out)


def caption_rate(spec: str, n: int, batch: int, max_length: int, folder: Path) -> tuple:
    from clipsql.models.captioner import Captioner

    model = Captioner(spec, device="cpu")
    t = time.perf_counter()
    model.torch_model  # build (random weights)
    built = time.perf_counter() - t
    images = pixels(model.preprocess, n, folder)
    model.generate(images[:1], max_length=2)  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    texts = []
    for i in range(0, n, batch):
        texts += model.generate(images[i:i + batch], max_length=max_length)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    return n / seconds, seconds, built, texts[0], cpu / n


def embed_rate(spec: str, n: int, batch: int, folder: Path) -> tuple:
    from clipsql.models.openclip import ClipModel

    model = ClipModel(spec, device="cpu")
    images = pixels(model.preprocess, n, folder)
    model.encode_images(images[:2])  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(0, n, batch):
        model.encode_images(images[i:i + batch])
    return n / (time.perf_counter() - t), (time.process_time() - cpu) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-length", type=int, default=20)
    ap.add_argument("--images", type=int, default=4, help="images for the full-size CoCa")
    ap.add_argument("--tiny-images", type=int, default=32)
    ap.add_argument("--embed-images", type=int, default=32)
    ap.add_argument("--skip-full", action="store_true", help="no full-size coca_ViT-B-32")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="clipsql-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "cfg").mkdir()
        (tmp / "cfg" / "clipsql-tiny-coca.json").write_text(json.dumps(TINY_COCA))
        os.environ["CLIPSQL_MODEL_CONFIGS"] = str(tmp / "cfg")
        import open_clip

        open_clip.add_model_config(tmp / "cfg")
        print(f"{dt.date.today()}  CPU: {cpu_model()}  ({os.cpu_count()} logical CPUs, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads)")
        print(f"captions: greedy, every caption {args.max_length} tokens (random weights)")
        print("  (CPU s/image: the process's CPU time per image, all threads; on a busy "
              "machine wall-clock rates fall, CPU time much less)")
        rate, seconds, _, text, cpu = caption_rate("clipsql-tiny-coca", args.tiny_images, 8,
                                                   args.max_length, tmp)
        print(f"  tiny CoCa (3.4M params, 64 px)   {rate:8.2f} images/s  {cpu:7.3f} CPU s/image  "
              f"({args.tiny_images} images in {seconds:.1f} s, batch 8; e.g. {text[:30]!r})")
        if not args.skip_full:
            rate, seconds, built, _, cpu = caption_rate("coca_ViT-B-32", args.images,
                                                        args.images, args.max_length, tmp)
            print(f"  coca_ViT-B-32 (253M params)      {rate:8.2f} images/s  {cpu:7.3f} CPU "
                  f"s/image  ({args.images} images in {seconds:.1f} s, batch {args.images}; "
                  f"built in {built:.1f} s)")
        rate, cpu = embed_rate("ViT-B-32", args.embed_images, 32, tmp)
        print(f"embedding: ViT-B-32 image tower    {rate:8.2f} images/s  {cpu:7.3f} CPU s/image  "
              f"({args.embed_images} images, batch 32)")
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
