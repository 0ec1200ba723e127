"""Whether a local port can be served, and if not, one line saying who holds it and what to do.

``promptgrade ui`` hands its port to MLflow's server by ``exec``: once exec'd, a busy port is MLflow's
traceback after our "MLflow UI at http://…" line, a URL it does not serve. ``fake-gemini`` binds the
port itself, where a busy port used to be an ``OSError`` traceback. Both check here first.

Standard library only (the local Gemini stand-in imports it).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from promptgrade.errors import PromptgradeError


class PortInUseError(PromptgradeError):
    """The port is taken (or not ours to take): the message names it, its holder if known, and a free one."""


def check_free(host: str, port: int, *, option: str = "--port") -> None:
    """Raise ``PortInUseError`` unless a server could listen on ``host``:``port`` now."""
    if port == 0:
        return  # any free port: the operating system picks one
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        # as servers do: a port left in TIME_WAIT by a server that just stopped is free to reuse
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise busy(host, port, exc, option=option) from None


def busy(host: str, port: int, exc: OSError, *, option: str = "--port") -> PortInUseError:
    """The one line for a failed bind of ``host``:``port``."""
    if exc.errno == errno.EADDRINUSE:
        holder = listener(port)
        who = f" by {holder}" if holder else ""
        stop = "stop it" if holder else "stop the process that holds it"
        return PortInUseError(
            f"port {port} on {host} is already in use{who}: {stop}, or pass {option} {free_port(host, port)} "
            "(a free one)"
        )
    if exc.errno == errno.EACCES:
        return PortInUseError(
            f"port {port} on {host} needs privileges this user lacks: pass {option} {free_port(host, 8000)}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return PortInUseError(f"{host} is not an address of this machine: pass --host 127.0.0.1")
    return PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def free_port(host: str, near: int) -> int:
    """A port free now, the first after ``near`` if one of the next few is (easier to remember)."""
    for candidate in range(near + 1, min(near + 20, 65535)):
        try:
            check_free(host, candidate)
            return candidate
        except PortInUseError:
            continue
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def listener(port: int) -> str | None:
    """``process 1234 (mlflow ui …)`` listening on ``port``, where Linux's /proc can tell (this user's
    processes); ``None`` elsewhere or when it cannot."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            if any(_link(fd) in wanted for fd in (process / "fd").iterdir()):
                command = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f"process {process.name} ({' '.join(command.split())[:80]})"
        except OSError:
            continue  # another user's process, or one that just exited
    return None


def _link(fd: Path) -> str | None:
    """What a listed descriptor points at; None if it was closed since (another thread of a busy
    process closes files all the time: that must not hide the process holding the port)."""
    try:
        return os.readlink(fd)
    except FileNotFoundError:
        return None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])  # state 0A: LISTEN
    return inodes


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


__all__ = ["PortInUseError", "busy", "check_free", "free_port", "listener"]
