"""The batch journal: every job this store submitted, written down before anything waits on it.

Creating a Batch API job is not idempotent — a second ``create`` is a second bill — so the intent
(candidate, every request's cache key and example id) is committed *before* the job is created, under
a local id that is also the job's display name. A run killed at any point finds, on the next run:
an intent without a job name (the create may or may not have reached the API: the job is looked up
by display name, and only if the API has none are the requests free to be sent again), a job still
pending or running (waited on, never resubmitted), or a finished job not yet collected (its answers
are read into the answer cache). Only requests that a collected job did not answer are sent again.

SQLite beside the answer cache (``cache.sqlite`` → ``cache.batches.sqlite``), WAL, one transaction per
step, so ``kill -9`` never leaves half a record.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from promptgrade.errors import PromptgradeError

SUBMITTING = "SUBMITTING"  # intent written; the create call may not have reached the API

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (local_id TEXT PRIMARY KEY, name TEXT, experiment TEXT NOT NULL, "
    "provider TEXT NOT NULL, model TEXT NOT NULL, candidate_key TEXT NOT NULL, candidate_label TEXT NOT NULL, "
    "route TEXT, requests INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, state TEXT NOT NULL, "
    "stats TEXT NOT NULL DEFAULT '{}', error TEXT, collected REAL, base_url TEXT, fields TEXT)",
    "CREATE TABLE IF NOT EXISTS job_requests (local_id TEXT NOT NULL, key TEXT NOT NULL, example_id TEXT NOT NULL, "
    "status TEXT NOT NULL DEFAULT 'pending', error TEXT, PRIMARY KEY (local_id, key))",
    "CREATE INDEX IF NOT EXISTS job_requests_key ON job_requests (key)",
)


@dataclass(frozen=True)
class JobRecord:
    local_id: str
    name: str | None
    experiment: str
    provider: str
    model: str
    candidate_key: str
    candidate_label: str
    route: str | None
    requests: int
    created: float
    state: str
    stats: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    collected: float | None = None
    base_url: str | None = None  # the model's online endpoint, as in its answers' keys (None: the SDK's)
    # the model's provider fields the job was created with (a Bedrock region, S3 prefix and role; an
    # OpenAI key's variable): what ``batches cancel`` needs to reach the job again
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return f"promptgrade-{self.local_id}"


def journal_path(cache_path: Path) -> Path:
    return cache_path.with_name(f"{cache_path.stem}.batches{cache_path.suffix or '.sqlite'}")


class BatchJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "fields" not in columns:  # a journal written before Bedrock and OpenAI batch jobs
                self._db.execute("ALTER TABLE jobs ADD COLUMN fields TEXT")
        except sqlite3.Error as exc:
            raise PromptgradeError(f"cannot open the batch journal: {exc}", path=self.path) from None
        self._lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------------
    def intend(
        self,
        local_id: str,
        *,
        experiment: str,
        provider: str,
        model: str,
        candidate_key: str,
        candidate_label: str,
        requests: list[tuple[str, str]],
        base_url: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        """Record a job about to be created, with its (cache key, example id) requests, in one commit."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO jobs (local_id, experiment, provider, model, candidate_key, candidate_label, "
                "requests, created, updated, state, base_url, fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    local_id,
                    experiment,
                    provider,
                    model,
                    candidate_key,
                    candidate_label,
                    len(requests),
                    now,
                    now,
                    SUBMITTING,
                    base_url,
                    json.dumps(fields or {}, sort_keys=True),
                ),
            )
            self._db.executemany(
                "INSERT INTO job_requests (local_id, key, example_id) VALUES (?, ?, ?)",
                [(local_id, key, example_id) for key, example_id in requests],
            )
            self._db.execute("COMMIT")

    def submitted(
        self, local_id: str, name: str, route: str | None, state: str = "JOB_STATE_PENDING"
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET name = ?, route = ?, state = ?, updated = ? WHERE local_id = ?",
                (name, route, state, time.time(), local_id),
            )

    def forget(self, local_id: str) -> None:
        """An intent whose create never reached the API: its requests are free to be sent again."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM job_requests WHERE local_id = ?", (local_id,))
            self._db.execute("DELETE FROM jobs WHERE local_id = ?", (local_id,))
            self._db.execute("COMMIT")

    def update(self, local_id: str, state: str, stats: dict[str, int], error: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, stats = ?, error = COALESCE(?, error), updated = ? WHERE local_id = ?",
                (state, json.dumps(stats), error, time.time(), local_id),
            )

    def collect(
        self, local_id: str, answered: Iterable[str], failed: dict[str, str], note: str | None
    ) -> None:
        """The job's results are in the answer cache: mark each request answered or failed, in one commit."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE job_requests SET status = 'answered', error = NULL WHERE local_id = ? AND key = ?",
                [(local_id, key) for key in answered],
            )
            self._db.executemany(
                "UPDATE job_requests SET status = 'failed', error = ? WHERE local_id = ? AND key = ?",
                [(reason, local_id, key) for key, reason in failed.items()],
            )
            self._db.execute(
                "UPDATE jobs SET collected = ?, error = COALESCE(?, error), updated = ? WHERE local_id = ?",
                (time.time(), note, time.time(), local_id),
            )
            self._db.execute("COMMIT")

    # -- reading ------------------------------------------------------------------------------
    def jobs(self, *, uncollected: bool = False, experiment: str | None = None) -> list[JobRecord]:
        query = "SELECT * FROM jobs WHERE 1 = 1"
        args: list[str] = []
        if uncollected:
            query += " AND collected IS NULL"
        if experiment is not None:
            query += " AND experiment = ?"
            args.append(experiment)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created", args).fetchall()
        return [_record(row) for row in rows]

    def job(self, name: str) -> JobRecord | None:
        """By the API's name (``batches/…``, a Bedrock job ARN, an OpenAI ``batch_…`` id), the name's
        last segment (a Bedrock job id) or local id."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE name = ? OR local_id = ? OR name = ? OR name LIKE ? ESCAPE '\\' "
                "ORDER BY created DESC",
                (name, name, f"batches/{name}", "%/" + name.replace("%", "\\%").replace("_", "\\_")),
            ).fetchone()
        return None if row is None else _record(row)

    def requests(self, local_id: str) -> dict[str, str]:
        """cache key → example id of one job."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, example_id FROM job_requests WHERE local_id = ?", (local_id,)
            )
            return dict(rows.fetchall())

    def in_flight(self) -> set[str]:
        """Keys of requests in jobs not yet collected: never submitted again while those jobs live."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.key FROM job_requests r JOIN jobs j ON j.local_id = r.local_id WHERE j.collected IS NULL"
            ).fetchall()
        return {row[0] for row in rows}

    def failure(self, key: str) -> str | None:
        """Why the latest collected job holding ``key`` did not answer it (None: no such job)."""
        with self._lock:
            row = self._db.execute(
                "SELECT r.status, r.error, j.name FROM job_requests r JOIN jobs j ON j.local_id = r.local_id "
                "WHERE r.key = ? AND j.collected IS NOT NULL ORDER BY j.collected DESC LIMIT 1",
                (key,),
            ).fetchone()
        if row is None or row[0] == "answered":
            return None
        return f"{row[2]}: {row[1] or 'no answer'}"

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record(row: tuple[object, ...]) -> JobRecord:
    (
        local_id,
        name,
        experiment,
        provider,
        model,
        key,
        label,
        route,
        requests,
        created,
        _,
        state,
        stats,
        error,
    ) = row[:14]
    collected, base_url, fields = row[14], row[15], row[16]
    return JobRecord(
        local_id=str(local_id),
        name=None if name is None else str(name),
        experiment=str(experiment),
        provider=str(provider),
        model=str(model),
        candidate_key=str(key),
        candidate_label=str(label),
        route=None if route is None else str(route),
        requests=int(requests),  # type: ignore[call-overload]
        created=float(created),  # type: ignore[arg-type]
        state=str(state),
        stats=json.loads(str(stats)),
        error=None if error is None else str(error),
        collected=None if collected is None else float(collected),  # type: ignore[arg-type]
        base_url=None if base_url is None else str(base_url),
        fields=json.loads(str(fields)) if fields else {},
    )
