"""Writing a file a person relies on (labels, a report) so that a crash never leaves half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from promptgrade.errors import PromptgradeError


def atomic_write(path: Path, data: bytes) -> None:
    """Write beside the target and rename over it: a crash leaves the old file or the new, never half."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """A file the user named (an export, a list): a missing folder or a read-only disk is theirs to
    fix, so it is one error naming the file, not a traceback."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PromptgradeError(f"cannot write: {exc.strerror}", path=path) from None
