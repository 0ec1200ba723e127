"""A caller's ``url`` or ``s3_uri`` is fetched safely: https only, public addresses only, bounded.

DNS is simulated by replacing ``socket.getaddrinfo`` as fetch sees it; the positive path is a real
TLS exchange with an HTTPS server on 127.0.0.1 whose self-signed certificate names the test hosts,
reached through an address policy widened for loopback — the default refuses it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import boto3
import pytest

from helpers.lambda_events import ImageHost, make_jpeg, make_noise_jpeg
from lambda_handler import fetch
from lambda_handler.fetch import FetchError, fetch_s3, fetch_url, parse_s3_uri, public_only

LIMIT = 1_000_000
JPEG = make_jpeg((10, 200, 30))


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], list[str]]:
    """Install fake DNS answers; returns the list of names that were looked up."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def install(answers: dict[str, list[str]]) -> list[str]:
        def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
            looked_up.append(host)
            if host not in answers:
                return real(host, port, *args, **kwargs)
            return [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in answers[host]
            ]

        monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)
        return looked_up

    return install


def allow_loopback(address: fetch.IPAddress) -> bool:
    return address.is_loopback or public_only(address)


def fetch_from(host: ImageHost, path: str, **options: object) -> fetch.Fetched:
    options = {
        "max_bytes": LIMIT,
        "address_policy": allow_loopback,
        "ssl_context": host.client_context(),
    } | options
    return fetch_url(host.url(path), **options)  # type: ignore[arg-type]


def refused(call: Callable[[], object]) -> FetchError:
    with pytest.raises(FetchError) as caught:
        call()
    return caught.value


# -- the address policy --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # instance metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",  # instance metadata over IPv6
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:a9fe:a9fe::1",  # 6to4 wrapping 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ],
)
def test_the_default_policy_refuses_non_public_addresses(address: str) -> None:
    assert not public_only(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_the_default_policy_allows_public_addresses(address: str) -> None:
    assert public_only(ipaddress.ip_address(address))


# -- refusals before any connection --------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.test/tray.jpg",
        "ftp://images.example.test/tray.jpg",
        "file:///etc/passwd",
        "//x/y",
    ],
)
def test_only_https_is_fetched(dns: Callable[..., list[str]], url: str) -> None:
    looked_up = dns({})
    error = refused(lambda: fetch_url(url, max_bytes=LIMIT))

    assert (error.status, error.code) == (400, "url_not_allowed")
    assert looked_up == []  # refused before any DNS lookup


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@images.example.test/tray.jpg",
        "https://images.example.test:99999/tray.jpg",
        "https:///tray.jpg",
        "https://images.example.test/tray 1.jpg",
        "https://images.example.test/" + "a" * 3000,
        42,
    ],
    ids=["credentials", "bad-port", "no-host", "space", "too-long", "not-a-string"],
)
def test_malformed_urls_are_400(url: object) -> None:
    error = refused(lambda: fetch_url(url, max_bytes=LIMIT))

    assert (error.status, error.code) == (400, "invalid_url")


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1"], ["10.0.0.7"], ["169.254.169.254"], ["::1"], ["93.184.215.14", "10.0.0.7"]],
    ids=["loopback", "private", "metadata", "ipv6-loopback", "one-public-one-private"],
)
def test_a_host_resolving_to_an_internal_address_is_refused(
    dns: Callable[..., list[str]], answers: list[str]
) -> None:
    dns({"images.example.test": answers})

    error = refused(lambda: fetch_url("https://images.example.test/tray.jpg", max_bytes=LIMIT))

    assert (error.status, error.code) == (400, "url_not_allowed")
    assert not any(ip in error.message for ip in answers)  # the internal network is not described


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://[::1]/",
        "https://[::ffff:169.254.169.254]/",
        "https://0.0.0.0/",
        "https://2130706433/",  # 127.0.0.1 as one decimal number
    ],
)
def test_internal_ip_literals_are_refused(url: str) -> None:
    assert refused(lambda: fetch_url(url, max_bytes=LIMIT)).code == "url_not_allowed"


def test_the_lambda_runtime_api_is_refused_even_when_loopback_is_allowed(
    image_host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", f"127.0.0.1:{image_host.port}")
    image_host.routes["/2018-06-01/runtime/invocation/next"] = (200, {"Content-Type": "image/jpeg"}, JPEG)

    error = refused(
        lambda: fetch_url(
            f"https://127.0.0.1:{image_host.port}/2018-06-01/runtime/invocation/next",
            max_bytes=LIMIT,
            address_policy=allow_loopback,
            ssl_context=image_host.client_context(),
        )
    )

    assert error.code == "url_not_allowed"
    assert image_host.hosts_seen == []


def test_an_unresolvable_host_is_400(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(*_: object, **__: object) -> list[tuple]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(fetch.socket, "getaddrinfo", no_such_name)

    assert refused(lambda: fetch_url("https://nowhere.example.test/", max_bytes=LIMIT)).code == "fetch_failed"


# -- the real exchange ---------------------------------------------------------------------------------
def test_an_image_is_fetched_from_the_checked_address_with_the_host_name_in_tls_and_host(
    image_host: ImageHost, dns: Callable[..., list[str]]
) -> None:
    looked_up = dns({"images.example.test": ["127.0.0.1"]})
    image_host.routes["/trays/1.jpg?size=large"] = (200, {"Content-Type": "image/jpeg"}, JPEG)

    fetched = fetch_from(image_host, "/trays/1.jpg?size=large")

    assert fetched.data == JPEG
    assert fetched.content_type == "image/jpeg"
    assert fetched.source == image_host.url("/trays/1.jpg?size=large")
    assert image_host.sni_seen == ["images.example.test"]
    assert image_host.hosts_seen == [f"images.example.test:{image_host.port}"]
    assert looked_up.count("images.example.test") == 1  # resolved once: no second lookup to rebind


def test_a_non_ascii_path_is_sent_percent_encoded(
    image_host: ImageHost, dns: Callable[..., list[str]]
) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    image_host.routes["/plateaux/d%C3%A9jeuner%201.jpg"] = (200, {"Content-Type": "image/jpeg"}, JPEG)

    assert fetch_from(image_host, "/plateaux/déjeuner%201.jpg").data == JPEG


def test_an_image_without_an_image_content_type_is_accepted_by_its_bytes(
    image_host: ImageHost, dns: Callable[..., list[str]]
) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    image_host.routes["/blob"] = (200, {"Content-Type": "application/octet-stream"}, JPEG)

    assert fetch_from(image_host, "/blob").data == JPEG


def test_a_certificate_that_is_not_trusted_is_refused(
    image_host: ImageHost, dns: Callable[..., list[str]]
) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    image_host.routes["/tray.jpg"] = (200, {"Content-Type": "image/jpeg"}, JPEG)

    error = refused(
        lambda: fetch_url(image_host.url("/tray.jpg"), max_bytes=LIMIT, address_policy=allow_loopback)
    )

    assert (error.status, error.code) == (400, "fetch_failed")
    assert "TLS" in error.message


def test_a_redirect_is_followed_and_checked_like_the_first_hop(
    image_host: ImageHost, dns: Callable[..., list[str]]
) -> None:
    dns({"images.example.test": ["127.0.0.1"], "cdn.example.test": ["127.0.0.1"]})
    image_host.routes["/old.jpg"] = (
        302,
        {"Location": image_host.url("/new.jpg", host="cdn.example.test")},
        b"",
    )
    image_host.routes["/new.jpg"] = (200, {"Content-Type": "image/jpeg"}, JPEG)

    fetched = fetch_from(image_host, "/old.jpg")

    assert fetched.data == JPEG
    assert fetched.source == image_host.url("/new.jpg", host="cdn.example.test")
    assert image_host.sni_seen == ["images.example.test", "cdn.example.test"]


@pytest.mark.parametrize(
    "location",
    [
        "https://internal.example.test/admin",
        "https://169.254.169.254/latest/meta-data/",
        "http://images.example.test/tray.jpg",
    ],
    ids=["host-resolving-private", "metadata-ip", "downgrade-to-http"],
)
def test_a_redirect_to_a_forbidden_place_is_refused(
    image_host: ImageHost, dns: Callable[..., list[str]], location: str
) -> None:
    """The first hop is allowed (loopback, for the test); the hop it points to is not."""
    dns({"images.example.test": ["127.0.0.1"], "internal.example.test": ["10.0.0.7"]})
    image_host.routes["/tray.jpg"] = (301, {"Location": location}, b"")
    policy_without_private = allow_loopback  # loopback only: 10/8 and 169.254/16 stay refused

    error = refused(lambda: fetch_from(image_host, "/tray.jpg", address_policy=policy_without_private))

    assert (error.status, error.code) == (400, "url_not_allowed")
    assert len(image_host.hosts_seen) == 1  # only the first hop was contacted


def test_more_than_three_redirects_are_refused(image_host: ImageHost, dns: Callable[..., list[str]]) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    for hop in range(5):
        image_host.routes[f"/{hop}"] = (307, {"Location": f"/{hop + 1}"}, b"")
    image_host.routes["/5"] = (200, {"Content-Type": "image/jpeg"}, JPEG)

    error = refused(lambda: fetch_from(image_host, "/0"))

    assert error.code == "too_many_redirects"
    assert len(image_host.hosts_seen) == 4  # the first request and three redirects


def test_an_oversize_image_is_refused_by_its_declared_length(
    image_host: ImageHost, dns: Callable[..., list[str]]
) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    big = make_noise_jpeg((300, 300))
    image_host.routes["/big.jpg"] = (
        200,
        {"Content-Type": "image/jpeg", "Content-Length": str(len(big))},
        big,
    )

    error = refused(lambda: fetch_from(image_host, "/big.jpg", max_bytes=len(big) - 1))

    assert (error.status, error.code) == (413, "payload_too_large")


def test_an_oversize_stream_without_a_length_is_cut_off_while_reading(
    image_host: ImageHost, dns: Callable[..., list[str]]
) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    endless = JPEG + b"\0" * 5_000_000  # no Content-Length: the server just keeps sending
    image_host.routes["/stream.jpg"] = (200, {"Content-Type": "image/jpeg"}, endless)

    error = refused(lambda: fetch_from(image_host, "/stream.jpg", max_bytes=200_000))

    assert (error.status, error.code) == (413, "payload_too_large")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", b"<!doctype html><html><body>Please sign in</body></html>"),
        ("application/json", b'{"error": "not found"}' + b" " * 100),
        (None, b"just some text that is long enough to be sniffed and is not an image at all"),
    ],
    ids=["html", "json", "untyped-text"],
)
def test_content_that_is_not_an_image_is_415(
    image_host: ImageHost, dns: Callable[..., list[str]], content_type: str | None, body: bytes
) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    headers = {"Content-Type": content_type} if content_type else {}
    image_host.routes["/page"] = (200, headers, body)

    error = refused(lambda: fetch_from(image_host, "/page"))

    assert (error.status, error.code) == (415, "unsupported_media_type")


def test_an_http_error_from_the_host_is_400(image_host: ImageHost, dns: Callable[..., list[str]]) -> None:
    dns({"images.example.test": ["127.0.0.1"]})

    error = refused(lambda: fetch_from(image_host, "/missing.jpg"))

    assert (error.status, error.code) == (400, "fetch_failed")
    assert "404" in error.message


def test_a_slow_host_is_504(image_host: ImageHost, dns: Callable[..., list[str]]) -> None:
    dns({"images.example.test": ["127.0.0.1"]})
    image_host.routes["/slow.jpg"] = (200, {"Content-Type": "image/jpeg"}, JPEG)
    image_host.slow_s = 1.5

    error = refused(lambda: fetch_from(image_host, "/slow.jpg", timeout_s=0.3))

    assert (error.status, error.code) == (504, "fetch_timeout")


# -- S3 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://trays/2025/11/tray 1.jpg", ("trays", "2025/11/tray 1.jpg")),
        ("s3://my.bucket-01/a?b#c", ("my.bucket-01", "a?b#c")),
    ],
)
def test_s3_uris_are_parsed_literally(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "s3://trays",
        "s3://trays/",
        "s3:/trays/k",
        "https://trays.s3.amazonaws.com/k",
        "s3://Trays/k",
        "s3://a/k",
        None,
    ],
)
def test_loose_s3_uris_are_refused(uri: object) -> None:
    assert refused(lambda: parse_s3_uri(uri)).code == "invalid_s3_uri"


def test_an_s3_object_over_the_limit_is_refused_before_it_is_downloaded(aws: None) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="trays", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="trays", Key="big.jpg", Body=b"\xff\xd8\xff" + b"\0" * 5000)
    operations: list[str] = []
    s3.meta.events.register("before-call.s3.*", lambda model, **_: operations.append(model.name))

    error = refused(lambda: fetch_s3(s3, "trays", "big.jpg", max_bytes=4000))

    assert (error.status, error.code) == (413, "payload_too_large")
    assert operations == ["HeadObject"]


def test_an_s3_object_is_read_and_a_missing_one_is_400(aws: None) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="trays", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="trays", Key="t.jpg", Body=JPEG, ContentType="image/jpeg")

    fetched = fetch_s3(s3, "trays", "t.jpg", max_bytes=LIMIT)
    assert (fetched.data, fetched.content_type, fetched.source) == (JPEG, "image/jpeg", "s3://trays/t.jpg")

    assert refused(lambda: fetch_s3(s3, "trays", "nope.jpg", max_bytes=LIMIT)).code == "s3_not_found"
    assert refused(lambda: fetch_s3(s3, "no-such-bucket", "t.jpg", max_bytes=LIMIT)).code == "s3_not_found"
