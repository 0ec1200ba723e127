"""What ``backfill`` and ``monitor`` share about S3: a location the user names, paginated listings, clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from promptgrade.errors import PromptgradeError

# bucket naming rules (3-63 lowercase letters, digits, dots, hyphens); the prefix is everything after
_LOCATION = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?", re.DOTALL)


class ProductionError(PromptgradeError):
    """A backfill or a monitoring round cannot run as asked (a location, a queue, results, labels)."""


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str, what: str, *, folder: bool = False) -> S3Location:
        """``s3://bucket/prefix``; with ``folder`` the prefix ends in ``/`` (as the function's output
        prefix does), so ``results`` and ``results/`` name the same place."""
        match = _LOCATION.fullmatch(uri.strip())
        if match is None or ".." in match["bucket"]:
            raise ProductionError(f"{what} must look like s3://bucket/prefix, not {uri!r}")
        prefix = match["prefix"] or ""
        if folder and prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(match["bucket"], prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def pages(
    client: Any, location: S3Location, *, start_after: str | None = None, page_size: int = 1000
) -> Iterator[list[dict[str, Any]]]:
    """The objects under ``location``, a page (of at most ``page_size``) at a time, in key order."""
    from botocore.exceptions import BotoCoreError, ClientError

    options: dict[str, Any] = {"Bucket": location.bucket, "Prefix": location.prefix}
    if start_after:
        options["StartAfter"] = start_after
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(**options, PaginationConfig={"PageSize": page_size}):
            yield list(page.get("Contents", []))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ProductionError(f"cannot list {location}: {code}") from None
    except BotoCoreError as exc:
        raise ProductionError(f"cannot list {location}: {exc}") from None


def read_json(client: Any, bucket: str, key: str) -> Any:
    import json

    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            return json.loads(body.read())
        finally:
            body.close()
    except (ClientError, BotoCoreError, ValueError) as exc:
        raise ProductionError(f"cannot read s3://{bucket}/{key}: {type(exc).__name__}") from None


def clients(region: str | None, endpoint_url: str | None, *services: str) -> list[Any]:
    import boto3

    return [boto3.client(service, region_name=region, endpoint_url=endpoint_url) for service in services]
