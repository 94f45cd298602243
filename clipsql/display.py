"""Notebook display: results as a grid of inline thumbnails with scores (no extra dependencies)."""

from __future__ import annotations

import base64
import html
import io

THUMB = 160


def thumbnail_data_uri(path: str, size: int = THUMB) -> str | None:
    """A small JPEG of the image as a data: URI, or None if it cannot be read any more."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size * 2, size * 2))
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except Exception:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def results_html(hits) -> str:
    cells = []
    for hit in hits:
        uri = thumbnail_data_uri(hit.path)
        img = (f'<img src="{uri}" style="max-width:{THUMB}px;max-height:{THUMB}px">' if uri
               else '<div style="color:#999">(missing)</div>')
        name = html.escape(hit.path.rsplit("/", 1)[-1])
        cells.append(
            f'<figure style="margin:4px;text-align:center;width:{THUMB}px">{img}'
            f'<figcaption style="font-size:11px" title="{html.escape(hit.path)}">'
            f"{hit.score:.3f} · {name}</figcaption></figure>")
    return '<div style="display:flex;flex-wrap:wrap">' + "".join(cells) + "</div>"
