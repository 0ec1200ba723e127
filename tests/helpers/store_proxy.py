"""An HTTP proxy in front of a tracking server, for the faults a shared server has: every answer late
(a slow server), or — from a chosen request on — the connection dropped without an answer (a server
lost mid-sweep), until it is brought back. What MLflow's client sees is what it would see of the real
thing; the server behind keeps its state, as a restarted server does."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Trigger = Callable[[str, str, bytes], bool]  # (method, path, body) -> lose the server from this request on


class StoreProxy:
    def __init__(self, target: str, *, delay_s: float = 0.0) -> None:
        self.target = urlsplit(target)
        self.delay_s = delay_s
        self.lose_at: Trigger | None = None
        self.lost = threading.Event()
        self.requests: list[tuple[str, str]] = []
        self.refused = 0  # requests that got no answer (the server lost)
        proxy = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.requests.append((self.command, self.path))
                if (
                    not proxy.lost.is_set()
                    and proxy.lose_at is not None
                    and proxy.lose_at(self.command, self.path, body)
                ):
                    proxy.lost.set()
                if proxy.lost.is_set():
                    with lock:
                        proxy.refused += 1
                    self.close_connection = True
                    self.connection.close()  # no answer at all: what a killed server gives
                    return
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                upstream = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="store-proxy", daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def back(self) -> None:
        """The server is reachable again (its state as it was)."""
        self.lose_at = None
        self.lost.clear()

    def __enter__(self) -> StoreProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
