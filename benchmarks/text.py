"""Text encoding: clipsql's trimmed text tower vs open_clip's encode_text, one query at a time.

    python benchmarks/text.py [--model ViT-B-32] [--repeats 5]

Random weights unless a pretrained spec is given (speed does not depend on the weights).
Prints per-query latency of both paths, the speedup and the largest difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

QUERIES = [
    "a dog", "two dogs in snow", "a red bicycle leaning on a wall",
    "sunset over the sea near a lighthouse", "a scanned invoice with a company logo",
    "children building a sandcastle on a sunny beach", "the Eiffel tower at night in the rain",
    "a cat sleeping on a laptop keyboard next to coffee",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    from clipsql.model import ClipModel

    torch.manual_seed(0)
    model = ClipModel(args.model)
    m, tok = model.torch_model, model.tokenizer
    full_ms, fast_ms, diff = [], [], 0.0
    for q in QUERIES:
        model.encode_text([q])
        with torch.inference_mode():
            m.encode_text(tok([q]))
        for _ in range(args.repeats):
            t = time.perf_counter()
            with torch.inference_mode():
                ref = torch.nn.functional.normalize(m.encode_text(tok([q])).float(), dim=-1).numpy()
            full_ms.append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            out = model.encode_text([q])
            fast_ms.append(1000 * (time.perf_counter() - t))
            diff = max(diff, float(np.abs(out - ref).max()))
    full, fast = statistics.median(full_ms), statistics.median(fast_ms)
    print(f"{args.model}, {len(QUERIES)} queries of 2-9 words x {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"open_clip encode_text: p50 {full:6.1f} ms")
    print(f"clipsql trimmed:       p50 {fast:6.1f} ms   speedup {full / fast:.1f}x   "
          f"max |diff| {diff:.1e}   path {model.last_text_path}")


if __name__ == "__main__":
    main()
