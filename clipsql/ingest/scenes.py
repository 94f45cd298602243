"""Where a video's shots start: each sampled frame's picture (colour, brightness, texture,
layout, from a small RGB thumbnail) compared with the pictures before it.

:class:`SceneCuts` takes one :class:`Picture` per sample (:func:`picture_features`) and says,
one sample behind, which samples start a new shot: a hard cut between two pictures that
differ by more than :data:`SCENE_THRESHOLD` (:func:`picture_distance`), or the first settled
picture after a fade, a dissolve or a whip pan. :mod:`clipsql.ingest.video` samples the
frames and keeps a keyframe where a shot starts.
"""

from __future__ import annotations

import numpy as np

#: How much a new shot's picture differs from the one before it, at least
#: (:func:`picture_distance`, 0 same to 1): one camera photo to another of the benchmark's
#: set scores 0.2 to 0.5, two colours of one grey 0.33, two textures of one grey 0.12 to
#: 0.27; a step of a slow pan under 0.05 (see :class:`SceneCuts`).
SCENE_THRESHOLD = 0.08

#: The thumbnail (width, height, RGB) samples are compared by (:func:`picture_features`):
#: small enough to cost little next to decoding, large enough to keep textures.
THUMB = (128, 72)


def scene_change(a: np.ndarray, b: np.ndarray) -> float:
    """How much two thumbnails (RGB ``(h, w, 3)`` or grey ``(h, w)``, uint8) differ as
    pictures, 0 (same) to 1: :func:`picture_distance` of their :func:`picture_features`.

    >>> flat = np.zeros((36, 64, 3), np.uint8)
    >>> red, blue = flat + [200, 40, 40], flat + [60, 60, 230]  # much the same grey
    >>> scene_change(red, red), scene_change(red, blue) > SCENE_THRESHOLD
    (0.0, True)
    """
    return picture_distance(picture_features(a), picture_features(b))


#: Hue bins of the colour histogram (one more holds grey), brightness bins (of 0 to 2.5 times
#: the picture's mean), gradient orientation bins (of 180 degrees); the gradient a pixel needs
#: to count as an edge, as a share of the picture's mean brightness.
_HUES, _LUMAS, _ORIENTATIONS, _EDGE = 12, 16, 6, 0.1
#: The coarse layout compared: the colour of each of 4 x 4 cells.
_GRID = 4
#: Weights of the parts of :func:`picture_distance`: colour, brightness distribution,
#: texture, layout, overall brightness.
_WEIGHTS = (0.3, 0.15, 0.3, 0.15, 0.1)
#: A picture whose brightest 5% are darker than this (of 255) is blank (a fade's black).
_BLANK = 24.0


class Picture:
    """What :func:`picture_distance` compares of one thumbnail (:func:`picture_features`)."""

    __slots__ = ("colour", "spread", "texture", "grid", "level", "blank")

    def __init__(self, colour, spread, texture, grid, level, blank):
        self.colour, self.spread, self.texture = colour, spread, texture
        self.grid, self.level, self.blank = grid, level, blank


def picture_features(thumb: np.ndarray) -> Picture:
    """What :func:`picture_distance` compares of a thumbnail. All but ``level`` are taken
    relative to the picture's mean brightness, so a fade (the picture darkened) barely changes
    them, and all but ``grid`` are histograms, blind to where things are, so a pan barely
    changes them: hue weighted by how colourful each pixel is (grey its own bin); brightness
    distribution; edges by orientation and strength (flat pixels their own bin); the colour of
    a coarse grid; the mean brightness (``level``). ``blank``: nearly black (a fade's middle)."""
    t = np.asarray(thumb)
    if t.ndim == 2:
        t = np.repeat(t[:, :, None], 3, axis=2)
    planes = np.ascontiguousarray(t[:, :, :3].transpose(2, 0, 1), dtype=np.float32)
    luma = 0.299 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2]  # edges: all of it
    mean = max(float(luma.mean()), 1.0)
    h2, w2 = planes.shape[1] // 2, planes.shape[2] // 2
    if h2 >= _GRID and w2 >= _GRID:  # colour and brightness: half the size is plenty
        planes = planes[:, :2 * h2, :2 * w2].reshape(3, h2, 2, w2, 2).mean(axis=(2, 4))
    r, g, b = planes
    n = float(r.size)
    small = 0.299 * r + 0.587 * g + 0.114 * b
    hi, lo = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    chroma = hi - lo
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(hi == r, (g - b) / safe % 6,  # sixths of the circle, OpenCV's formula
                   np.where(hi == g, (b - r) / safe + 2, (r - g) / safe + 4))
    weight = np.minimum(1.0, chroma / (2.0 * mean))
    bins = np.minimum((hue * (_HUES / 6.0)).astype(np.int32), _HUES - 1)
    colour = np.bincount(bins.ravel(), weights=weight.ravel(), minlength=_HUES)
    colour = np.append(colour, n - float(weight.sum())) / n
    level = np.minimum((small * (_LUMAS / (2.5 * mean))).astype(np.int32), _LUMAS - 1)
    spread = np.cumsum(np.bincount(level.ravel(), minlength=_LUMAS)) / n
    gx = luma[:-1, 1:] - luma[:-1, :-1]
    gy = luma[1:, :-1] - luma[:-1, :-1]
    strength = np.hypot(gx, gy) / (_EDGE * mean)
    angle = np.minimum((np.arctan2(gy, gx) % np.pi * (_ORIENTATIONS / np.pi)).astype(np.int32),
                       _ORIENTATIONS - 1)
    cell = np.where(strength <= 1, 0, np.where(strength <= 4, 1, 1 + _ORIENTATIONS) + angle)
    texture = np.bincount(cell.ravel(), minlength=2 * _ORIENTATIONS + 1) / float(cell.size)
    h, w = r.shape[0] // _GRID * _GRID, r.shape[1] // _GRID * _GRID
    grid = planes[:, :h, :w].reshape(3, _GRID, h // _GRID, _GRID, w // _GRID).mean(axis=(2, 4))
    grid /= mean
    blank = np.count_nonzero(luma >= _BLANK) < 0.05 * luma.size  # brightest 5% under it
    return Picture(colour, spread, texture, grid, mean, blank)


def picture_distance(a: Picture, b: Picture) -> float:
    """How much two pictures differ, 0 to 1, from their :func:`picture_features`: the
    weighted (:data:`_WEIGHTS`) mean of how much the colour and the edge histograms differ
    (half the sum of absolute differences: 0 the same, 1 nothing in common), how far the
    brightness distribution moved (mean difference of the cumulative histograms), the grid's
    mean absolute difference (half the mean brightness counting as all) and the
    overall brightness's (a factor of 8 counting as all)."""
    parts = (0.5 * float(np.abs(a.colour - b.colour).sum()),
             float(np.abs(a.spread - b.spread).mean()),
             0.5 * float(np.abs(a.texture - b.texture).sum()),
             min(1.0, 2.0 * float(np.abs(a.grid - b.grid).mean())),
             min(1.0, abs(float(np.log2(a.level / b.level))) / 3.0))
    return round(sum(w * p for w, p in zip(_WEIGHTS, parts)), 6)


#: A step between two samples under this :func:`picture_distance` is the picture holding
#: still (or moving slowly: a pan, a fade's last light); over it, something is changing.
STILL = 0.05
#: A cut stands out from the motion around it: its step is this many times the steps before
#: and after it (a busy or shaking picture changes a lot at every step, a cut once).
STANDS_OUT = 1.5
#: Samples a change may last and still be one transition (a fade, a dissolve, a whip pan)
#: compared as a whole, from the picture before it to the picture after it.
MAX_TRANSITION = 8


class SceneCuts:
    """Finds the samples where a new shot starts, from each sample's :class:`Picture`, one
    sample behind: :meth:`push` of sample ``t`` says whether sample ``t - 1`` starts a shot.

    A sample starts a shot when it is not blank, differs from the ``anchor`` (the last still
    picture before the change: the picture the shot before ended on) by more than
    ``threshold``, and either

    * is a **cut**: the step into it is over ``threshold`` and :data:`STANDS_OUT` times the
      steps before and after it (the new picture stays; a flash, which comes back, or a busy
      picture, which changes at every step, does not), or
    * ends a **transition**: the steps into it were changing (a fade through black, a
      dissolve, a whip pan, for up to :data:`MAX_TRANSITION` samples) and the step after it
      is :data:`STILL`: the first settled picture of the new shot.

    A pan moves the anchor along (each step still), so it never adds up to a cut; a fade to
    black and back to the same picture is no cut (it does not differ from the anchor).
    """

    __slots__ = ("threshold", "anchor", "previous", "steps", "moving", "maybe")

    def __init__(self, threshold: float):
        self.threshold = float(threshold)
        self.anchor: Picture | None = None
        self.previous: Picture | None = None
        self.steps: list[float] = []  # the last two steps: into previous's previous, into previous
        self.moving = 0  # samples since the picture was last still
        #: whether the last sample pushed may start a shot (the next push tells)
        self.maybe = False

    def push(self, picture: Picture) -> bool:
        """Take the next sample; whether the one before it starts a shot."""
        before = self.previous
        self.previous = picture
        if before is None:
            self.anchor = picture
            return False
        step = picture_distance(before, picture)
        into = self.steps[-1] if self.steps else 0.0  # the step into `before`
        prior = self.steps[-2] if len(self.steps) > 1 else 0.0
        self.steps = [into, step]
        starts = False
        if not before.blank and self.anchor is not None and len(self.steps) > 1:
            cut = (into > self.threshold and into >= STANDS_OUT * max(prior, step))
            settled = self.moving > 0 and step < STILL
            if (cut or settled) and picture_distance(self.anchor, before) > self.threshold:
                starts = True
        if starts:
            self.anchor, self.moving = before, 0
        if step < STILL and not picture.blank:
            self.anchor, self.moving = picture, 0  # still: the anchor follows a pan
        else:
            self.moving += 1
            if self.moving > MAX_TRANSITION:  # no transition: changing all the time
                self.anchor, self.moving = picture, 0
        self.maybe = (not picture.blank and (step > self.threshold or self.moving > 0)
                      and picture_distance(self.anchor, picture) > self.threshold)
        return starts
