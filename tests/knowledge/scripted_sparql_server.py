"""A local HTTP server that answers each SPARQL request with the next scripted behaviour
(429, 5xx, garbage, a hang, a Retry-After, ...), then 'ok' (or its default: 'empty' answers
every query with no rows)."""

from __future__ import annotations

import email.utils
import json
import threading
from collections import deque
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OK_BODY = json.dumps(
    {"head": {"vars": ["x"]}, "results": {"bindings": [{"x": {"type": "literal", "value": "ok"}}]}}
).encode()
EMPTY_BODY = json.dumps({"head": {"vars": ["x"]}, "results": {"bindings": []}}).encode()


class ScriptedServer:
    """Answers each request with the next scripted behaviour (then 'ok')."""

    def __init__(self) -> None:
        self.behaviours: deque[str] = deque()
        self.default = "ok"  # once the scripted behaviours are used up
        self.requests = 0
        self.stop_hanging = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                behaviour = server.behaviours.popleft() if server.behaviours else server.default
                if behaviour == "hang":
                    server.stop_hanging.wait(5)
                    behaviour = "ok"
                status, headers, body = {
                    "ok": (200, {"Content-Type": "application/sparql-results+json"}, OK_BODY),
                    "empty": (200, {"Content-Type": "application/sparql-results+json"}, EMPTY_BODY),
                    "garbage": (200, {"Content-Type": "application/sparql-results+json"}, b'{"head": {"vars": ["x"'),
                    "partial": (
                        200,
                        {"Content-Type": "application/sparql-results+json", "X-SQL-State": "S1TAT"},
                        OK_BODY,
                    ),
                    "html": (200, {"Content-Type": "text/html"}, b"<html>Service busy</html>"),
                    "shape": (
                        200,
                        {"Content-Type": "application/sparql-results+json"},
                        b'{"head": {}, "boolean": true}',
                    ),
                    "429": (429, {}, b"Too Many Requests"),
                    "429-retry-after": (429, {"Retry-After": "7"}, b"slow down"),
                    "429-retry-in-an-hour": (429, {"Retry-After": "3600"}, b"slow down"),
                    "503-retry-at-a-date": (503, {"Retry-After": server.date_in_90_s()}, b"maintenance"),
                    "500": (500, {}, b"Virtuoso 42000 Error"),
                    "502": (502, {}, b"Bad Gateway"),
                    "503": (503, {}, b"Service Unavailable"),
                    "400": (400, {}, b"Virtuoso 37000 Error SP030: SPARQL compiler"),
                }[behaviour]
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sparql"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def date_in_90_s() -> str:
        return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_hanging.set()
        self.httpd.shutdown()
        self.httpd.server_close()
