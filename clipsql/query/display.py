"""Notebook display: results as a grid of inline thumbnails with scores (no extra dependencies).

Jupyter calls ``Results._repr_html_``, which lands here. Thumbnails are inlined as
``data:`` URIs, so the notebook keeps showing them after the files move.

>>> results_html([])
'<div style="color:#666;font-family:sans-serif">no results</div>'
"""

from __future__ import annotations

import base64
import html

from clipsql.ingest.thumbnails import render

#: Long side of an inline thumbnail, in pixels.
THUMB = 160


def thumbnail_data_uri(path: str, size: int = THUMB) -> str | None:
    """A small JPEG of the image as a data: URI, or None if it cannot be read any more."""
    data = render(path, size, quality=80)
    if data is None:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _caption(hit) -> str:
    details = [hit.path, f"id {hit.id}", f"{hit.width}x{hit.height} {hit.format}"]
    if hit.taken_at:
        details.append(f"taken {hit.taken_at:%Y-%m-%d %H:%M}")
    if hit.camera_make or hit.camera_model:
        details.append(" ".join(filter(None, [hit.camera_make, hit.camera_model])))
    return "\n".join(details)


def _caption_line(hit) -> str:
    """The hit's caption (hybrid results carry one) on a line of its own, escaped."""
    text = getattr(hit, "caption", None)
    return (f'<div style="white-space:normal;color:#555">{html.escape(text)}</div>'
            if text else "")


def results_html(hits) -> str:
    """An HTML grid of ``hits`` (anything with ``path``, ``score``, ``id`` ...), best first."""
    if not hits:
        return '<div style="color:#666;font-family:sans-serif">no results</div>'
    cells = []
    for rank, hit in enumerate(hits, 1):
        uri = thumbnail_data_uri(hit.path)
        img = (f'<img src="{uri}" alt="" style="max-width:{THUMB}px;max-height:{THUMB}px;'
               f'display:block;margin:auto">' if uri
               else f'<div style="height:{THUMB // 2}px;line-height:{THUMB // 2}px;'
                    f'color:#999">(missing file)</div>')
        name = html.escape(hit.path.rsplit("/", 1)[-1])
        cells.append(
            f'<figure style="margin:0;width:{THUMB}px" title="{html.escape(_caption(hit))}">'
            f'<div style="height:{THUMB}px;display:flex;align-items:center;'
            f'background:#f4f4f4;border-radius:4px">{img}</div>'
            f'<figcaption style="font-size:11px;line-height:1.3;margin-top:2px;overflow:hidden;'
            f'text-overflow:ellipsis;white-space:nowrap">'
            f'<b>#{rank}</b> <span style="font-family:monospace">{hit.score:.3f}</span> '
            f"{name}{_caption_line(hit)}</figcaption></figure>")
    return ('<div style="display:flex;flex-wrap:wrap;gap:8px;font-family:sans-serif">'
            + "".join(cells) + "</div>")
