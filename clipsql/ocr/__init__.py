"""OCR: the words in images, read by PP-OCR (or Tesseract), stored per image and searchable
in SQL (docs/ocr.md).

The whole feature lives here: :mod:`~clipsql.ocr.engine` reads one image with the engine for
its languages, PP-OCR's packaged models on ONNX Runtime (:mod:`~clipsql.ocr.ppocr`) or
Tesseract (tesserocr, with the language data installed on the system); :mod:`~clipsql.ocr.run` reads every
image that lacks a current OCR row, in resumable batches (``clipsql ocr``);
:mod:`~clipsql.ocr.search` ranks images by the words of a query (``clipsql.text_in_image``),
reads the OCR rows of hits and the word boxes a query matches. The words themselves are split
only in SQL (``clipsql.ocr_document``, ``clipsql.ocr_query``: migrations/0016_ocr.sql).
"""

from __future__ import annotations

from clipsql.ocr.engine import (
    DEFAULT_LANGUAGES,
    OcrEngine,
    OcrResult,
    PpOcrEngine,
    TesseractEngine,
)
from clipsql.ocr.run import TABLE, OcrReport, ocr
from clipsql.ocr.search import TextHit, matches, ocr_for, text_in_image

__all__ = ["DEFAULT_LANGUAGES", "TABLE", "OcrEngine", "OcrReport", "OcrResult", "PpOcrEngine",
           "TesseractEngine", "TextHit", "matches", "ocr", "ocr_for", "text_in_image"]
