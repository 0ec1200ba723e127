"""Small stand-ins for the Lambda zip with its real layout (handler + bundle manifest), for deploy tests:
what deploy does with a zip does not depend on its size, and the real zip is tested in test_package."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path


def make_zip(path: Path, marker: str, *, extra: dict[str, str] | None = None) -> Path:
    """A zip with the real layout; ``marker`` makes two builds' bytes (and code sha256) differ."""
    manifest = {
        "format_version": 1,
        "prompt": {"name": "meal_tray_json", "version": 1, "sha256": "ab" * 32, "file": "prompt.jinja"},
        "model": "gemini-2.5-flash",
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("lambda_handler/__init__.py", "")
        archive.writestr("lambda_handler/app.py", f"def handler(event, context):\n    return {marker!r}\n")
        archive.writestr("lambda_handler/bundle/manifest.json", json.dumps(manifest))
        archive.writestr("lambda_handler/bundle/prompt.jinja", "Grade this tray.")
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return path
