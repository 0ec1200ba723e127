"""The answer cache: every paid answer, kept so it is never paid for twice — and the sweep's journal.

An answer is written the moment it arrives, keyed by exactly what determines it (provider, model,
generation settings, rendered prompt, response schema and the image's sha256 — never the image bytes,
never a credential). Re-running an unchanged sweep therefore makes no calls, and a sweep killed
halfway resumes by re-running: what was answered comes back from here.

SQLite in WAL mode: one local file, atomic writes that survive ``kill -9``, and safe with several
sweeps writing at once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from promptgrade.errors import PromptgradeError
from promptgrade.providers.base import Completion, CompletionRequest, ErrorInfo, ErrorKind, TextPart
from promptgrade.settings import load_settings

# Errors that are the model's answer about this input (so paying again gives the same answer).
CACHEABLE_ERRORS = frozenset({ErrorKind.BLOCKED, ErrorKind.EMPTY, ErrorKind.TRUNCATED})


def default_path() -> Path:
    """``$PROMPTGRADE_CACHE`` or ``.promptgrade/cache.sqlite`` in the working directory."""
    return load_settings().cache


def cache_key(
    provider: str, model: str, request: CompletionRequest, sample: int = 0, endpoint: str | None = None
) -> str:
    """A request with reference images keys on its whole sequence (each text, each image's sha256,
    in order); one without keys exactly as before references existed, so old answers still count.
    Sample ``i`` > 0 of a candidate answering k times is its own answer: the index is in its key
    (sample 0 keys as a single answer does, so a k = 1 sweep's answers count for k = 3).
    ``endpoint`` — a model reached anywhere but its provider's public API (an explicit ``base_url``,
    the experiment's, the provider's endpoint variable) — is in the key: a self-hosted server's model
    names are its own, and another server answering under the same name is another model."""
    payload: dict[str, object] = {
        "provider": provider,
        "model": model,
        "settings": request.settings.as_params(),
        "prompt": request.prompt,
        "schema": request.response_schema,
        "image_sha256": request.image.sha256,
    }
    if sample:
        payload["sample"] = sample
    if endpoint:
        payload["endpoint"] = endpoint.rstrip("/")
    if request.parts:
        payload["parts"] = [
            ["text", part.text] if isinstance(part, TextPart) else ["image", part.sha256]
            for part in request.parts
        ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cacheable(completion: Completion) -> bool:
    return completion.error is None or completion.error.kind in CACHEABLE_ERRORS


class AnswerCache:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, created REAL NOT NULL, "
                "provider TEXT NOT NULL, model TEXT NOT NULL, completion TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise PromptgradeError(f"cannot open the answer cache: {exc}", path=self.path) from None
        self._lock = threading.Lock()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT completion FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else _decode(row[0])

    def put(self, key: str, provider: str, model: str, completion: Completion) -> None:
        if not cacheable(completion):
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, created, provider, model, completion) VALUES (?, ?, ?, ?, ?)",
                (key, time.time(), provider, model, _encode(completion)),
            )

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute(
                "SELECT provider, model, COUNT(*) FROM answers GROUP BY provider, model ORDER BY 3 DESC"
            ).fetchall()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "answers": sum(r[2] for r in rows), "bytes": size, "by_model": rows}

    def clear(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                cursor = self._db.execute("DELETE FROM answers")
            else:
                cursor = self._db.execute("DELETE FROM answers WHERE model = ?", (model,))
            self._db.execute("VACUUM")
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _encode(completion: Completion) -> str:
    data = _fields(completion)
    if completion.error is not None:
        data["error"] = {**_fields(completion.error), "kind": completion.error.kind.value}
    return json.dumps(data, separators=(",", ":"))


def _fields(value: Completion | ErrorInfo) -> dict[str, Any]:
    """The fields of a dataclass whose fields are plain values, as ``asdict`` gives them (so the stored
    text is the same) without its recursive deep copy, which was half of every answer's cache write."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


def _decode(text: str) -> Completion:
    data = json.loads(text)
    error = data.pop("error", None)
    if error is not None:
        error = ErrorInfo(**{**error, "kind": ErrorKind(error["kind"])})
    return Completion(**data, error=error)
