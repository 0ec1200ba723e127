"""Loopback ports for the servers the tests start as processes (mlflow, the fake Gemini command)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free now on 127.0.0.1; a process started right after takes it (no other test can, in time)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
