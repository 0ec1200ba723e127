"""What a sweep hands its tracking writer: small, picklable values, importable without mlflow."""

from __future__ import annotations

import json
import os
import socket
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


@dataclass(frozen=True)
class Owner:
    """The process running a sweep (the sweep's own, not its writer's)."""

    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid())

    def tag(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid})
