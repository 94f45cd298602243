"""Text queries: every text path of clipsql against open_clip's encode_text, one new query at a time.

    python benchmarks/text.py [--model ViT-B-32] [--repeats 5] [--check 300]

Random weights (a seeded checkpoint saved in a scratch folder; speed does not depend on the
weights). Per short query (2 to 9 words), tokenizer included, the median over
``QUERIES x --repeats``:

- open_clip ``encode_text`` (77 padded tokens): the baseline;
- clipsql's torch path (real tokens only, prepacked oneDNN weights, one thread);
- the exported numpy tower (what a new process uses without torch);
- ONNX Runtime fp32 and int8 on the real tokens (the ``onnx`` extra);
- the public API: ``ClipModel.encode_text`` of a fresh model object, which takes whichever
  engine :mod:`clipsql.models.text_choice` measured fastest here among those that passed
  their accuracy check.

Each path's worst cosine to open_clip fp32 over ``--check`` generated queries of 3 to 12
words is printed beside it (the bar: 0.999).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import numpy as np
from common import print_machine, random_vitb32, scratch_dir

QUERIES = [
    "a dog", "two dogs in snow", "a red bicycle leaning on a wall",
    "sunset over the sea near a lighthouse", "a scanned invoice with a company logo",
    "children building a sandcastle on a sunny beach", "the Eiffel tower at night in the rain",
    "a cat sleeping on a laptop keyboard next to coffee",
]
WORDS = ["dog", "cat", "red", "blue", "old", "young", "photo", "of", "a", "the", "with", "in", "on", "at", "near", "under", "two", "three", "snow", "beach", "city", "night", "street", "car", "bicycle", "mountain", "lake", "forest", "child", "woman", "man", "café", "naïve", "sunset", "rain", "portrait", "screenshot", "invoice", "1999", "#tag", "U.S.A.", "don't", "❤️", "emoji's"]


def random_queries(n, seed=0):
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def p50_ms(encode, repeats):
    times = []
    for q in QUERIES:
        encode([q])  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            encode([q])
            times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def worst_cosine(encode, reference, queries):
    got = np.concatenate([encode([q]) for q in queries])
    return float(((got * reference).sum(1) / np.linalg.norm(got, axis=1)).min())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check", type=int, default=300)
    args = ap.parse_args()
    print_machine()
    import torch

    from clipsql.models import onnx_export, runner, text_numpy
    from clipsql.models.onnx_runtime import TextEncoder
    from clipsql.models.openclip import ClipModel

    tmp = scratch_dir("clipsql-text-")
    spec = random_vitb32(tmp) if args.model == "ViT-B-32" else args.model
    model = ClipModel(spec, device="cpu", precision="fp32")
    m, tok = model.torch_model, model.tokenizer

    def full(texts):
        with torch.inference_mode():
            return torch.nn.functional.normalize(m.encode_text(tok(texts)).float(), dim=-1).numpy()

    paths = {"open_clip encode_text (77 tokens)": full,
             "clipsql torch (trimmed, packed)": model.encode_text_torch}
    model.export_text_tower()
    tower = text_numpy.open_for(model)
    if tower is not None:
        tower.engine = None
        paths["exported numpy tower"] = tower.encode
    meta = runner.ensure_export(model)
    folder = onnx_export.cache_dir(model)
    for precision in ("fp32", "int8"):
        info = (meta or {}).get("files", {}).get(f"text-{precision}")
        if info and info.get("ok") and tower is not None:
            enc = TextEncoder(folder / onnx_export.FILES[f"text-{precision}"])
            paths[f"ONNX Runtime {precision} (real tokens)"] = \
                lambda texts, enc=enc: enc.encode_ids(tower.ids(texts)[0])
            if (cores := os.cpu_count() or 1) > 1:  # what one thread per query gives up
                enc_n = TextEncoder(folder / onnx_export.FILES[f"text-{precision}"], threads=cores)
                paths[f"ONNX Runtime {precision}, {cores} threads"] = \
                    lambda texts, enc=enc_n: enc.encode_ids(tower.ids(texts)[0])
        elif info:
            print(f"ONNX Runtime {precision}: export not kept ({info})")
    fresh = ClipModel(spec, device="cpu")
    t = time.perf_counter()
    fresh.encode_text(["warm-up"])
    opened = 1000 * (time.perf_counter() - t)
    engine = fresh.text_tower().engine if fresh.text_tower() is not None else None
    chosen = "numpy" if engine is None else engine.path.stem
    paths[f"public API: ClipModel.encode_text ({chosen})"] = fresh.encode_text

    checks = random_queries(args.check)
    reference = full(checks)
    rows = {name: (p50_ms(f, args.repeats), worst_cosine(f, reference, checks))
            for name, f in paths.items()}
    base = rows["open_clip encode_text (77 tokens)"][0]
    print(f"{args.model}: one new query of 2-9 words, p50 over {len(QUERIES)} queries x "
          f"{args.repeats}; worst cosine to open_clip fp32 over {args.check} queries; torch "
          f"threads {torch.get_num_threads()}")
    for name, (ms, cos) in rows.items():
        print(f"  {name:<46} p50 {ms:6.1f} ms  {base / ms:5.1f}x open_clip   worst cosine {cos:.5f}")
    print(f"  (the fresh model's first query, opening the export and choosing the engine: "
          f"{opened:.0f} ms, once per process)")


if __name__ == "__main__":
    main()
