"""Fixtures for the Lambda tests: a real promoted bundle, moto's AWS, the fake Gemini, a local HTTPS host.

Nothing leaves the machine: the model is ``FakeGemini`` on 127.0.0.1, AWS is moto in-process, and
``url`` inputs are served by an HTTPS server on 127.0.0.1 with a certificate made here.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers.bundles import promoted_bundle, released_prompt
from helpers.deployed import deploy_locally, fake_aws
from helpers.lambda_events import HOSTNAMES, ImageHost, make_jpeg
from lambda_handler import app
from promptgrade.bundle import Bundle, load_bundle
from promptgrade.providers.base import GenerationSettings
from promptgrade.testing.gemini_server import FakeGemini


@pytest.fixture(autouse=True)
def fresh_container() -> Iterator[None]:
    """Each test is a cold start: no bundle, provider, key or S3 client carried over."""
    app.reset()
    yield
    app.reset()


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A bundle as `promote` writes it, from the released meal-tray JSON prompt and the real task."""
    settings = GenerationSettings(structured_output=True, temperature=0.0)
    return promoted_bundle(tmp_path / "bundle", released_prompt(), settings=settings)


@pytest.fixture
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in-process, with fake credentials so no developer profile is ever used."""
    with fake_aws(monkeypatch):
        yield


@pytest.fixture
def lambda_env(
    monkeypatch: pytest.MonkeyPatch, aws: None, bundle_dir: Path, gemini_server: FakeGemini
) -> FakeGemini:
    """A deployed function: bundle on disk, key in Secrets Manager, model at the fake server."""
    return deploy_locally(monkeypatch, bundle_dir, gemini_server)


@pytest.fixture
def tray_jpeg() -> bytes:
    return make_jpeg((200, 120, 40))


# -- a local HTTPS image host -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the test host names (and 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAMES[0])])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(h) for h in HOSTNAMES] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def image_host(certificate: tuple[Path, Path]) -> Iterator[ImageHost]:
    cert_path, key_path = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    host = ImageHost(port=0, cert_path=cert_path)
    context.sni_callback = lambda _sock, server_name, _ctx: host.sni_seen.append(server_name)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Silent."""

        def do_GET(self) -> None:
            host.hosts_seen.append(self.headers.get("Host", ""))
            if host.slow_s:
                time.sleep(host.slow_s)
            status, headers, body = host.routes.get(self.path, (404, {}, b"not found"))
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # broken pipe, reset, TLS EOF
                pass  # the client stopped reading, as it should past a size limit

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    host.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
