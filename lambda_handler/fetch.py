"""Download a caller's image from an https URL or an S3 URI without letting the caller aim us inward.

A ``url`` in a request turns this function into an HTTP client for whoever can call it. Unchecked, a
caller could make it read the instance metadata service (169.254.169.254), the Lambda runtime API or
anything else in the VPC, and learn about it from the error it gets back. So every hop is resolved,
*every* address it resolves to is checked, and the connection goes to the checked address — never
re-resolved, which would let DNS answer differently the second time — while TLS and ``Host`` still
name the host. Size is limited while reading, not after, and the whole fetch has one deadline.

Standard library only (boto3, which the Lambda runtime provides, for S3), so the zip stays small.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from promptgrade.images import sniff_mime

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]
"""True if the function may connect to this address."""

MAX_REDIRECTS = 3
DEFAULT_TIMEOUT_S = 10.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SNIFF_BYTES = 64  # enough for every signature sniff_mime knows (BMP needs 26)
_CHUNK = 64 * 1024
_MAX_URL = 2048
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Bucket naming rules (3-63 lowercase letters, digits, dots, hyphens); the key is everything after.
_S3_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+)", re.DOTALL)


class FetchError(Exception):
    """Why an image could not be fetched, as the HTTP status and error code a client acts on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes = field(repr=False)
    content_type: str | None
    source: str  # the URL finally read (after redirects) or the s3:// URI


def public_only(address: IPAddress) -> bool:
    """The default policy: globally routable unicast addresses only.

    An IPv6 address that embeds an IPv4 one (mapped, 6to4, NAT64) is judged by the embedded
    address too, since that is where the packets end up.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not public_only(embedded):
            return False
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def parse_s3_uri(uri: Any) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); anything looser is refused rather than guessed at."""
    match = _S3_URI.fullmatch(uri) if isinstance(uri, str) else None
    if match is None or ".." in match["bucket"] or len(match["key"].encode("utf-8")) > 1024:
        raise FetchError(400, "invalid_s3_uri", "s3_uri must look like s3://bucket/key")
    return match["bucket"], match["key"]


def fetch_s3(client: Any, bucket: str, key: str, *, max_bytes: int) -> Fetched:
    """Read one object, refusing it by its size before downloading any of it.

    The GET is pinned to the HEAD's ETag, so an object replaced in between is not read unchecked;
    the read is still capped in case the store reports a size it then exceeds.
    """
    head = head_s3(client, bucket, key)
    check_size(head, max_bytes)
    return get_s3(client, head, max_bytes=max_bytes)


@dataclass(frozen=True, slots=True)
class Head:
    """What a HEAD tells of an object before any of it is read: enough to refuse it, or to know it."""

    bucket: str
    key: str
    etag: str
    size: int
    content_type: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def head_s3(client: Any, bucket: str, key: str) -> Head:
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{key}"
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise _s3_error(exc, uri) from None
    except BotoCoreError as exc:
        raise FetchError(502, "s3_error", f"cannot read {uri}: {type(exc).__name__}") from None
    return Head(bucket, key, str(head["ETag"]), int(head.get("ContentLength") or 0), head.get("ContentType"))


def check_size(head: Head, max_bytes: int) -> None:
    if head.size > max_bytes:
        raise FetchError(413, "payload_too_large", _too_large(head.size, max_bytes, head.uri))


def get_s3(client: Any, head: Head, *, max_bytes: int) -> Fetched:
    """The object's bytes, as long as it is still the one ``head`` saw (its ETag)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.get_object(Bucket=head.bucket, Key=head.key, IfMatch=head.etag)
        body = response["Body"]
        try:
            data = body.read(max_bytes + 1)
        finally:
            body.close()
    except ClientError as exc:
        raise _s3_error(exc, head.uri) from None
    except BotoCoreError as exc:
        raise FetchError(502, "s3_error", f"cannot read {head.uri}: {type(exc).__name__}") from None
    if len(data) > max_bytes:
        raise FetchError(413, "payload_too_large", _too_large(len(data), max_bytes, head.uri))
    return Fetched(data, head.content_type, head.uri)


def _s3_error(exc: Any, uri: str) -> FetchError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"} or status == 404:
        return FetchError(400, "s3_not_found", f"{uri} does not exist")
    if code in {"403", "AccessDenied", "Forbidden"} or status == 403:
        return FetchError(400, "s3_access_denied", f"this function may not read {uri}")
    if code in {"412", "PreconditionFailed"}:
        return FetchError(409, "s3_object_changed", f"{uri} changed while it was read; send it again")
    return FetchError(502, "s3_error", f"cannot read {uri}: S3 answered {code or status}")


def fetch_url(
    url: Any,
    *,
    max_bytes: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    address_policy: AddressPolicy = public_only,
    ssl_context: ssl.SSLContext | None = None,
    max_redirects: int = MAX_REDIRECTS,
) -> Fetched:
    """GET an image over https, checking every hop; errors are ``FetchError`` with an HTTP status.

    ``address_policy`` decides which resolved addresses may be connected to; the default refuses
    everything but public unicast. Tests pass a wider one (and an ``ssl_context`` trusting their
    self-signed certificate) to reach a server on 127.0.0.1.
    """
    deadline = time.monotonic() + timeout_s
    context = ssl_context or _default_ssl_context()
    current = url
    for _ in range(max_redirects + 1):
        host, port, target = _parse_url(current)
        address = _resolve(host, port, address_policy)
        try:
            outcome = _get(host, port, address, target, context, deadline, max_bytes)
        except TimeoutError:
            raise FetchError(
                504, "fetch_timeout", f"{host} did not send the image within {timeout_s:g} s"
            ) from None
        except ssl.SSLCertVerificationError:
            raise FetchError(400, "fetch_failed", f"{host} has no valid TLS certificate") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(
                400, "fetch_failed", f"cannot fetch from {host} ({type(exc).__name__})"
            ) from None
        if isinstance(outcome, Fetched):
            return outcome
        current = urljoin(current, outcome)
    raise FetchError(400, "too_many_redirects", f"more than {max_redirects} redirects")


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _parse_url(url: Any) -> tuple[str, int, str]:
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        raise FetchError(400, "invalid_url", f"url must be a string of at most {_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or 443
        host = parts.hostname
    except ValueError:
        raise FetchError(400, "invalid_url", "url is not a valid URL") from None
    if parts.scheme.lower() != "https":
        raise FetchError(400, "url_not_allowed", "only https:// URLs are fetched")
    if not host:
        raise FetchError(400, "invalid_url", "url has no host")
    if parts.username is not None or parts.password is not None:
        raise FetchError(400, "invalid_url", "url must not carry credentials")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise FetchError(400, "invalid_url", "url contains spaces or control characters")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise FetchError(400, "invalid_url", "url has an invalid host name") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # Non-ASCII paths are percent-encoded as a browser would; existing escapes are kept as they are.
    return host, port, quote(target, safe="/?&=%:@!$'()*+,;~-._[]")


def _runtime_api() -> tuple[str, int] | None:
    """The Lambda runtime API's host and port: the function must never fetch from itself."""
    value = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]").lower(), int(port)


def _resolve(host: str, port: int, policy: AddressPolicy) -> IPAddress:
    runtime_api = _runtime_api()
    if runtime_api is not None and (host.lower(), port) == runtime_api:
        raise FetchError(400, "url_not_allowed", "url points at the Lambda runtime API")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchError(400, "fetch_failed", f"cannot resolve {host}") from None
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    # Every address must pass, not just the one we would pick: a name with one public and one
    # private record is a rebinding setup, not a host to be trusted. The addresses themselves stay
    # out of the message, which would otherwise map the internal network for the caller.
    if not addresses or not all(policy(address) for address in addresses):
        raise FetchError(400, "url_not_allowed", f"{host} does not resolve to a public address")
    if runtime_api is not None and any((str(a), port) == runtime_api for a in addresses):
        raise FetchError(400, "url_not_allowed", "url points at the Lambda runtime API")
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to an address that was already checked, while SNI, certificate and Host name the host."""

    def __init__(
        self, host: str, port: int, address: IPAddress, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((str(self._address), self.port), self.timeout)
        try:
            # HTTPSConnection keeps its SSL context in _context, which typeshed does not declare
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _get(
    host: str,
    port: int,
    address: IPAddress,
    target: str,
    context: ssl.SSLContext,
    deadline: float,
    max_bytes: int,
) -> Fetched | str:
    """One GET: the image, or the Location of a redirect for the caller to check and follow."""
    connection = _PinnedHTTPSConnection(host, port, address, _remaining(deadline), context)
    try:
        connection.request("GET", target, headers={"User-Agent": "promptgrade-lambda", "Accept": "image/*"})
        response = connection.getresponse()
        if response.status in _REDIRECT_STATUSES:
            location = response.getheader("Location")
            if not location:
                raise FetchError(400, "fetch_failed", f"{host} redirected without a Location")
            return location
        if response.status != 200:
            raise FetchError(400, "fetch_failed", f"{host} answered HTTP {response.status}")
        url = f"https://{host}{'' if port == 443 else f':{port}'}{target}"
        length = response.getheader("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise FetchError(413, "payload_too_large", _too_large(int(length), max_bytes, url))
        content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        data = _read_image(response, deadline, max_bytes, content_type, url)
        return Fetched(data, content_type or None, url)
    finally:
        connection.close()


def _read_image(
    response: http.client.HTTPResponse, deadline: float, max_bytes: int, content_type: str, url: str
) -> bytes:
    """Read at most ``max_bytes``, giving up as soon as the first bytes show it is no image.

    The deadline is checked between reads, so a server trickling a byte at a time cannot hold the
    function past it by more than one socket timeout.
    """
    chunks: list[bytes] = []
    total = 0
    checked = False
    while chunk := response.read1(_CHUNK):
        _remaining(deadline)
        total += len(chunk)
        if total > max_bytes:
            raise FetchError(413, "payload_too_large", f"{url} is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not checked and total >= _SNIFF_BYTES:
            _require_image(content_type, b"".join(chunks), url)
            checked = True
    data = b"".join(chunks)
    if not checked:
        _require_image(content_type, data, url)
    return data


def _require_image(content_type: str, head: bytes, url: str) -> None:
    if content_type.startswith("image/") or sniff_mime(head) is not None:
        return
    shown = content_type or "no content type"
    raise FetchError(415, "unsupported_media_type", f"{url} is not an image ({shown})")


def _too_large(size: int, max_bytes: int, where: str) -> str:
    return f"{where} is {size} bytes, over the limit of {max_bytes} bytes"
