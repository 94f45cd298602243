"""The web UI and JSON API (``clipsql serve``).

>>> from clipsql.web import create_app, serve_in_thread        # doctest: +SKIP
>>> app = create_app("postgresql://localhost/photos")          # doctest: +SKIP
>>> with serve_in_thread(app) as url:                          # doctest: +SKIP
...     print(url)                                             # http://127.0.0.1:PORT
"""

from clipsql.web.app import create_app, is_loopback
from clipsql.web.server import serve, serve_in_thread

__all__ = ["create_app", "is_loopback", "serve", "serve_in_thread"]
