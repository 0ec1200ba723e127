"""How a person names a run: the 8-character id a table printed, a prompt version, or a baseline.

``compare``, ``report``, ``promote`` and ``label`` print run ids cut to 8 characters, so every place
that takes a run must accept what they print: a run id or any unique prefix of at least
``MIN_PREFIX`` characters (an ambiguous one is refused with the runs it matches), ``name@version``
for a prompt candidate of the latest sweep, and ``baseline:<kind>`` for a trained baseline of the
latest sweep, which has no prompt to be named by.
"""

from __future__ import annotations

import re

from promptgrade.errors import TrackingError
from promptgrade.tracking.read import RunRow, RunStore

MIN_PREFIX = 6
RUN_ID_LENGTH = 32  # MLflow's run ids: a uuid4 in hex
_HEX = re.compile(r"^[0-9a-f]+$")
FORMS = f"a run id (or its first {MIN_PREFIX}+ characters), name@version or baseline:<kind>"


def candidate(store: RunStore, ref: str) -> RunRow:
    """The candidate run ``ref`` names (see the module's note)."""
    if ref.startswith("baseline:"):
        return _baseline(store, ref.removeprefix("baseline:"))
    if "@" in ref:
        return _prompt_version(store, ref)
    row = store.run(run_id(store, ref, kind="candidate"))
    if row.tags.get("promptgrade.kind") != "candidate":
        raise TrackingError(f"run {ref} is not a candidate run of experiment {store.name!r}")
    return row


def run_id(store: RunStore, ref: str, *, kind: str) -> str:
    """The full id of the run ``ref`` is, or starts, among the experiment's runs of ``kind`` (a full id
    is taken as it is, so a run of another kind or experiment gets its own message)."""
    ref = ref.strip()
    if len(ref) == RUN_ID_LENGTH or not _HEX.match(ref.lower()):
        return ref
    ref = ref.lower()
    if len(ref) < MIN_PREFIX:
        raise TrackingError(
            f"run id prefix {ref!r} is too short: give at least {MIN_PREFIX} characters of the run id"
        )
    rows = store.runs_starting(ref, kind)
    if not rows:
        raise TrackingError(f"no {kind} run whose id starts with {ref!r} in experiment {store.name!r}")
    if len(rows) > 1:
        shown = ", ".join(f"{r.run_id[:12]} ({r.name})" for r in rows[:10])
        raise TrackingError(f"run id prefix {ref!r} matches {len(rows)} runs: {shown}; give more characters")
    return rows[0].run_id


def _prompt_version(store: RunStore, ref: str) -> RunRow:
    name, _, version = ref.partition("@")
    version = version.removeprefix("v")
    matches = [
        row
        for row in store.candidates(store.latest_sweep())
        if row.params.get("prompt_name") == name and row.params.get("prompt_version") == version
    ]
    if not matches:
        raise TrackingError(f"no candidate {name}@v{version} in the latest sweep of {store.name!r}")
    if len(matches) > 1:
        shown = ", ".join(f"{m.run_id[:8]} ({m.params.get('model')})" for m in matches)
        raise TrackingError(
            f"{name}@v{version} ran on several models in the latest sweep ({shown}): pass a run id"
        )
    return matches[0]


def _baseline(store: RunStore, kind: str) -> RunRow:
    rows = store.candidates(store.latest_sweep())
    baselines = [r for r in rows if r.params.get("provider") == "baseline"]
    matches = [r for r in baselines if r.params.get("model") == kind]
    if not matches:
        known = ", ".join(sorted({f"baseline:{r.params.get('model')}" for r in baselines})) or "none"
        raise TrackingError(
            f"no baseline {kind!r} in the latest sweep of {store.name!r} (its baselines: {known})"
        )
    if len(matches) > 1:
        shown = ", ".join(m.run_id[:8] for m in matches)
        raise TrackingError(
            f"baseline:{kind} ran more than once in the latest sweep ({shown}): pass a run id"
        )
    return matches[0]


__all__ = ["FORMS", "MIN_PREFIX", "candidate", "run_id"]
