"""Realistic Lambda events and test images, shaped like what AWS really sends.

Trimmed from the documented examples of each service, keeping every field a handler might (wrongly)
rely on, so detection is tested against the real shapes rather than minimal dicts.
"""

from __future__ import annotations

import base64
import json
import random
import ssl
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote_plus

from PIL import Image

MODEL = "gemini-test-flash"
# Distinctive, so that finding it in a log line or a response means a real leak.
API_KEY = "pg-test-key-7c1e9d"
SECRET_ID = "promptgrade/gemini-api-key"
HOSTNAMES = ("images.example.test", "cdn.example.test")


@dataclass
class ImageHost:
    """What the HTTPS server serves and what it saw; routes may be added while it runs."""

    port: int
    cert_path: Path
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    slow_s: float = 0.0
    hosts_seen: list[str] = field(default_factory=list)  # Host headers
    sni_seen: list[str | None] = field(default_factory=list)

    def url(self, path: str, host: str = HOSTNAMES[0]) -> str:
        return f"https://{host}:{self.port}{path}"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_path))


def context(request_id: str = "8f5e2c1a-0d4b-4c1e-9a77-3f2b1d6e0c55") -> Any:
    """A Lambda context with the attributes the runtime provides."""
    return SimpleNamespace(
        aws_request_id=request_id,
        function_name="promptgrade-grade",
        memory_limit_in_mb=1024,
        invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:promptgrade-grade",
        get_remaining_time_in_millis=lambda: 29_000,
    )


def make_jpeg(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 16):  # a pattern, so the image is not trivially compressible
        for y in range(0, size[1], 16):
            image.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    out = BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_png(color: tuple[int, int, int, int], size: tuple[int, int] = (200, 150)) -> bytes:
    out = BytesIO()
    Image.new("RGBA", size, color).save(out, format="PNG")
    return out.getvalue()


def make_noise_jpeg(size: tuple[int, int], seed: int = 7) -> bytes:
    """A photo-sized file: noise does not compress, so the byte count follows the pixel count."""
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    out = BytesIO()
    Image.frombytes("RGB", size, pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def http_api_v2(
    body: str | bytes | dict[str, Any] | None,
    *,
    content_type: str | None = "application/json",
    method: str = "POST",
    base64_encoded: bool | None = None,
    request_id: str = "JKJaXmPLvHcESHA=",
) -> dict[str, Any]:
    """API Gateway HTTP API / function URL, payload format 2.0 (headers arrive lower-cased)."""
    text, encoded = _body(body, base64_encoded)
    headers = {
        "accept": "*/*",
        "host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "curl/8.5.0",
        "x-forwarded-for": "203.0.113.9",
        "x-forwarded-proto": "https",
    }
    if content_type is not None:
        headers["content-type"] = content_type
    return {
        "version": "2.0",
        "routeKey": "POST /grade",
        "rawPath": "/grade",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {
                "method": method,
                "path": "/grade",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "curl/8.5.0",
            },
            "requestId": request_id,
            "routeKey": "POST /grade",
            "stage": "$default",
            "time": "26/Nov/2025:07:10:00 +0000",
            "timeEpoch": 1764141000000,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def rest_api_v1(
    body: str | bytes | dict[str, Any] | None,
    *,
    content_type: str | None = "application/json",
    method: str = "POST",
    base64_encoded: bool | None = None,
    request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
) -> dict[str, Any]:
    """API Gateway REST API Lambda proxy integration, payload format 1.0 (headers keep their case)."""
    text, encoded = _body(body, base64_encoded)
    headers = {"Accept": "*/*", "Host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return {
        "resource": "/grade",
        "path": "/grade",
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "httpMethod": method,
            "identity": {"sourceIp": "203.0.113.9", "userAgent": "curl/8.5.0"},
            "path": "/prod/grade",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "resourcePath": "/grade",
            "stage": "prod",
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def s3_object_created(
    bucket: str, key: str, size: int, event_name: str = "ObjectCreated:Put"
) -> dict[str, Any]:
    """An S3 event notification; S3 URL-encodes the key (a space becomes '+')."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "eu-west-1",
                "eventTime": "2025-11-26T07:10:00.000Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "203.0.113.9"},
                "responseElements": {
                    "x-amz-request-id": "C3D13FE58DE4C810",
                    "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "grade-new-trays",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "sequencer": "0055AED6DCD90281E5",
                    },
                },
            }
        ]
    }


def body_json(response: dict[str, Any]) -> dict[str, Any]:
    assert response["headers"]["content-type"] == "application/json"
    return json.loads(response["body"])


def _body(body: str | bytes | dict[str, Any] | None, base64_encoded: bool | None) -> tuple[str | None, bool]:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, bytes):
        return b64(body), True if base64_encoded is None else base64_encoded
    return body, bool(base64_encoded)
