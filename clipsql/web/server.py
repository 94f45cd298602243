"""Running the app: ``clipsql serve`` in the foreground, or a background thread for tests.

Loopback by default. A server on a loopback address (``127.x.y.z``, ``::1``, ``localhost``)
answers only loopback ``Host`` names; on any other address it answers every name (behind
Docker or a proxy) and the command warns that the collection is exposed.

>>> shown_url("::1", 8000), shown_url("127.0.0.1", 8000), shown_url("192.168.1.5", 80)
('http://[::1]:8000/', 'http://localhost:8000/', 'http://192.168.1.5:80/')
"""

from __future__ import annotations

import contextlib
import threading
import time

from clipsql.config import CONNECT_WAIT_S
from clipsql.errors import ConfigError
from clipsql.web.backend import connect_when_up
from clipsql.web.guard import allowed_hosts, is_loopback, url_host


def check_port(host: str, port: int) -> None:
    """Raise :class:`ConfigError` now, readably, when ``host:port`` cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def shown_url(host: str, port: int) -> str:
    """The URL to open for a server listening on ``host:port``."""
    plain = host.strip("[]")
    if is_loopback(plain) and ":" not in plain:
        plain = "localhost"
    return f"http://{url_host(plain)}:{port}/"


def serve(host: str = "127.0.0.1", port: int = 8000, dsn: str | None = None,
          model: str | None = None, device: str | None = None, log_level: str = "info",
          announce=None, steps=None, connect_wait_s: float = CONNECT_WAIT_S) -> None:
    """Run the web UI until interrupted (what ``clipsql serve`` does).

    A database that is not accepting connections yet is waited for, up to
    ``connect_wait_s`` seconds with exponential backoff (:func:`connect_when_up`).
    ``announce(url)`` is called once the collection and model are ready, just before
    listening; ``steps(what)`` is told each retry and what preparing the model does (a first
    use exports it).
    """
    import uvicorn

    from clipsql.database import connection
    from clipsql.web.app import create_app

    host = host.strip("[]")
    check_port(host, port)
    dsn = connection.resolve_dsn(dsn)
    connect_when_up(dsn, connect_wait_s, steps).close()
    app = create_app(dsn, model, device, steps=steps,
                     allowed_hosts=allowed_hosts(host) if is_loopback(host) else None)
    if announce is not None:
        announce(shown_url(host, port))
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30):
    """Run ``app`` on a background thread (a notebook, a test); yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="clipsql-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"the web server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{url_host(host)}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
