"""The OCR engines: the words in one image, with their boxes and confidences.

:class:`OcrEngine` picks the engine for the languages asked for: PP-OCR (PaddleOCR's trained
models on ONNX Runtime, :mod:`clipsql.ocr.ppocr`; nothing to install) for English and
Japanese, the default; Tesseract (:class:`TesseractEngine`) for any other language, e.g.
Russian (the PP-OCR models have no Cyrillic), or when asked for (``engine="tesseract"``).
Both bound an image the same way: downscaled to at most :data:`MAX_PIXELS`, their working
memory charged to the decode budget (:meth:`OcrEngine.work_bytes`), each reading stopped at
the decode deadline (``too_slow``). Threads of the OCR run (named ``clipsql-ocr...``) read
at a lower CPU priority (:data:`NICE`), so a load running beside it is not starved.

Tesseract, through tesserocr:

The library is inside tesserocr's wheel; the language data (``eng.traineddata``...) is a
system package, found in ``$TESSDATA_PREFIX`` or the usual places of Debian/Ubuntu, Fedora,
Homebrew and MacPorts (:data:`TESSDATA_DIRS`). Nothing is downloaded: missing data is an
:class:`~clipsql.errors.OcrLanguageDataError` whose message says what to install.

One ``PyTessBaseAPI`` per thread (an API is not thread-safe; tesserocr releases the GIL while
Tesseract runs, so threads recognise in parallel). An image is downscaled to at most
:data:`MAX_PIXELS` (its memory bound) and read as grayscale; word boxes come back in the
given image's pixels. Tesseract segments the page as sparse text (``PSM.SPARSE_TEXT``: on
rendered words and signs it found more than the default page layout). A skewed image is also
read straightened (:func:`skew_angle`), and one where nothing sure was read once more with
another threshold (:data:`THRESHOLDING_METHODS`): :meth:`OcrEngine.recognise_prepared`.

>>> OcrResult("", None, []).to_row()
('', None, [])
>>> scale_for(8000, 6000) < 1 == scale_for(300, 200)
True
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from clipsql import config
from clipsql.errors import ImageError, OcrLanguageDataError
from clipsql.ingest.reasons import Reason

#: Languages read by default, by PP-OCR (benchmarks/ocr_quality.py, docs/ocr.md).
DEFAULT_LANGUAGES = ("eng", "jpn")
#: Languages Tesseract reads when it is asked for without languages: every one of these
#: that is installed (English at least).
TESSERACT_LANGUAGES = ("eng", "jpn", "rus")
#: The engines by name; "auto" is PP-OCR where it reads every language asked for, else
#: Tesseract.
ENGINES = ("auto", "ppocr", "tesseract")
#: How much lower (nice) the OCR run's threads run than the process, on Linux.
NICE = 10
#: Where the language data is looked for after ``$TESSDATA_PREFIX``, in order.
TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",      # Debian, Ubuntu (tesseract-ocr-eng ...)
    "/usr/share/tesseract-ocr/4.00/tessdata",   # older Debian, Ubuntu
    "/usr/share/tesseract/tessdata",            # Fedora, RHEL
    "/usr/share/tessdata",                      # Fedora, Arch, Alpine
    "/opt/homebrew/share/tessdata",             # Homebrew on Apple silicon
    "/usr/local/share/tessdata",                # Homebrew on Intel, source builds
    "/opt/local/share/tessdata",                # MacPorts
)
ENV_TESSDATA = "TESSDATA_PREFIX"
#: Tesseract's binarisations, tried in turn: its global Otsu, then (when no reading found a
#: word with :data:`SURE` confidence) Sauvola's local threshold, which reads words on noisy and
#: gradient backgrounds where Otsu read none, but fewer on clean pages and photos
#: (benchmarks/ocr_quality.py, docs/ocr.md).
THRESHOLDING_METHODS = ("0", "2")
#: A word read with at least this confidence (0-100) counts as sure. Readings are compared
#: by the characters of their sure words: noise reads as short "words", some at 60-70.
SURE = 80
#: Skews looked for, in degrees either way, and the least one worth straightening.
MAX_SKEW = 20
MIN_SKEW = 2
#: Largest image Tesseract is given, in pixels (a larger one is downscaled first).
MAX_PIXELS = 16_000_000
#: Bytes Tesseract holds while it reads an image, per pixel it is given (its grey, binary and
#: threshold copies, its layout): taken from the decode budget (clipsql.ingest.decode.BUDGET)
#: for each image read, so OCR threads are bounded by it as decoders are.
WORK_BYTES_PER_PIXEL = 12
#: How to install the data, quoted by the error.
INSTALL = ("install Tesseract's language data: on Debian/Ubuntu `apt-get install "
           "tesseract-ocr-eng tesseract-ocr-jpn tesseract-ocr-rus`, on Fedora `dnf install "
           "tesseract-langpack-eng tesseract-langpack-jpn tesseract-langpack-rus`, on macOS "
           "`brew install tesseract tesseract-lang`; or set TESSDATA_PREFIX to a folder of "
           "*.traineddata files")


@dataclass
class OcrResult:
    """What Tesseract read in one image: the text (its lines), the mean word confidence
    (0 to 100; None when no word was read) and the words, each ``{"text", "conf", "box":
    [x, y, w, h]}`` in the image's pixels, in reading order."""

    text: str
    confidence: float | None
    words: list = field(default_factory=list)

    def to_row(self) -> tuple:
        return self.text, self.confidence, self.words


def _has_data(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(folder.glob("*.traineddata"))
    except OSError:
        return False


def find_tessdata(explicit: str | os.PathLike | None = None) -> Path | None:
    """The folder of ``*.traineddata`` files: ``explicit``, else ``$TESSDATA_PREFIX`` (the
    folder itself or its ``tessdata`` child), else the first of :data:`TESSDATA_DIRS` that
    holds any; None when there is none."""
    if explicit is not None:
        return Path(explicit)
    prefix = os.environ.get(ENV_TESSDATA)
    candidates = [Path(prefix), Path(prefix) / "tessdata"] if prefix else []
    for folder in [*candidates, *map(Path, TESSDATA_DIRS)]:
        if _has_data(folder):
            return folder
    return Path(prefix) if prefix else None


def installed_languages(folder: Path | None) -> list[str]:
    """The languages whose data ``folder`` holds (``osd``, orientation only, left out)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name[:-len(".traineddata")] for p in folder.glob("*.traineddata")
                  if p.name != "osd.traineddata")


def parse_languages(languages) -> list[str]:
    """``"eng+jpn"`` or ``["eng", "jpn"]`` -> ``["eng", "jpn"]`` (duplicates dropped)."""
    if isinstance(languages, str):
        parts = languages.split("+")
    else:
        parts = list(languages)
    out = []
    for part in parts:
        if not isinstance(part, str) or not part.strip():
            raise OcrLanguageDataError(f"bad OCR language list {languages!r}: give Tesseract "
                                       "language codes joined by '+', e.g. eng+jpn+rus")
        if part.strip() not in out:
            out.append(part.strip())
    return out


def scale_for(width: int, height: int) -> float:
    """The factor an image of ``width`` x ``height`` is resized by before Tesseract reads it."""
    if width * height > MAX_PIXELS:
        return math.sqrt(MAX_PIXELS / (width * height))
    return 1.0  # never up: upscaling 2x read fewer rendered words, in twice the time


def engine_for(languages=None, engine: str | None = None) -> type:
    """The engine class that reads ``languages`` (None: :data:`DEFAULT_LANGUAGES`) when
    ``engine`` (one of :data:`ENGINES`; None: ``"auto"``) is asked for."""
    from clipsql.ocr import ppocr

    if engine not in (None, *ENGINES):
        raise OcrLanguageDataError(f"unknown OCR engine {engine!r}: one of {', '.join(ENGINES)}")
    if engine == "tesseract":
        return TesseractEngine
    if engine == "ppocr" or languages is None:
        return PpOcrEngine
    wanted = parse_languages(languages)
    return PpOcrEngine if all(lang in ppocr.LANGUAGES for lang in wanted) else TesseractEngine


class OcrEngine:
    """An OCR engine for the given languages (``"eng+jpn"``; default
    :data:`DEFAULT_LANGUAGES`), safe to call from many threads: ``OcrEngine(languages,
    engine="auto")`` is a :class:`PpOcrEngine` where PP-OCR reads every language asked for,
    else a :class:`TesseractEngine` (:func:`engine_for`).

    ``engine`` and ``languages`` (the attributes) identify what wrote an OCR row: a run with
    another engine, models, version or other languages reads the images again.
    """

    engine: str
    languages: str
    language_list: list
    deadline_s: float

    def __new__(cls, languages=None, *, engine: str | None = None, **kwargs):
        if cls is OcrEngine:
            cls = engine_for(languages, engine)
        return super().__new__(cls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine!r}, languages={self.languages!r})"

    @property
    def identity(self) -> tuple[str, str]:
        """``(engine, languages)`` as recorded in ``clipsql.ocr``."""
        return self.engine, self.languages

    def work_bytes(self, size: tuple[int, int]) -> int:
        """Bytes the engine holds while it reads an image :meth:`prepare` made of ``size``:
        charged to the decode budget by the OCR run."""
        return WORK_BYTES_PER_PIXEL * size[0] * size[1]

    def recognise(self, image) -> OcrResult:
        """The words of a PIL image (any mode and size; EXIF orientation already applied)."""
        prepared, factor = self.prepare(image)
        return self.recognise_prepared(prepared, factor, image.size)

    def prepare(self, image):  # pragma: no cover - each engine has its own
        raise NotImplementedError

    def recognise_prepared(self, prepared, factor: float, size: tuple[int, int]) -> OcrResult:
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        """Release what the engine holds (it is unusable afterwards)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_niced = threading.local()


def lower_priority() -> None:
    """Lower the calling thread's CPU priority by :data:`NICE` once, if it is one of the OCR
    run's threads (named ``clipsql-ocr...``), on Linux: a load beside it keeps its speed."""
    if getattr(_niced, "done", False):
        return
    _niced.done = True
    if not threading.current_thread().name.startswith("clipsql-ocr"):
        return
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE))
    except OSError:
        pass


def _flatten(image):
    """An ``L`` or ``RGB`` copy of a PIL image; transparent parts read as white paper."""
    from PIL import Image

    if image.mode not in ("L", "RGB"):
        image = image.convert("RGBA") if "A" in image.getbands() else image.convert("RGB")
        if image.mode == "RGBA":
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image).convert("RGB")
    return image


class PpOcrEngine(OcrEngine):
    """PP-OCR (:mod:`clipsql.ocr.ppocr`): PaddleOCR's detection and recognition models from
    a package, on ONNX Runtime, for English and Japanese (``languages``: those of
    :data:`clipsql.ocr.ppocr.LANGUAGES`; the one model reads both at once). ``models``: a
    name of :data:`clipsql.ocr.ppocr.MODEL_SETS`. Its sessions are shared by every engine
    of the process and every thread."""

    _readers: dict = {}
    _readers_lock = threading.Lock()

    def __init__(self, languages=None, *, engine: str | None = None, models: str | None = None):
        from clipsql.ocr import ppocr

        wanted = list(DEFAULT_LANGUAGES) if languages is None else parse_languages(languages)
        other = [lang for lang in wanted if lang not in ppocr.LANGUAGES]
        if other:
            raise OcrLanguageDataError(
                f"PP-OCR reads {'+'.join(ppocr.LANGUAGES)}, not {'+'.join(other)}: ask for "
                f"Tesseract (the languages alone, or engine='tesseract'); {INSTALL}")
        name = models or ppocr.DEFAULT_MODELS
        with PpOcrEngine._readers_lock:
            reader = PpOcrEngine._readers.get(name)
            if reader is None:
                reader = PpOcrEngine._readers[name] = ppocr.Reader(name)
        self.reader = reader
        self.models = name
        self.language_list = wanted
        self.languages = "+".join(wanted)
        #: e.g. ``PP-OCRv6 small da2d61aa.1``: the models' content and the pipeline's version
        self.engine = f"{name} {reader.digest[:8]}.{ppocr.PIPELINE}"
        self.version = reader.package_version
        self.deadline_s = config.decode_deadline()

    def prepare(self, image):
        """``(RGB image PP-OCR reads, factor it was resized by)``: a PIL image of any mode,
        within :data:`MAX_PIXELS`."""
        from PIL import Image

        factor = scale_for(*image.size)
        image = _flatten(image)
        if factor != 1.0:
            size = (max(1, round(image.size[0] * factor)), max(1, round(image.size[1] * factor)))
            image = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        return image.convert("RGB"), factor

    def work_bytes(self, size: tuple[int, int]) -> int:
        from clipsql.ocr import ppocr

        pixels = size[0] * size[1]
        det = min(ppocr.DET_MAX_PIXELS * 1.1, pixels * ppocr.DET_MAX_UPSCALE ** 2)
        return int(ppocr.IMAGE_BYTES_PER_PIXEL * pixels + ppocr.DET_BYTES_PER_PIXEL * det)

    def recognise_prepared(self, prepared, factor: float, size: tuple[int, int]) -> OcrResult:
        """:meth:`recognise` of an image :meth:`prepare` made (``size``: the original's)."""
        from clipsql.ocr import ppocr

        lower_priority()
        text, words = ppocr.read(self.reader, prepared, factor, size, self.deadline_s)
        confidence = (round(sum(w["conf"] for w in words) / len(words), 2) if words else None)
        return OcrResult(text, confidence, words)


class TesseractEngine(OcrEngine):
    """Tesseract with the given languages (``"eng+rus"``; default: each of
    :data:`TESSERACT_LANGUAGES` that is installed), safe to call from many threads."""

    def __init__(self, languages=None, *, engine: str | None = None,
                 tessdata: str | os.PathLike | None = None, psm: int | None = None):
        import tesserocr

        self._tesserocr = tesserocr
        self.tessdata = find_tessdata(tessdata)
        installed = installed_languages(self.tessdata)
        where = (f"in {self.tessdata}" if self.tessdata is not None else
                 f"(looked in ${ENV_TESSDATA} and {', '.join(TESSDATA_DIRS)})")
        if languages is None:
            wanted = [lang for lang in TESSERACT_LANGUAGES if lang in installed]
            if "eng" not in wanted:
                raise OcrLanguageDataError(f"no Tesseract language data for English {where}; "
                                           f"{INSTALL}")
        else:
            wanted = parse_languages(languages)
            missing = [lang for lang in wanted if lang not in installed]
            if missing:
                raise OcrLanguageDataError(
                    f"no Tesseract language data for {'+'.join(missing)} {where} (installed: "
                    f"{', '.join(installed) or 'none'}); {INSTALL}")
        self.language_list = wanted
        self.languages = "+".join(wanted)
        self.psm = tesserocr.PSM.SPARSE_TEXT if psm is None else psm
        self.version = tesserocr.PyTessBaseAPI.Version().split()[0]
        self.engine = f"tesseract {self.version}"
        #: Seconds each reading may take (Tesseract's own timeout): the decode deadline.
        self.deadline_s = config.decode_deadline()
        self._local = threading.local()
        self._apis: list = []
        self._lock = threading.Lock()
        self._api()  # fails here, not in a worker thread, when the data does not load

    def _api(self):
        api = getattr(self._local, "api", None)
        if api is None:
            path = str(self.tessdata).rstrip("/") + "/"
            try:
                api = self._tesserocr.PyTessBaseAPI(path=path, lang=self.languages, psm=self.psm)
            except RuntimeError as exc:
                raise OcrLanguageDataError(f"Tesseract could not load {self.languages} from "
                                           f"{self.tessdata} ({exc}); {INSTALL}") from None
            self._local.api = api
            with self._lock:
                self._apis.append(api)
        return api

    def prepare(self, image):
        """``(grayscale image Tesseract reads, factor it was resized by)``: a PIL image
        of any mode, within :data:`MAX_PIXELS`."""
        from PIL import Image

        factor = scale_for(*image.size)
        image = _flatten(image)
        if factor != 1.0:
            size = (max(1, round(image.size[0] * factor)), max(1, round(image.size[1] * factor)))
            image = image.convert("L").resize(size, Image.Resampling.LANCZOS)
        return image.convert("L"), factor

    def recognise_prepared(self, prepared, factor: float, size: tuple[int, int]) -> OcrResult:
        """:meth:`recognise` of an image :meth:`prepare` made (``size``: the original's).

        Reads it with Otsu's threshold, and also straightened when its text is skewed by
        :data:`MIN_SKEW` degrees or more (:func:`skew_angle`); when neither reading found a
        sure word (:data:`SURE`), once more with Sauvola's threshold. The reading with the
        most characters in sure words is kept (the first of equals)."""
        lower_priority()
        angle = skew_angle(prepared)
        straight = (_rotated(prepared, angle), _Back(factor, size, angle, prepared.size)) \
            if abs(angle) >= MIN_SKEW else None
        plain = (prepared, _Back(factor, size))
        readings = [(plain, THRESHOLDING_METHODS[0])]
        if straight is not None:
            readings.append((straight, THRESHOLDING_METHODS[0]))
        readings.append((straight or plain, THRESHOLDING_METHODS[1]))
        best, best_sure = None, -1
        for n, ((image, back), method) in enumerate(readings):
            if n == len(readings) - 1 and best_sure > 0:
                break  # the last resort only when nothing sure was read
            result = self._read(image, back, method)
            sure = sum(len(w["text"]) for w in result.words if w["conf"] >= SURE)
            if sure > best_sure:
                best, best_sure = result, sure
        return best

    def _read(self, image, back, method: str) -> OcrResult:
        tesserocr = self._tesserocr
        api = self._api()
        try:
            api.SetVariable("thresholding_method", method)
            api.SetImage(image)
            if not api.Recognize(timeout=max(1, int(self.deadline_s * 1000))):
                raise ImageError(Reason.TOO_SLOW, f"Tesseract took more than its "
                                 f"{self.deadline_s:g} s deadline (CLIPSQL_DECODE_DEADLINE)")
            text = (api.GetUTF8Text() or "").strip()
            words = []
            iterator = api.GetIterator()
            if iterator is not None:
                level = tesserocr.RIL.WORD
                for word in tesserocr.iterate_level(iterator, level):
                    try:
                        found = (word.GetUTF8Text(level) or "").strip()
                    except RuntimeError:  # "No text returned": an empty block
                        continue
                    box = word.BoundingBox(level)
                    if not found or box is None:
                        continue
                    words.append({"text": found,
                                  "conf": round(max(0.0, float(word.Confidence(level))), 1),
                                  "box": back(box)})
        finally:
            api.Clear()
        confidence = (round(sum(w["conf"] for w in words) / len(words), 2) if words else None)
        return OcrResult(text, confidence, words)

    def close(self) -> None:
        """End every thread's Tesseract (the engine is unusable afterwards)."""
        with self._lock:
            apis, self._apis = self._apis, []
        for api in apis:
            api.End()
        self._local = threading.local()


def skew_angle(image, limit: int = MAX_SKEW) -> float:
    """The rotation (degrees, counter-clockwise, within +-``limit``) that makes the lines of
    text in a grayscale image horizontal: the angle whose rotated ink has the sharpest
    row profile (the largest sum of squared differences between neighbouring rows), on a
    copy at most 600 px wide, ink being the darker (or, on dark boards, the lighter) side of
    Otsu's threshold. 0 for an image without ink.

    >>> from PIL import Image, ImageDraw
    >>> page = Image.new("L", (400, 300), 255)
    >>> for y in range(60, 240, 30):
    ...     ImageDraw.Draw(page).rectangle([40, y, 360, y + 8], fill=0)
    >>> skew_angle(page), round(abs(skew_angle(page.rotate(12, fillcolor=255))))
    (0.0, 12)
    """
    import numpy as np
    from PIL import Image

    small = image.copy()
    small.thumbnail((600, 600))
    pixels = np.asarray(small, dtype=np.uint8)
    histogram = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    threshold = _otsu(histogram)
    ink = pixels <= threshold
    if ink.mean() > 0.5:
        ink = ~ink
    if not ink.any():
        return 0.0
    binary = Image.fromarray(ink.astype(np.uint8) * 255)
    best, best_score = 0.0, -1.0
    for angle in range(-limit, limit + 1):
        rows = np.asarray(binary.rotate(angle, expand=True), dtype=np.float64).sum(axis=1)
        score = float(np.square(np.diff(rows)).sum())
        if score > best_score * 1.0001:  # ties keep the smaller rotation
            best, best_score = float(angle), score
    return best


def _otsu(histogram) -> int:
    import numpy as np

    total = histogram.sum()
    levels = np.arange(256)
    weight0 = np.cumsum(histogram)
    weight1 = total - weight0
    mean0 = np.cumsum(histogram * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean0[-1] * weight0 - total * mean0) ** 2 / (weight0 * weight1)
    return int(np.nanargmax(np.where(np.isfinite(between), between, -1)))


def _rotated(image, angle: float):
    from PIL import Image

    background = int(max(range(256), key=image.histogram().__getitem__))
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True,
                        fillcolor=background)


class _Back:
    """Maps Tesseract's ``(x1, y1, x2, y2)`` on the image it read to ``[x, y, w, h]`` on
    the original (inside it): undoing a rotation by ``angle`` degrees (``expand=True``, of an
    image of ``rotated_from`` size), then the resize by ``factor``."""

    def __init__(self, factor: float, size: tuple[int, int], angle: float = 0.0,
                 rotated_from: tuple[int, int] | None = None):
        self.factor, self.size, self.angle, self.source = factor, size, angle, rotated_from

    def __call__(self, box) -> list[int]:
        x1, y1, x2, y2 = box
        if self.angle:
            a = math.radians(self.angle)
            cos, sin = math.cos(a), math.sin(a)
            w, h = self.source
            # the expanded canvas of PIL's rotate: its centre is the source's centre
            rw = abs(w * cos) + abs(h * sin)
            rh = abs(w * sin) + abs(h * cos)
            points = []
            for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2)):
                dx, dy = x - rw / 2, y - rh / 2
                points.append((dx * cos - dy * sin + w / 2, dx * sin + dy * cos + h / 2))
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        width, height = self.size
        x1, x2 = (min(max(0, round(v / self.factor)), width) for v in (x1, x2))
        y1, y2 = (min(max(0, round(v / self.factor)), height) for v in (y1, y2))
        return [x1, y1, max(0, x2 - x1), max(0, y2 - y1)]
