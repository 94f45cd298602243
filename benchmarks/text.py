"""Text encoding: clipsql's text path vs open_clip's encode_text, one query at a time.

    python benchmarks/text.py [--model ViT-B-32] [--repeats 5] [--check 500]

Random weights unless a pretrained spec is given (speed does not depend on the weights).
Three paths per query, each with the tokenizer included: open_clip's ``encode_text`` (77
padded tokens), the trimmed tower through open_clip's own transformer (real tokens only),
and clipsql's default (trimmed, blocks on prepacked oneDNN weights, one thread for a short
query). Then the largest difference of clipsql's normalised embeddings from open_clip's over
``--check`` generated queries of 3 to 12 words. Last, the exported numpy text tower that a
new process uses before (instead of) loading the model (``clipsql/models/text_numpy.py``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
from common import scratch_dir

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


def timed(f, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        out.append(1000 * (time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check", type=int, default=500)
    args = ap.parse_args()
    import torch

    from clipsql.models.openclip import ClipModel
    from clipsql.models.text_torch import encode_trimmed

    torch.manual_seed(0)
    model = ClipModel(args.model)
    m, tok = model.torch_model, model.tokenizer

    def full(q):
        with torch.inference_mode():
            return torch.nn.functional.normalize(m.encode_text(tok([q])).float(), dim=-1).numpy()

    def trimmed(q):
        with torch.inference_mode():
            return encode_trimmed(m, tok([q]), packed=False)

    full_ms, trim_ms, fast_ms = [], [], []
    for q in QUERIES:
        full(q), trimmed(q), model.encode_text([q])  # warm up (packs the weights once)
        full_ms += timed(lambda q=q: full(q), args.repeats)
        trim_ms += timed(lambda q=q: trimmed(q), args.repeats)
        fast_ms += timed(lambda q=q: model.encode_text([q]), args.repeats)
    path = model.last_text_path
    diff = 0.0
    for q in random_queries(args.check):
        diff = max(diff, float(np.abs(model.encode_text([q]) - full(q)).max()))
    full_p50, trim, fast = (statistics.median(x) for x in (full_ms, trim_ms, fast_ms))
    print(f"{args.model}, {len(QUERIES)} queries of 2-9 words x {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"open_clip encode_text:        p50 {full_p50:6.1f} ms")
    print(f"trimmed, open_clip blocks:    p50 {trim:6.1f} ms   speedup {full_p50 / trim:.1f}x")
    print(f"clipsql (trimmed + packed):   p50 {fast:6.1f} ms   speedup {full_p50 / fast:.1f}x   "
          f"path {path}")
    print(f"max |diff| of normalised embeddings over {args.check} queries of 3-12 words: {diff:.1e}")

    from clipsql.models import text_numpy as texttower

    folder = scratch_dir("clipsql-text-") / "tower"
    if not texttower.export(m, tok, lambda texts: model.encode_text(texts), folder):
        print("exported numpy tower: this model's text tower cannot be exported")
        return
    t = time.perf_counter()
    tower = texttower.TextTower.open(folder)  # maps the weights, loads the BPE merges, checks
    opened = 1000 * (time.perf_counter() - t)
    tower_ms = []
    for q in QUERIES:
        tower.encode([q])
        tower_ms += timed(lambda q=q: tower.encode([q]), args.repeats)
    tdiff = max(float(np.abs(tower.encode([q]) - full(q)).max()) for q in random_queries(args.check))
    print(f"exported numpy tower:         p50 {statistics.median(tower_ms):6.1f} ms   speedup "
          f"{full_p50 / statistics.median(tower_ms):.1f}x   (opening it: {opened:.0f} ms, once per "
          f"process); max |diff| {tdiff:.1e}")


if __name__ == "__main__":
    main()
