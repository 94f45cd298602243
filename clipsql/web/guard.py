"""Who may talk to the server: loopback host names, and no requests made by other sites.

Two checks, both before any route runs:

* the ``Host`` header must name a loopback host (Starlette's ``TrustedHostMiddleware``
  with :data:`LOOPBACK_HOSTS` and the listening address), so a web page elsewhere cannot
  reach the server through DNS rebinding;
* a request to the API, an upload, an image or a video that a browser made for another site is
  refused with 403: ``Sec-Fetch-Site: cross-site``, or an ``Origin`` header that is not
  the server's own origin (scheme, host and port of the request). Same-origin requests,
  typed URLs (``Sec-Fetch-Site: none``) and clients that send neither header pass.

>>> is_loopback("::1"), is_loopback("[::1]"), is_loopback("127.8.9.10"), is_loopback("localhost")
(True, True, True, True)
>>> is_loopback("127.evil.example"), is_loopback("0.0.0.0")
(False, False)
>>> cross_site_refusal({"origin": "http://evil.example"}, "http", "127.0.0.1:8000")
'cross-site request refused: Origin http://evil.example is not this server'
>>> cross_site_refusal({"origin": "http://localhost:8000"}, "http", "localhost:8000") is None
True
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

#: Host names always accepted by a server listening on a loopback address.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
#: Paths the cross-site check covers (the page itself and its static files may be linked).
GUARDED = ("/api/", "/images/", "/thumbs/", "/videos/")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine
    only: ``localhost``, any ``127.x.y.z``, or ``::1``."""
    host = host.strip().lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """``host`` as it goes in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host: str) -> list[str]:
    """The ``Host`` names a server listening on ``host`` answers (loopback listeners only)."""
    return list(dict.fromkeys([*LOOPBACK_HOSTS, url_host(host.lower())]))


def _origin(scheme: str, netloc: str) -> tuple | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    return (scheme.lower(), (parts.hostname or "").lower(), port) if parts.hostname else None


def cross_site_refusal(headers, scheme: str, host: str | None) -> str | None:
    """Why a request with these headers comes from another site, or None if it does not."""
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() == "cross-site":
        return "cross-site request refused (Sec-Fetch-Site: cross-site)"
    origin = headers.get("origin")
    if origin is None:
        return None
    own = _origin(scheme, host or "")
    parts = urlsplit(origin) if "://" in origin else None
    theirs = _origin(parts.scheme, parts.netloc) if parts and not parts.path else None
    if own is None or theirs != own:
        return f"cross-site request refused: Origin {origin[:200]} is not this server"
    return None


class CrossSiteGuard:
    """ASGI middleware: 403 with a JSON ``detail`` for cross-site requests to guarded paths."""

    def __init__(self, app, prefixes=GUARDED):
        self.app = app
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            headers = Headers(scope=scope)
            reason = cross_site_refusal(headers, scope.get("scheme", "http"),
                                        headers.get("host"))
            if reason:
                await JSONResponse({"detail": reason}, status_code=403,
                                   headers={"Vary": "Origin, Sec-Fetch-Site"})(scope, receive, send)
                return
        await self.app(scope, receive, send)
