"""Gemini through the official ``google-genai`` SDK.

The SDK does the HTTP and the JSON; this module adds what the runner needs and the SDK does not give:
one request per call (the SDK's own retries are switched off, because retry policy — and the 429's
RetryInfo delay, which the SDK ignores — belongs to the runner), and every failure turned into a
``Completion`` with an ``ErrorKind`` instead of an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

import google.auth.exceptions

try:  # the SDK's async transport when installed (promptgrade asks for google-genai[aiohttp])
    import aiohttp
    import aiohttp.helpers
    import yarl
except ImportError:  # the Lambda's slim zip: the SDK falls back to httpx
    aiohttp = None  # type: ignore[assignment]  # None stands for "not installed", tested before each use
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from promptgrade.errors import CredentialsError
from promptgrade.providers.base import (
    Completion,
    CompletionRequest,
    ErrorInfo,
    ErrorKind,
    failed,
    redacted,
    status_kind,
)
from promptgrade.providers.gemini_wire import RequestTemplates, sdk_parts, template_key

log = logging.getLogger(__name__)

_MISSING_CREDENTIALS = (
    "No Gemini credentials: set GEMINI_API_KEY (or GOOGLE_API_KEY), or GOOGLE_GENAI_USE_VERTEXAI=true "
    "with GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION."
)
_MEDIA_RESOLUTION = {
    "low": types.MediaResolution.MEDIA_RESOLUTION_LOW,
    "medium": types.MediaResolution.MEDIA_RESOLUTION_MEDIUM,
    "high": types.MediaResolution.MEDIA_RESOLUTION_HIGH,
}
# Finish reasons meaning "the model was stopped on policy": an answer about the input, not a fault.
_BLOCKED_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "RECITATION",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)


def _exception_types(module: str, *names: str) -> tuple[type[Exception], ...]:
    """The SDK runs on aiohttp, httpx or httpx2 depending on what is installed; catch whichever is."""
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        return ()
    return tuple(getattr(loaded, name) for name in names if hasattr(loaded, name))


# Timeouts first: aiohttp's and httpx's timeout errors are also connection errors.
_TIMEOUT_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    *_exception_types("httpx", "TimeoutException"),
    *_exception_types("httpx2", "TimeoutException"),
)
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    google.auth.exceptions.TransportError,
    *_exception_types("aiohttp", "ClientError"),
    *_exception_types("httpx", "TransportError"),
    *_exception_types("httpx2", "TransportError"),
)


class GeminiCredentials(BaseSettings):
    """Where Gemini credentials come from: an API key, or Vertex AI with application-default login.

    ``GOOGLE_API_KEY`` wins over ``GEMINI_API_KEY`` when both are set, as in the SDK, so that this
    class and a bare ``genai.Client()`` never disagree about which key is used.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, populate_by_name=True, extra="ignore")

    api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("GOOGLE_API_KEY", "GEMINI_API_KEY"))
    use_vertexai: bool = Field(False, validation_alias="GOOGLE_GENAI_USE_VERTEXAI")
    project: str | None = Field(None, validation_alias="GOOGLE_CLOUD_PROJECT")
    location: str | None = Field(None, validation_alias="GOOGLE_CLOUD_LOCATION")

    @classmethod
    def from_env(cls) -> GeminiCredentials:
        """Read and check the environment, failing with one line that names the variables to set."""
        try:
            credentials = cls()
        except ValidationError as exc:
            fields = ", ".join(str(error["loc"][0]) for error in exc.errors())
            raise CredentialsError(
                f"Invalid Gemini credential settings ({fields}). {_MISSING_CREDENTIALS}"
            ) from None
        credentials.check()
        return credentials

    def check(self) -> None:
        if self.use_vertexai:
            if not (self.project and self.location):
                raise CredentialsError(
                    "GOOGLE_GENAI_USE_VERTEXAI is set: also set GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION."
                )
        elif self.api_key is None or not self.api_key.get_secret_value().strip():
            raise CredentialsError(_MISSING_CREDENTIALS)


class GeminiProvider:
    """Gemini via ``client.aio.models.generate_content``: one HTTP request per ``complete`` call."""

    name = "gemini"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60,
        credentials: GeminiCredentials | None = None,
        api_key: str | None = None,
        convert_per_call: bool = False,
    ) -> None:
        """``api_key`` (the Lambda's, from its secret store) stands for API-key ``credentials``;
        ``convert_per_call`` builds every request with the SDK's public converters instead of the
        per-candidate templates (``PROMPTGRADE_GEMINI_CONVERT_PER_CALL``, read by the lab's caller)."""
        if api_key is not None:
            credentials = GeminiCredentials(api_key=SecretStr(api_key), use_vertexai=False)
        if credentials is None:
            credentials = GeminiCredentials.from_env()
        else:
            credentials.check()
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._secret = credentials.api_key.get_secret_value() if credentials.api_key else None
        http_options = types.HttpOptions(
            base_url=base_url,  # None lets the SDK apply GOOGLE_GEMINI_BASE_URL / GOOGLE_VERTEX_BASE_URL
            timeout=max(1, round(timeout_s * 1000)),
            # attempts=1 stops tenacity retrying 429/5xx, and a non-empty retry_options also stops the
            # SDK's hidden retry of aiohttp connection errors (a 1–10 s sleep then a second request).
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        if credentials.use_vertexai:
            make = functools.partial(
                genai.Client, vertexai=True, project=credentials.project, location=credentials.location
            )
        else:
            make = functools.partial(genai.Client, vertexai=False, api_key=self._secret)
        self._make_client = make
        self._http_options = http_options
        # built now, so bad settings fail before any call
        self._client = _with_shared_tls(make, http_options, api_key_client=not credentials.use_vertexai)
        # Off when switched off (e.g. to measure what templates save) or once the SDK's private converters
        # are found missing: the public generate_content is used for every call from then on.
        self._use_templates = not convert_per_call
        self._bound: _LoopClient | None = None
        self._configs: dict[tuple[object, ...], types.GenerateContentConfig] = {}

    @property
    def converts_once(self) -> bool:
        """Whether requests are built from per-candidate templates (see ``gemini_wire``)."""
        return self._use_templates

    def _loop_client(self) -> _LoopClient:
        """The client (and its HTTP session) for the running event loop.

        The SDK's own aiohttp session trusts the environment, which costs two thread-pool hops per
        request (a ~/.netrc read and a proxy lookup: ~0.9 ms of CPU per call here). Ours resolves the
        environment's proxy once per loop and passes it to the session, so HTTPS_PROXY/NO_PROXY still
        apply; only ~/.netrc is not read (Gemini authenticates by header, never by netrc).
        """
        loop = asyncio.get_running_loop()
        bound = self._bound
        if bound is not None and bound.loop is loop:
            return bound
        session = _session(self._client) if aiohttp is not None else None
        client = (
            self._make_client(
                http_options=self._http_options.model_copy(
                    update={"aiohttp_client": session, **_tls_of(self._client)}
                )
            )
            if session is not None
            else self._client
        )
        templates = RequestTemplates(client.aio._api_client, self.model) if self._use_templates else None
        self._bound = _LoopClient(loop, client, session, templates)
        return self._bound

    def __repr__(self) -> str:
        return (
            f"GeminiProvider(model={self.model!r}, base_url={self.base_url!r}, timeout_s={self.timeout_s!r})"
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        settings_key = (
            request.settings,
            json.dumps(request.response_schema, sort_keys=True) if request.response_schema else None,
        )
        config = self._configs.get(settings_key)
        if config is None:
            config = self._configs[settings_key] = _config(request)
        bound = self._loop_client()
        template = self._template(bound, request, config, settings_key)
        started = time.perf_counter()
        try:
            if template is not None and bound.templates is not None:
                body = template.fill(request.image.data)
                http = await bound.client.aio._api_client.async_request("post", template.path, body, None)
                plain = _plain_completion(http.body, _elapsed_ms(started))
                if plain is not None:
                    return self._redacted(plain)
                response = bound.templates.parse(template, http.body)
            else:
                response = await bound.client.aio.models.generate_content(
                    model=self.model, contents=sdk_parts(request), config=config
                )
        except genai_errors.APIError as exc:
            return self._failed(_api_error(exc), started)
        except _TIMEOUT_ERRORS as exc:
            message = _describe(exc, f"no response within {self.timeout_s} s")
            return self._failed(ErrorInfo(ErrorKind.TIMEOUT, message), started)
        except google.auth.exceptions.GoogleAuthError as exc:
            if isinstance(exc, google.auth.exceptions.TransportError):
                return self._failed(ErrorInfo(ErrorKind.CONNECTION, _describe(exc)), started)
            return self._failed(ErrorInfo(ErrorKind.AUTH, _describe(exc)), started)
        except _CONNECTION_ERRORS as exc:
            return self._failed(ErrorInfo(ErrorKind.CONNECTION, _describe(exc)), started)
        except ValueError as exc:  # JSONDecodeError, UnknownApiResponseError, pydantic ValidationError
            return self._failed(
                ErrorInfo(ErrorKind.MALFORMED, _describe(exc, "unreadable response")), started
            )
        return self._redacted(_completion(response, _elapsed_ms(started)))

    def _template(
        self,
        bound: _LoopClient,
        request: CompletionRequest,
        config: types.GenerateContentConfig,
        settings_key: tuple[object, ...],
    ) -> Any:
        if bound.templates is None:
            return None
        try:
            return bound.templates.request(request, config, template_key(request, settings_key))
        except (AttributeError, TypeError, LookupError, KeyError) as exc:
            log.warning(
                "google-genai's request converters changed (%s): using generate_content per call", exc
            )
            self._use_templates = False
            bound.templates = None
            return None

    async def aclose(self) -> None:
        """Release the HTTP sessions of the running loop; the next call opens new ones."""
        bound, self._bound = self._bound, None
        if bound is not None and bound.session is not None:
            await bound.session.close()
        if bound is not None and bound.client is not self._client:
            await bound.client.aio.aclose()
        await self._client.aio.aclose()

    def _failed(self, error: ErrorInfo, started: float) -> Completion:
        return failed(error, started, self._secret)

    def _redacted(self, completion: Completion) -> Completion:
        return redacted(completion, self._secret)


@dataclasses.dataclass
class _LoopClient:
    loop: asyncio.AbstractEventLoop
    client: genai.Client
    session: Any  # aiohttp.ClientSession, or None when aiohttp is not installed (the SDK uses httpx)
    templates: RequestTemplates | None


def _tls_of(client: genai.Client) -> dict[str, Any]:
    """The TLS contexts ``client`` was built with, as HttpOptions fields a second client takes them from.

    Each ``genai.Client`` loads the CA bundle into three new contexts (~50 ms of CPU each on a small CI
    machine); the per-loop client is the same client again, so it reuses the first one's — the very
    objects the SDK chose (certifi or SSL_CERT_FILE, a client certificate for Vertex AI mTLS), and so the
    same endpoint decisions. Read from the SDK's private attributes: if they are gone, nothing is passed
    and the SDK builds its own, as before.
    """
    api = client._api_client
    verify = getattr(api, "_async_httpx_client_args", {}).get("verify")
    aiohttp_ssl = getattr(api, "_async_client_session_request_args", {}).get("ssl")
    if not isinstance(verify, ssl.SSLContext) or not isinstance(aiohttp_ssl, ssl.SSLContext):
        return {}
    return {"client_args": {"verify": verify}, "async_client_args": {"verify": verify, "ssl": aiohttp_ssl}}


# The TLS contexts of the first API-key client of this process, by the CA locations they were built from:
# every later provider (each sweep of a notebook or a test session builds one) takes them instead of
# loading the CA bundle into three new contexts. The key is what the ssl module reports — SSL_CERT_FILE and
# SSL_CERT_DIR, the variables the SDK reads, or OpenSSL's defaults — so a changed variable gets contexts of
# its own (read through ssl, not os.environ: only promptgrade.settings reads the environment, and the
# providers ship without it). Not for Vertex AI, whose contexts may carry a client certificate of its own.
_SHARED_TLS: dict[tuple[str | None, str | None], dict[str, Any]] = {}


def _with_shared_tls(
    make: Callable[..., genai.Client], http_options: types.HttpOptions, *, api_key_client: bool
) -> genai.Client:
    if not api_key_client:
        return make(http_options=http_options)
    paths = ssl.get_default_verify_paths()
    key = (paths.cafile, paths.capath)
    shared = _SHARED_TLS.get(key)
    if shared:  # fresh dicts around the same contexts: the SDK may edit the arguments it is given
        return make(http_options=http_options.model_copy(update={k: dict(v) for k, v in shared.items()}))
    client = make(http_options=http_options)
    if tls := _tls_of(client):
        _SHARED_TLS[key] = tls
    return client


def _session(client: genai.Client) -> Any:
    """An aiohttp session like the SDK's, without a per-request environment lookup."""
    base_url = client._api_client._http_options.base_url or ""
    proxy = proxy_auth = None
    with contextlib.suppress(LookupError, ValueError):
        proxy, proxy_auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(base_url))
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        trust_env=False,
        proxy=proxy,
        proxy_auth=proxy_auth,
        read_bufsize=2**22,  # the SDK's READ_BUFFER_SIZE: a long answer is read in one go
    )


def _config(request: CompletionRequest) -> types.GenerateContentConfig:
    settings = request.settings
    structured = settings.structured_output
    return types.GenerateContentConfig(
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_output_tokens=settings.max_output_tokens,
        seed=settings.seed,
        media_resolution=_MEDIA_RESOLUTION[settings.media_resolution] if settings.media_resolution else None,
        thinking_config=(
            types.ThinkingConfig(thinking_budget=settings.thinking_budget)
            if settings.thinking_budget is not None
            else None
        ),
        response_mime_type="application/json" if structured else None,
        # response_json_schema takes plain JSON Schema (what pydantic emits); response_schema wants
        # the OpenAPI subset and would reject $defs, anyOf with null, etc.
        response_json_schema=request.response_schema if structured else None,
        automatic_continuation=False,  # a CONTINUATION answer must not turn into a second request
    )


def _completion(response: types.GenerateContentResponse, latency_ms: float) -> Completion:
    usage = response.usage_metadata
    input_tokens = (usage.prompt_token_count or 0) if usage else 0
    output_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0
    answer = functools.partial(
        _answer,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        model_version=response.model_version,
    )
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = _enum_name(feedback.block_reason)
        return answer(None, None, ErrorInfo(ErrorKind.BLOCKED, f"prompt blocked: {reason}"))
    if not response.candidates:
        return answer(None, None, ErrorInfo(ErrorKind.EMPTY, "no candidates in the response"))
    candidate = response.candidates[0]
    finish = _enum_name(candidate.finish_reason) if candidate.finish_reason is not None else None
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    return answer("".join(part.text for part in parts if part.text and not part.thought) or None, finish)


def _answer(
    text: str | None,
    finish: str | None,
    error: ErrorInfo | None = None,
    *,
    input_tokens: int,
    output_tokens: int,
    latency_ms: float,
    model_version: str | None,
) -> Completion:
    """The first candidate's text and finish reason judged: blocked, truncated, empty or an answer."""
    if error is None and finish in _BLOCKED_FINISH:
        text, error = None, ErrorInfo(ErrorKind.BLOCKED, f"answer blocked: finish reason {finish}")
    elif error is None and finish == "MAX_TOKENS":
        error = ErrorInfo(ErrorKind.TRUNCATED, "answer stopped at max_output_tokens")
    elif error is None and text is None:
        error = ErrorInfo(ErrorKind.EMPTY, f"no text in the answer (finish reason {finish})")
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        finish_reason=finish,
        error=error,
        model_version=model_version,
    )


_PLAIN_FINISH = frozenset({"STOP", "MAX_TOKENS"})
_PLAIN_PART_KEYS = frozenset({"text", "thought", "thoughtSignature"})
_PLAIN_USAGE = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")


def _plain_completion(body: str | None, latency_ms: float) -> Completion | None:
    """An ordinary answer read straight from the response's JSON; ``None`` for anything else.

    Why: google-genai reads every response into its pydantic ``GenerateContentResponse`` through its
    converters — 130 µs of the event loop's CPU per answer on this machine, the largest single cost
    of a sweep's request phase after the HTTP itself. An ordinary answer — one candidate whose parts
    are text (thoughts flagged), finished by STOP or MAX_TOKENS, token counts as numbers — needs a
    handful of its fields, read here as the REST reference names them. Any other shape (a blocked
    prompt, another finish reason, a part that is not text, a field of an unexpected type) returns
    ``None``, and the SDK reads the response as before: its reading stays the reference, and
    tests/providers/test_gemini_plain.py checks that both give the same ``Completion``.
    """
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(data, dict) or "promptFeedback" in data:
        return None
    candidates, usage = data.get("candidates"), data.get("usageMetadata", {})
    if not isinstance(candidates, list) or not candidates or not isinstance(usage, dict):
        return None
    candidate = candidates[0]
    if not isinstance(candidate, dict) or candidate.get("finishReason") not in _PLAIN_FINISH:
        return None
    content = candidate.get("content")
    parts = content.get("parts", []) if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return None
    texts: list[str] = []
    for part in parts:
        if not isinstance(part, dict) or not part.keys() <= _PLAIN_PART_KEYS:
            return None
        text, thought = part.get("text"), part.get("thought", False)
        if not isinstance(text, str) or not isinstance(thought, bool):
            return None
        if text and not thought:
            texts.append(text)
    counts = [usage.get(key, 0) for key in _PLAIN_USAGE]
    model_version = data.get("modelVersion")
    if not all(type(count) is int for count in counts) or not isinstance(model_version, str | None):
        return None
    prompt, answered, thoughts = counts
    return _answer(
        "".join(texts) or None,
        candidate["finishReason"],
        input_tokens=prompt,
        output_tokens=answered + thoughts,
        latency_ms=latency_ms,
        model_version=model_version,
    )


def _api_error(exc: genai_errors.APIError) -> ErrorInfo:
    code = exc.code
    status = exc.status or ""
    message = _one_line(f"HTTP {code} {status}: {exc.message or ''}".replace(" :", ":"))
    if code == 429:
        retry_after, quota_ids = _rpc_details(exc.details)
        per_day = any("PerDay" in quota_id for quota_id in quota_ids)
        kind = ErrorKind.QUOTA_EXHAUSTED if per_day else ErrorKind.RATE_LIMITED
        return ErrorInfo(kind, message, code, retry_after)
    return ErrorInfo(status_kind(code), message, code)


def _rpc_details(body: Any) -> tuple[float | None, list[str]]:
    """RetryInfo's delay and QuotaFailure's quota ids from a google.rpc error body, if present."""
    error = body.get("error", body) if isinstance(body, dict) else {}
    details = error.get("details") if isinstance(error, dict) else None
    retry_after: float | None = None
    quota_ids: list[str] = []
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.RetryInfo"):
            retry_after = _duration_s(detail.get("retryDelay"))
        elif kind.endswith("google.rpc.QuotaFailure"):
            violations = detail.get("violations")
            for violation in violations if isinstance(violations, list) else []:
                if isinstance(violation, dict):
                    quota_ids.append(str(violation.get("quotaId", "")))
    return retry_after, quota_ids


def _duration_s(value: Any) -> float | None:
    """A protobuf Duration in JSON form ("7s", "0.5s", "1.000340s") as seconds."""
    if isinstance(value, dict):  # the rare non-JSON-mapped form {"seconds": 7, "nanos": 0}
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(value or ""))
    return float(match.group(1)) if match else None


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException, fallback: str = "") -> str:
    detail = str(exc) or fallback
    return _one_line(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
