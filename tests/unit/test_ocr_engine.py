"""Tesseract through clipsql's OCR engine (the optional engine: Russian, or asked for), on
images rendered here with Pillow and the system's DejaVu and Noto CJK fonts: English, Russian
and Japanese text is read, boxes lie in the image (after a downscale too), and missing
language data says what to install. PP-OCR, the default engine: tests/unit/test_ocr_ppocr.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipsql.errors import OcrLanguageDataError
from tests.conftest import missing_ocr

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def font_for(text: str) -> Path:
    cjk = any("\u3040" <= ch <= "\u9fff" for ch in text)
    path = NOTO_CJK if cjk else DEJAVU
    if not path.is_file():
        missing_ocr(f"the font {path} is not installed")
    return path


def render(text: str, size: int = 40, canvas=None, at=(40, 40), color=(255, 255, 255)):
    """A white (or ``color``) image with ``text`` in black, in DejaVu or Noto Sans CJK."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_for(text)), size)
    if canvas is None:
        lines = text.split("\n")
        width = int(max(font.getlength(line) for line in lines)) + 2 * at[0]
        canvas = (width, size * 2 * len(lines) + 2 * at[1])
    img = Image.new("RGB", canvas, color)
    ImageDraw.Draw(img).multiline_text(at, text, font=font, fill=(0, 0, 0), spacing=size)
    return img


@pytest.fixture(scope="module")
def engine():
    from clipsql.ocr import OcrEngine

    try:
        engine = OcrEngine(engine="tesseract")
    except OcrLanguageDataError as exc:
        missing_ocr(str(exc))
    yield engine
    engine.close()


def squeeze(text: str) -> str:
    return "".join(text.split()).lower().replace("ё", "е")


@pytest.mark.parametrize("text,size,found", [("INVOICE Total due 42.50", 40, None),
                                             ("Счёт на оплату", 40, None),
                                             # Tesseract's Japanese drops a character or two
                                             ("この請求書をご確認ください", 24, "この請求書をご")])
def test_rendered_text_is_read(engine, text, size, found):
    if any(lang not in engine.language_list for lang in ("eng", "jpn", "rus")):
        missing_ocr(f"not every language is installed: {engine.languages}")
    result = engine.recognise(render(text, size))
    assert squeeze(found or text) in squeeze(result.text), result.text
    assert result.words and 50 <= result.confidence <= 100
    assert all(set(w) == {"text", "conf", "box"} and 0 <= w["conf"] <= 100 for w in result.words)


def test_boxes_lie_in_the_image_and_on_the_word(engine):
    img = render("hello", 48, canvas=(900, 400), at=(500, 250))
    result = engine.recognise(img)
    [word] = [w for w in result.words if w["text"].lower() == "hello"]
    x, y, w, h = word["box"]
    assert 480 <= x <= 520 and 240 <= y <= 290 and 80 <= w <= 200 and 20 <= h <= 70


def test_a_large_image_is_downscaled_and_boxes_map_back(engine, monkeypatch):
    from clipsql.ocr import engine as module

    monkeypatch.setattr(module, "MAX_PIXELS", 600 * 400)
    img = render("STOP", 160, canvas=(2400, 1600), at=(1200, 900))
    prepared, factor = engine.prepare(img)
    assert prepared.size[0] * prepared.size[1] <= 600 * 400 * 1.01 and factor < 0.3
    result = engine.recognise(img)
    [word] = [w for w in result.words if w["text"].upper() == "STOP"]
    x, y, w, h = word["box"]
    assert 1150 <= x <= 1260 and 880 <= y <= 1010 and x + w <= 2400 and y + h <= 1600
    for other in result.words:
        ox, oy, ow, oh = other["box"]
        assert ox >= 0 and oy >= 0 and ox + ow <= 2400 and oy + oh <= 1600


def test_a_blank_image_reads_nothing(engine):
    from PIL import Image

    result = engine.recognise(Image.new("RGB", (320, 200), (255, 255, 255)))
    assert (result.text, result.confidence, result.words) == ("", None, [])


def test_threads_share_one_engine(engine):
    from concurrent.futures import ThreadPoolExecutor

    images = [render(word, 40) for word in ("alpha", "bravo", "delta", "kilo")] * 2
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda img: engine.recognise(img).text.lower(), images))
    assert texts == [t.lower() for t in texts[:4]] * 2
    assert [t.strip() for t in texts[:4]] == ["alpha", "bravo", "delta", "kilo"]


def test_identity_is_recorded(engine):
    import tesserocr

    assert engine.engine == f"tesseract {tesserocr.PyTessBaseAPI.Version().split()[0]}"
    assert engine.languages.split("+")[0] == "eng" and engine.identity[1] == engine.languages


def test_missing_language_data_says_how_to_install_it(tmp_path, monkeypatch):
    from clipsql.ocr import OcrEngine
    from clipsql.ocr import engine as module

    empty = tmp_path / "tessdata"
    empty.mkdir()
    with pytest.raises(OcrLanguageDataError) as caught:
        OcrEngine(engine="tesseract", tessdata=empty)
    message = str(caught.value)
    assert "apt-get install tesseract-ocr-eng tesseract-ocr-jpn tesseract-ocr-rus" in message
    assert "brew install tesseract tesseract-lang" in message and "TESSDATA_PREFIX" in message
    # nowhere to be found at all
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path / "nothing"))
    monkeypatch.setattr(module, "TESSDATA_DIRS", (str(tmp_path / "neither"),))
    with pytest.raises(OcrLanguageDataError, match="apt-get install tesseract-ocr-eng"):
        OcrEngine(engine="tesseract")
    # a language asked for that is not installed
    installed = module.find_tessdata(None)
    assert installed == tmp_path / "nothing"
    with pytest.raises(OcrLanguageDataError, match=r"no Tesseract language data for xyz.*apt-get"):
        OcrEngine("xyz", tessdata="/usr/share/tesseract-ocr/5/tessdata")
    with pytest.raises(OcrLanguageDataError, match="bad OCR language list"):
        OcrEngine("eng++rus")


def test_tessdata_prefix_is_honoured(tmp_path, monkeypatch):
    from clipsql.ocr import engine as module

    real = module.find_tessdata(None)
    if real is None or not (real / "eng.traineddata").is_file():
        missing_ocr("no English language data installed")
    mine = tmp_path / "share" / "tessdata"
    mine.mkdir(parents=True)
    (mine / "eng.traineddata").symlink_to(real / "eng.traineddata")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path / "share"))  # its tessdata child
    assert module.find_tessdata(None) == mine
    from clipsql.ocr import OcrEngine

    with OcrEngine(engine="tesseract") as only_english:
        assert only_english.languages == "eng"
        assert "stop" in only_english.recognise(render("STOP here", 40)).text.lower()


@pytest.mark.parametrize("angle", [15, -12])
def test_skewed_text_is_straightened_and_boxes_map_back(engine, angle):
    import math

    from PIL import Image, ImageDraw, ImageFont

    from clipsql.ocr.engine import skew_angle

    img = Image.new("RGB", (800, 500), (255, 255, 255))
    font = ImageFont.truetype(str(font_for("x")), 44)
    draw = ImageDraw.Draw(img)
    draw.text((400, 250), "WELCOME HOME", font=font, fill=(0, 0, 0), anchor="mm")
    left, top, _, bottom = draw.textbbox((400, 250), "WELCOME HOME", font=font, anchor="mm")
    right = left + font.getlength("WELCOME")
    img = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    assert skew_angle(img.convert("L")) == pytest.approx(-angle, abs=1)
    result = engine.recognise(img)
    assert "welcome" in result.text.lower(), result.text
    [word] = [w for w in result.words if w["text"].upper() == "WELCOME"]
    # where PIL's rotation (counter-clockwise about the centre) put the word's corners
    a = math.radians(angle)
    corners = [(x - 400, y - 250) for x in (left, right) for y in (top, bottom)]
    xs = [400 + ox * math.cos(a) + oy * math.sin(a) for ox, oy in corners]
    ys = [250 - ox * math.sin(a) + oy * math.cos(a) for ox, oy in corners]
    x, y, w, h = word["box"]
    assert x == pytest.approx(min(xs), abs=25) and x + w == pytest.approx(max(xs), abs=25)
    assert y == pytest.approx(min(ys), abs=25) and y + h == pytest.approx(max(ys), abs=25)
