"""How long one HTTP request made with urllib may take, and how long a server asks us to wait.

urllib's ``timeout`` bounds each socket operation, not the request, so a server that
trickles one byte at a time can hold a request for ever. :class:`RequestDeadline` shuts
down the request's sockets once ``seconds`` have passed; :func:`deadline_opener` gives a
urllib opener whose connections register their sockets with it::

    with RequestDeadline(60) as deadline:
        response = deadline_opener(deadline).open(request, timeout=60)
        ...
    if deadline.expired: ...  # whatever arrived was cut short

:func:`retry_after_s` reads a 429/503 answer's ``Retry-After`` (seconds or an HTTP date),
which the downloader and the SPARQL client honour up to their ``max_retry_after_s``.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any


class RequestDeadline:
    """Shuts down a request's sockets when ``seconds`` have passed since it started.

    urllib's ``timeout`` bounds each socket operation, not the request: a server that
    trickles one byte at a time can hold a request for ever. Shutting the socket down
    breaks the blocking read at once; :attr:`expired` tells the caller why it failed.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> RequestDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def deadline_opener(deadline: RequestDeadline) -> urllib.request.OpenerDirector:
    """A urllib opener whose HTTP(S) connections register their socket with ``deadline``."""

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.register(self.sock)

    class SecureConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.register(self.sock)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Connection, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(SecureConnection, req, context=self._context)  # type: ignore[attr-defined]

    return urllib.request.build_opener(Handler, SecureHandler)


def retry_after_s(headers: Any) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), else None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
