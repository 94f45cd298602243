"""Text queries: clipsql's text engine (ONNX Runtime) against open_clip's encode_text, one new
query at a time, and this export's text tower against the one it replaced (before/after).

    python benchmarks/text.py [--model ARCH/CHECKPOINT] [--repeats 5] [--check 300] [--pause 2]

Default model: ViT-B-32 with seeded random weights (``$CLIPSQL_BENCH_CHECKPOINT``: an existing
ViT-B-32 state_dict instead; speed does not depend on the weights). Its export is made first
if the cache has none (timed, once per checkpoint and machine). Then the text tower is also
exported as export format 2 made it ("before": plain attention ops, 862 nodes for ViT-B-32,
the output projections of the attentions in fp32) and as format 3 made it ("format 3":
fused attention, every block on every token; issue 31's starting point) into scratch
folders; "after" is this export (format 4: the last block past its attention on the
end-of-text token only). Per short query (2 to 9 words), tokenizer included, the median over
``QUERIES x --repeats``, ``--pause`` ms between two queries (queries come one at a time;
back to back, 0, the benchmark itself keeps a core busy, which decides where the public API
runs: see ``runtime.text_session``); the ONNX Runtime rows interleaved query by query, in an
order rotated from one query to the next, so a busy machine slows them alike:

- open_clip ``encode_text`` (77 padded tokens, torch fp32), with torch's default threads and
  with one, each in a block of its own (between ONNX Runtime calls torch's OpenMP threads
  fall asleep, and changing its thread count rebuilds its pool: interleaving would slow the
  baseline unfairly); the faster of the two is the baseline the ratios are taken to;
- the public API: ``OnnxTextEncoder.encode`` on format 2's and on format 3's tower (with
  format 3's setting: :data:`FORMAT3_THREADS` intra-op threads that do not spin), and
  ``ClipModel.encode_text`` of a fresh, prepared model on this export (int8 where the
  export's check kept cosine >= 0.999, else fp32; each query on the session
  ``runtime.text_session`` picks: two spinning threads when a core is idle at that moment,
  else one; how many took which is printed), the same export with format 3's threads (what
  the export alone gives), and ``fp32=True`` (fp32, what is stored);
- ONNX Runtime sessions alone on each int8 tower with 1 and 2 intra-op threads, on this
  export's with 2 spinning threads (``session.intra_op.spin_duration_us``: :data:`SPIN_US`),
  with its attentions' output projections in fp32 and through ONNX Runtime's transformer
  optimizer (what it fuses is printed), and this export's fp32 tower.

Each row's worst cosine to open_clip fp32 over ``--check`` generated queries of 3 to 12 words
is printed beside it; the load average at the start and the end. Last: whether a new process
answering a text query from the cache imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

import numpy as np
from common import load_average, print_machine, random_vitb32, scratch_dir, timed_prepare

QUERIES = [
    "a dog", "two dogs in snow", "a red bicycle leaning on a wall",
    "sunset over the sea near a lighthouse", "a scanned invoice with a company logo",
    "children building a sandcastle on a sunny beach", "the Eiffel tower at night in the rain",
    "a cat sleeping on a laptop keyboard next to coffee",
]
WORDS = ["dog", "cat", "red", "blue", "old", "young", "photo", "of", "a", "the", "with", "in",
         "on", "at", "near", "under", "two", "three", "snow", "beach", "city", "night",
         "street", "car", "bicycle", "mountain", "lake", "forest", "child", "woman", "man",
         "café", "naïve", "sunset", "rain", "portrait", "screenshot", "invoice", "1999", "#tag",
         "U.S.A.", "don't", "❤️", "emoji's", "雪", "Ünïcödé"]
#: intra-op threads a text query ran on with format 3 (runtime.TEXT_THREADS then)
FORMAT3_THREADS = 2
#: how long the spinning rows' idle threads spin before they sleep (microseconds; clipsql's
#: when a core is idle: runtime.TEXT_SPIN_US)
SPIN_US = (100,)
BASELINE = "open_clip encode_text (77 tokens, torch fp32)"
BASELINE_1 = "open_clip encode_text, torch 1 thread"
FORMAT3_PUBLIC = f"format 3: public API, its tower (onnx-int8, {FORMAT3_THREADS} threads)"

#: What a new process does to answer a text query from the cache: does it import torch?
NEW_PROCESS = r"""
import json, sys, time
t = time.perf_counter()
from clipsql.models.openclip import ClipModel
m = ClipModel(sys.argv[1])
m.encode_text(["a photo of a dog"])
print(json.dumps({"seconds": time.perf_counter() - t, "torch": "torch" in sys.modules,
                  "open_clip": "open_clip" in sys.modules, "text": m.engine.text_backend}))
"""


def random_queries(n, seed=0):
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def p50s(paths: dict, repeats: int, pause: float = 0.0) -> dict:
    """Median ms per query of each path, interleaved: each query through every path in turn,
    the order rotated from one query to the next, so that each path follows each other one
    as often (a path that reads 150 MB of fp32 weights evicts the caches of the next);
    ``pause`` seconds between two queries (none: the benchmark keeps a core busy itself)."""
    times = {name: [] for name in paths}
    for encode in paths.values():
        encode(["warm-up"])
    names = list(paths)
    turn = 0
    for _ in range(repeats):
        for q in QUERIES:
            turn += 1
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                t = time.perf_counter()
                paths[name]([q])
                times[name].append(1000 * (time.perf_counter() - t))
                if pause:
                    time.sleep(pause)
    return {name: statistics.median(ts) for name, ts in times.items()}


def worst_cosine(encode, reference, queries):
    got = np.concatenate([encode([q]) for q in queries])
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    return float((got * reference).sum(1).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="ARCH/CHECKPOINT (default: ViT-B-32, seeded random weights)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check", type=int, default=300, help="queries the cosines are taken over")
    ap.add_argument("--after-only", action="store_true",
                    help="this export's rows only: no format 2 or format 3 towers, no optimizer "
                         "(the tests' ViT-B-32 run; the tiny model's run covers the rest)")
    ap.add_argument("--pause", type=float, default=2.0,
                    help="ms between two queries, as queries come one at a time (0: back to back)")
    args = ap.parse_args()
    print_machine()
    tmp = scratch_dir("clipsql-text-")
    spec = args.model or random_vitb32(tmp)
    arch = spec.split("/")[0]

    from clipsql.models import export, runtime
    from clipsql.models.openclip import ClipModel
    from clipsql.models.text import OnnxTextEncoder

    seconds, steps = timed_prepare(ClipModel(spec, device="cpu"))
    print(f"export: made now in {seconds:.1f} s (once per checkpoint and machine)" if steps
          else f"export: found in the cache ({seconds:.2f} s to open it)", flush=True)

    fresh = ClipModel(spec, device="cpu")  # a new model object on the cached export
    t = time.perf_counter()
    fresh.prepare()
    fresh.encode_text(["warm-up"])
    opened = 1000 * (time.perf_counter() - t)

    import torch

    baseline_model = ClipModel(spec, device="cpu", precision="fp32")
    net, tok = baseline_model.torch_model, baseline_model.tokenizer

    def full(texts):
        with torch.inference_mode():
            return torch.nn.functional.normalize(net.encode_text(tok(texts)).float(), dim=-1).numpy()

    paths = {BASELINE: full}
    folder = fresh.export_folder
    tower = (export.read(folder) or {}).get("text") or {}
    if "int8" in tower and fresh.engine.text_backend == "onnx-int8":
        # the session a query takes when a core is idle, opened now (a process opens it in
        # the background at its first such query): the rows time the steady state
        runtime.session(folder / tower["int8"]["file"], runtime.TEXT_THREADS,
                        runtime.TEXT_SPIN_US)
    before_folder, format3_folder = tmp / "before", tmp / "format3"
    before, format3, towers = {}, {}, {"after": (folder, tower)}
    if not args.after_only:
        before_folder.mkdir()
        before = export._text(net, tok, before_folder, lambda what: None, {}, fused=False)
        format3_folder.mkdir()
        format3 = export._text(net, tok, format3_folder, lambda what: None, {}, last_token=False)
        towers = {"before": (before_folder, before), "format 3": (format3_folder, format3),
                  "after": (folder, tower)}
    if "int8" in tower and tower.get("graph") == "fused" and not args.after_only:
        optimised = transformer_optimised(folder, tower, tmp / "optimised", arch)
        if optimised:
            towers["after + ORT transformer optimizer"] = (tmp / "optimised", optimised)
        if tower["int8"].get("out_proj"):  # what each of the two changes gives
            from clipsql.models.quantize import quantize

            (tmp / "fp32-out-proj").mkdir()
            quantize(folder / tower["fp32"]["file"], tmp / "fp32-out-proj" / "text-int8.onnx")
            towers["after, output projections fp32"] = (
                tmp / "fp32-out-proj", {**tower, "int8": {**tower["int8"], "out_proj": False,
                                                           "file": "text-int8.onnx"}})
    for when, (_, t) in towers.items():
        if when.startswith("after +") or when.startswith("after,"):
            continue
        int8 = t.get("int8") or {}
        print(f"{when}: text tower {t.get('graph', 'plain')}, {t.get('input')} tokens; int8 "
              f"{int8.get('bytes', 0) / 1e6:.0f} MB, output projections "
              f"{'int8' if int8.get('out_proj') else 'fp32'}, worst cosine on the export's "
              f"reference texts {int8.get('min_cosine', float('nan')):.5f}", flush=True)
    if "int8" in before:
        old = OnnxTextEncoder(before_folder, before, arch, int8=True)
        paths["before: public API, format 2's tower (onnx-int8)"] = old.encode
    if "int8" in format3:
        old3 = OnnxTextEncoder(format3_folder, format3, arch, int8=True, threads=FORMAT3_THREADS)
        paths[FORMAT3_PUBLIC] = old3.encode
    public = f"after: public API, ClipModel.encode_text ({fresh.engine.text_backend})"
    paths[public] = fresh.encode_text
    if "int8" in tower and fresh.engine.text_backend == "onnx-int8":  # the export's share
        same_threads = OnnxTextEncoder(folder, tower, arch, int8=True, threads=FORMAT3_THREADS)
        paths[f"after: public API, format 3's threads (onnx-int8, {FORMAT3_THREADS} threads)"] = \
            same_threads.encode
    paths["after: encode_text(fp32=True) (fp32)"] = \
        lambda texts: fresh.encode_text(texts, fp32=True)
    if "fp32" not in tower:
        print(f"the text tower has no ONNX export: {tower.get('error', 'no export')}")
    threads = [n for n in (1, 2) if n <= runtime.cores()]
    tokens = OnnxTextEncoder(folder, tower, arch, int8=False) if "fp32" in tower else None
    for when, (where, t) in towers.items():
        if "int8" not in t or tokens is None:
            continue
        for n in threads:
            session = runtime.open_session(where / t["int8"]["file"], n)
            paths[f"{when}: ONNX Runtime int8, {n} thread{'s' if n > 1 else ''}"] = \
                lambda texts, s=session: s.run(None, {"input": tokens.tokenize(texts)})[0]
        if when == "after" and len(threads) > 1:
            for us in SPIN_US:
                session = runtime.open_session(where / t["int8"]["file"], 2, us)
                paths[f"after: ONNX Runtime int8, 2 threads spinning {us} us"] = \
                    lambda texts, s=session: s.run(None, {"input": tokens.tokenize(texts)})[0]
    if tokens is not None:
        session = runtime.open_session(folder / tower["fp32"]["file"], threads[-1])
        paths[f"after: ONNX Runtime fp32, {threads[-1]} threads"] = \
            lambda texts, s=session: s.run(None, {"input": tokens.tokenize(texts)})[0]

    # open_clip in blocks of its own (torch's default threads, then one thread): interleaved
    # with ONNX Runtime calls, torch's OpenMP threads fall asleep between its calls (and
    # switching its thread count rebuilds its pool), which would slow the baseline unfairly
    pause = args.pause / 1000
    ms = p50s({BASELINE: full}, args.repeats, pause)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ms[BASELINE_1] = p50s({BASELINE_1: full}, args.repeats, pause)[BASELINE_1]
    finally:
        torch.set_num_threads(saved)
    onnx = {name: f for name, f in paths.items() if name != BASELINE}
    picks = {"spinning": 0, "one": 0}
    runnable = runtime.runnable

    def counted():  # how many of the public API's queries found a core idle
        n = runnable()
        picks["spinning" if n is not None and n < runtime.cores() else "one"] += 1
        return n

    runtime.runnable = counted
    try:
        ms.update(p50s(onnx, args.repeats, pause))
    finally:
        runtime.runnable = runnable
    checks = random_queries(args.check)  # after the timings: a big torch batch slows later calls
    reference = full(checks)
    cos = {name: worst_cosine(f, reference, checks) for name, f in paths.items()}
    cos[BASELINE_1] = cos[BASELINE]
    order = [BASELINE, BASELINE_1, *onnx]
    base = min(ms[BASELINE], ms[BASELINE_1])  # the better of open_clip's two: the baseline
    print(f"{arch}: one new query of 2-9 words, tokenizer included; p50 over {len(QUERIES)} "
          f"queries x {args.repeats} (ONNX Runtime rows interleaved); worst cosine to open_clip fp32 over "
          f"{args.check} queries (the bar: {export.ACCURACY_BAR}); ratios to the faster "
          f"open_clip row; torch threads "
          f"{torch.get_num_threads()}, clipsql's text threads runtime.TEXT_THREADS = "
          f"{runtime.TEXT_THREADS}")
    for name in order:
        print(f"  {name:<64} p50 {ms[name]:6.2f} ms  {base / ms[name]:5.1f}x open_clip   "
              f"worst cosine {cos[name]:.5f}")
    old_public = "before: public API, format 2's tower (onnx-int8)"
    if old_public in ms:
        print(f"public API, after / before: {ms[old_public] / ms[public]:.2f}x faster per query "
              f"({ms[public]:.2f} ms vs {ms[old_public]:.2f} ms, same run, interleaved)")
    if FORMAT3_PUBLIC in ms:
        print(f"public API, after / format 3: {ms[FORMAT3_PUBLIC] / ms[public]:.2f}x faster per "
              f"query ({ms[public]:.2f} ms vs {ms[FORMAT3_PUBLIC]:.2f} ms, same run, "
              f"interleaved)")
    print(f"the public API's queries (after): {picks['spinning']} found a core idle (two "
          f"spinning threads), {picks['one']} did not (one thread)")
    print(f"public API / open_clip: {base / ms[public]:.1f}x faster per query "
          f"({ms[public]:.2f} ms vs {base:.2f} ms)")
    print(f"(a fresh model's prepare + first query on the cached export, sessions opened: "
          f"{opened:.0f} ms, once per process)")
    print(f"machine: {load_average()} at the end", flush=True)
    check_new_process(spec)


def transformer_optimised(folder, tower: dict, out, arch: str) -> dict | None:
    """This export's fp32 text tower through ONNX Runtime's transformer optimizer (BERT
    fusions: each residual Add and the LayerNorm after it into SkipLayerNormalization, bias
    Add and GELU into BiasGelu; its attention is fused already), quantised as the export
    quantised it: the tower's dict, or None where the optimizer is not there or fails."""
    import warnings

    import open_clip

    from clipsql.models import export
    from clipsql.models.quantize import quantize

    out.mkdir()
    fp32, int8 = out / export.FILES["text-fp32"], out / export.FILES["text-int8"]
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = open_clip.get_model_config(arch)["text_cfg"]
        width = int(cfg["width"])
        heads = int(cfg.get("heads") or width // int(cfg.get("head_width", 64)))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimize_model(str(folder / tower["fp32"]["file"]), model_type="bert",
                                   num_heads=heads, hidden_size=width, opt_level=0,
                                   use_gpu=False)
        fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(fp32))
        quantize(fp32, int8, out_proj=bool(tower["int8"].get("out_proj")))
    except Exception as exc:  # an optimizer that cannot read this graph
        print(f"ONNX Runtime's transformer optimizer: not measured ({exc})"[:300])
        return None
    print(f"ONNX Runtime's transformer optimizer (bert) on this export's text tower fused: "
          f"{fused}")
    return {**tower, "fp32": {"file": fp32.name}, "int8": {**tower["int8"], "file": int8.name}}


def check_new_process(spec: str) -> None:
    proc = subprocess.run([sys.executable, "-c", NEW_PROCESS, spec], capture_output=True,
                          text=True, env={**os.environ}, check=False)
    if proc.returncode != 0:
        sys.exit(f"the new-process text query failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"a new process answering a text query from the cache ({r['text']}): imports torch: "
          f"{'yes' if r['torch'] else 'no'}, open_clip: {'yes' if r['open_clip'] else 'no'}; "
          f"{r['seconds']:.2f} s from `import clipsql` to the embedding")


if __name__ == "__main__":
    main()
