"""What every local API stand-in shares: a threaded loopback HTTP server, the requests it received,
answers scripted per image, and faults queued for the next requests (an image's own first, so one
example of a concurrent batch can fail deterministically). Each API's module adds its wire format.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Protocol, Self, TypeVar


class _HasImage(Protocol):
    @property
    def image_sha256(self) -> str | None: ...


R = TypeVar("R", bound=_HasImage)  # the decoded request type of one API
F = TypeVar("F")  # its fault type


class LoopbackServer(ThreadingHTTPServer):
    """The HTTP server, with the stand-in it serves (handlers reach it as ``self.server.fake``)."""

    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections under 64 concurrent clients
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: Any) -> None:
        self.fake = fake
        self.connections = 0  # accepted so far (counted by the one thread that accepts them)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


class JSONHandler(BaseHTTPRequestHandler):
    """A silent handler that answers JSON; a client that gave up (its timeout) is not an error."""

    server: LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: test output should show assertions, not access logs."""

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(body).encode(), "application/json", headers)

    def send_raw(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to tell it


class ScriptedAPI(Generic[R, F]):
    """Start it as a context manager; ``address`` is its ``http://127.0.0.1:PORT``."""

    thread_name = "fake-api"

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        port: int = 0,
        answers: dict[str, str] | None = None,
        default_answer: str | Callable[[R], str] = "{}",
    ) -> None:
        self.answers: dict[str, str] = dict(answers or {})
        self.default_answer: str | Callable[[R], str] = default_answer
        self._handler = handler
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[R] = []
        self._faults: deque[F] = deque()
        self._image_faults: dict[str, deque[F]] = {}
        self._stopping = threading.Event()  # set on stop: wakes handlers sleeping through a latency
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = LoopbackServer(("127.0.0.1", self._port), self._handler, self)
        self._thread = threading.Thread(
            # a short poll keeps stop() fast: shutdown() waits for the loop to notice
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started (use it as a context manager)")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- scripting -------------------------------------------------------------------------------
    def answer_for_image(self, sha256: str, text: str) -> None:
        with self._lock:
            self.answers[sha256] = text

    def enqueue_fault(self, fault: F, *, image_sha256: str | None = None, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests (for that image only, if given)."""
        with self._lock:
            queue = (
                self._faults if image_sha256 is None else self._image_faults.setdefault(image_sha256, deque())
            )
            queue.extend([fault] * times)

    def clear_faults(self) -> None:
        """The outage is over: drop every queued fault (as when a quota resets)."""
        with self._lock:
            self._faults.clear()
            self._image_faults.clear()

    # -- observation -----------------------------------------------------------------------------
    @property
    def requests(self) -> list[R]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """Connections accepted: one per request, unless the server keeps them open between requests."""
        return self._server.connections if self._server is not None else 0

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    # -- used by the handlers --------------------------------------------------------------------
    def _record(self, request: R) -> F | None:
        with self._lock:
            self._requests.append(request)
            own = self._image_faults.get(request.image_sha256 or "")
            if own:
                return own.popleft()
            return self._faults.popleft() if self._faults else None

    def _answer(self, request: R) -> str:
        with self._lock:
            scripted = self.answers.get(request.image_sha256 or "")
        if scripted is not None:
            return scripted
        answer = self.default_answer
        return answer(request) if callable(answer) else answer
