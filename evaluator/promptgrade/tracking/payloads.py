"""What a sweep hands its tracking writer: small, picklable values, importable without mlflow."""

from __future__ import annotations

from dataclasses import dataclass

from promptgrade.scoring import Outcome


@dataclass(frozen=True, slots=True)
class ExampleTrace:
    """What the sweep hands the writer for one answered example (small, picklable).

    ``ended_ns`` is the wall-clock time the answer was scored and ``outcome.latency_ms`` the model
    call's own latency, so the span covers the call, not the time spent logging it.
    """

    outcome: Outcome
    ended_ns: int
    image: bytes | None = None  # the prepared tray; the writer attaches a thumbnail of it
    image_mime: str | None = None
