"""Captions: generated descriptions of the images, and hybrid search over them
(docs/captions.md).

The whole feature lives here: :mod:`~clipsql.captions.generate` writes a caption for every
image that lacks a current one (``Collection.caption``, ``clipsql caption``) with the CoCa
captioner of :mod:`clipsql.models.captioner`; :mod:`~clipsql.captions.hybrid` fuses the CLIP
ranking with a full-text ranking of the captions (``Collection.hybrid_search``, ``clipsql
search --hybrid``, the web page's hybrid mode) and reads captions for hits.
"""

from __future__ import annotations

from clipsql.captions.generate import TABLE, CaptionReport, caption, captioner_for
from clipsql.captions.hybrid import CANDIDATES, RRF_K, captions_for

__all__ = ["CANDIDATES", "RRF_K", "TABLE", "CaptionReport", "caption", "captioner_for",
           "captions_for"]
