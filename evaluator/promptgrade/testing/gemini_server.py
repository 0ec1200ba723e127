"""A local server that speaks enough of the Gemini REST API for the real ``google-genai`` client.

Tests and demos point the unmodified SDK at it (``base_url`` or ``GOOGLE_GEMINI_BASE_URL``) so the
whole path — request building, serialisation, HTTP, error bodies, response parsing — runs for real,
offline and for free. Answers are scripted per image (by sha256), and faults the real API produces
(429 with RetryInfo, per-day quota, 5xx, safety blocks, truncation, dropped connections, hangs) can
be queued so error handling is tested against the bytes the SDK actually sees.

Each request is recorded with its arrival time, so a test can measure the gap between a 429 and its
retry at the server rather than around the whole client. Each answer's billed tokens are recorded
too, so a spending limit is checked against what the API would charge, not the client's own tally.
Vertex AI mode is served as well (``/v1beta1/projects/…/publishers/google/models/…``), and ``POST /token``
answers an OAuth token request, so a service-account key file (``GOOGLE_APPLICATION_CREDENTIALS``) whose
``token_uri`` points here gives the SDK a bearer token that its model requests then carry.

The server is standard library only, so it runs anywhere the package does; ``serve`` (the command)
also reads the shipped price table and an image's size (Pillow), to bill as the API does.
"""

from __future__ import annotations

import argparse
import binascii
import dataclasses
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptgrade.errors import PromptgradeError
from promptgrade.ports import busy
from promptgrade.testing.answer_files import ScriptedAnswers, load_answers
from promptgrade.testing.gemini_batches import BatchAPI
from promptgrade.testing.gemini_wire import (
    TOKENS_PER_IMAGE,
    Fault,
    GeminiReplies,
    RequestInfo,
    answer_body,
    envelope,
    parse_request,
)
from promptgrade.testing.scripted import ScriptedAPI

DEFAULT_ANSWER = '{"categories": [], "grade": 0}'
TOKEN_PATH = "/token"  # the OAuth token endpoint, for application-default credentials' token_uri
ACCESS_TOKEN = "fake-gemini-access-token"

_PATH = re.compile(
    r"^/(?P<version>v1|v1beta|v1beta1)/"
    r"(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/[^/]+/)?"
    r"models/(?P<model>[^/:]+):generateContent$"
)


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens one answer billed (its usageMetadata): what the real API would charge for."""

    input_tokens: int
    output_tokens: int


Answer = str | Callable[[RequestInfo], str]
Latency = float | Callable[[RequestInfo], float]


class FakeGemini(ScriptedAPI[RequestInfo, Fault]):
    """A scripted Gemini endpoint on 127.0.0.1; every attribute may be changed while it runs."""

    thread_name = "fake-gemini"

    def __init__(
        self,
        *,
        port: int = 0,
        answers: dict[str, str] | None = None,
        default_answer: Answer = DEFAULT_ANSWER,
        latency_s: Latency = 0.0,
        image_tokens: Callable[[RequestInfo], int] | None = None,
        keep_alive: bool = False,
    ) -> None:
        handler = _KeepAliveHandler if keep_alive else _Handler
        super().__init__(handler, port=port, answers=answers, default_answer=default_answer)
        # How an image is billed: TOKENS_PER_IMAGE (Gemini 2.x's small-image count) unless a benchmark
        # scripts a model family's rule, e.g. per media_resolution.
        self.image_tokens = image_tokens
        self.latency_s: Latency = latency_s
        self._usage: list[Usage] = []
        self._token_requests = 0
        self.access_token = ACCESS_TOKEN
        # Answers by model id (the model in the request path), before any per-image answer: one
        # server can then play a task model and, say, a reflection model proposing templates.
        self.model_answers: dict[str, Answer] = {}
        self.batches = BatchAPI(self)  # the Batch API and the Files API (gemini_batches)

    @property
    def base_url(self) -> str:
        return self.address

    @property
    def usage(self) -> list[Usage]:
        """The tokens billed by every answer sent, in order (errors and dropped requests bill nothing)."""
        with self._lock:
            return list(self._usage)

    @property
    def token_requests(self) -> int:
        """How many OAuth token refreshes were served at ``TOKEN_PATH``."""
        with self._lock:
            return self._token_requests

    def images_sent(self, model: str | None = None) -> Counter[str]:
        """How many requests carried each image (by sha256), for one model or all: what a test counts
        to prove a split's images were never sent."""
        return Counter(
            r.image_sha256 for r in self.requests if r.image_sha256 and (model is None or r.model == model)
        )

    def _answer(self, request: RequestInfo) -> str:
        scripted = self.model_answers.get(request.model)
        if scripted is None:
            return super()._answer(request)
        return scripted(request) if callable(scripted) else scripted

    # -- used by the handler ---------------------------------------------------------------------
    def _priced(self, info: RequestInfo) -> RequestInfo:
        """The request with what its image is billed (``image_tokens``): online and in a batch alike."""
        billed = self.image_tokens(info) if self.image_tokens is not None else TOKENS_PER_IMAGE
        return dataclasses.replace(info, image_tokens=billed)

    def _bill(self, usage: dict[str, Any]) -> None:
        with self._lock:
            self._usage.append(Usage(usage["promptTokenCount"], usage["candidatesTokenCount"]))

    def _issue_token(self) -> str:
        with self._lock:
            self._token_requests += 1
            return self.access_token

    def _latency(self, info: RequestInfo) -> float:
        latency = self.latency_s
        return float(latency(info) if callable(latency) else latency)


class _Handler(GeminiReplies):
    def do_POST(self) -> None:
        received_at = time.monotonic()
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        match = _PATH.match(path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == TOKEN_PATH:
            token = {"access_token": fake._issue_token(), "expires_in": 3600, "token_type": "Bearer"}
            self.send_json(200, token)
            return
        if match is None:
            if not fake.batches.post(self, path, body):
                self.send_api_error(404, f"Method not found: {path}")
            return
        try:
            info = parse_request(match["model"], path, json.loads(body or b"{}"), self.headers, received_at)
            info = dataclasses.replace(fake._priced(info), body=body)
        except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
            self.send_api_error(400, f"Invalid JSON payload received. {exc}")
            return
        fault = fake._record(info)
        delay = fake._latency(info)
        if delay > 0 and fake._stopping.wait(delay):
            return
        if fault is None:
            self.send_json(200, answer_body(info, fake._answer(info)))
        else:
            self._play(fault, info)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self.server.fake.batches.get(self, path):
            self.send_api_error(404, f"Method not found: {path}")

    def _play(self, fault: Fault, info: RequestInfo) -> None:
        fake = self.server.fake
        if fault.kind == "http_error":
            self.send_api_error(
                fault.status, fault.message, retry_delay=fault.retry_delay, quota_id=fault.quota_id
            )
        elif fault.kind == "malformed":
            self.send_raw(200, b"<html><body>upstream returned garbage", "text/html")
        elif fault.kind == "safety":
            candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": _BLOCKED_RATINGS}
            self.send_json(200, envelope(info, [candidate], output_tokens=0))
        elif fault.kind == "prompt_blocked":
            body = envelope(info, None, output_tokens=0)
            body["promptFeedback"] = {"blockReason": fault.block_reason, "safetyRatings": _BLOCKED_RATINGS}
            self.send_json(200, body)
        elif fault.kind == "empty":
            self.send_json(200, envelope(info, [], output_tokens=0))
        elif fault.kind == "truncated":
            answer = fake._answer(info)
            text = fault.text if fault.text is not None else answer[: max(1, len(answer) // 2)]
            self.send_json(200, answer_body(info, text, finish_reason="MAX_TOKENS"))
        elif fault.kind == "raw":
            self.send_raw(200, (fault.body or "").encode(), "application/json")
        elif fault.kind == "drop":
            self.close_connection = True  # return without writing: the client sees a disconnect
        elif fault.kind == "hang" and not fake._stopping.wait(fault.seconds):
            self.send_json(200, answer_body(info, fake._answer(info)))


class _KeepAliveHandler(_Handler):
    """Connections kept open between requests, as the API's front end keeps them (google-genai's HTTP
    session pools them): a benchmark measuring a client then charges no request a TCP handshake and
    a new server thread that no user pays. Not the default: a fault that drops or hangs a connection
    should leave no pooled socket behind for a test's next request. Headers and body go out without
    waiting for the client's ACK (no Nagle): on a kept-open connection Nagle's algorithm and the
    client's delayed ACK hold every response back ~40 ms."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True


_BLOCKED_RATINGS = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]


_MEDIA_RESOLUTION = {
    "MEDIA_RESOLUTION_LOW": "low",
    "MEDIA_RESOLUTION_MEDIUM": "medium",
    "MEDIA_RESOLUTION_HIGH": "high",
}


def billed_as_documented(rules: dict[str, Any]) -> Callable[[RequestInfo], int]:
    """Images billed as Google documents them for the requested model's family: the price table's
    ``image_tokens`` rules (``promptgrade.tokens``), at the tray's size and the request's
    ``mediaResolution`` — so a sweep's estimated and billed input tokens agree on the stand-in as they
    should against the API (Gemini 3 bills 1,120 tokens for an image whatever its size, Gemini 2.x 258
    per 768-px tile). Every image of a request is billed as its tray (references share its size rule)."""
    from promptgrade.tokens import image_size, image_tokens, longest_prefix

    def billed(info: RequestInfo) -> int:
        try:
            width, height = image_size(info.tray) if info.tray else (0, 0)
        except OSError:  # bytes that are no image (a test's): billed as a small image
            width, height = 0, 0
        media = _MEDIA_RESOLUTION.get(str(info.generation_config.get("mediaResolution", "")))
        return image_tokens(width, height, media, longest_prefix(info.model, rules))

    return billed


def serve(
    port: int,
    answers: Path | None,
    *,
    default_answer: str = DEFAULT_ANSWER,
    latency: float = 0.0,
    keep_alive: bool = False,
) -> None:
    """Serve until Ctrl-C, so a demo or a notebook can point the real SDK at scripted answers.

    Images are billed by the shipped price table's rules for the requested model (see
    ``billed_as_documented``); without a table, as ``TOKENS_PER_IMAGE``. A missing or malformed answers
    file (``AnswersFileError``) and a busy port (``PortInUseError``) are raised before anything is
    served, for the command to print as one line.
    """
    from promptgrade.config import load_price_table, shipped_price_table

    if answers is None:
        scripted = ScriptedAnswers({}, default=default_answer)
    else:
        scripted = load_answers(answers, default_answer)
    scripted.on_unscripted = lambda sha256: print(
        f"note: image {sha256[:12]}… is not in {answers or 'the answers file'}: it gets the default answer "
        "(further ones are not reported)",
        flush=True,
    )
    table = shipped_price_table()
    billing = billed_as_documented(load_price_table(table).image_tokens) if table is not None else None
    fake = FakeGemini(
        port=port, default_answer=scripted, latency_s=latency, image_tokens=billing, keep_alive=keep_alive
    )
    try:
        fake.start()
    except OSError as exc:
        raise busy("127.0.0.1", port, exc) from None
    with fake:
        per_prompt = f", per prompt for {len(scripted.prompts)} prompts" if scripted.prompts else ""
        print(
            f"Fake Gemini API listening on {fake.base_url} ({len(scripted)} scripted images{per_prompt})",
            flush=True,
        )
        print(f"GOOGLE_GEMINI_BASE_URL={fake.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m promptgrade.testing.gemini_server``: ``serve`` with its errors as one line."""
    parser = argparse.ArgumentParser(prog="python -m promptgrade.testing.gemini_server", description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--answers", type=Path, help="answers file (promptgrade.testing.answer_files)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response")
    parser.add_argument("--default-answer", default=DEFAULT_ANSWER, help="answer for images not in --answers")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="keep connections open between requests, as the real API does (default: one per request)",
    )
    args = parser.parse_args(argv)
    try:
        serve(
            args.port,
            args.answers,
            default_answer=args.default_answer,
            latency=args.latency,
            keep_alive=args.keep_alive,
        )
    except PromptgradeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
