"""A store's batch jobs (Gemini, Bedrock, OpenAI) outside a sweep: what ``promptgrade batches`` lists,
and cancelling one.

The journal beside the answer cache is the record of which jobs this store submitted (the API lists
every job of the key, whoever submitted it), so both read the journal rather than the API.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from promptgrade.batch.journal import BatchJournal, JobRecord, journal_path
from promptgrade.cache import default_path
from promptgrade.errors import PromptgradeError

if TYPE_CHECKING:
    from promptgrade.config import ModelSpec
    from promptgrade.providers.batch_base import BatchBackend


def store_journal(cache_path: Path | None = None) -> BatchJournal:
    """The journal beside ``cache_path``, or beside the default answer cache."""
    return BatchJournal(journal_path(cache_path or default_path()))


def cancel_job(
    name: str, client_for: Callable[[ModelSpec], BatchBackend], cache_path: Path | None = None
) -> JobRecord:
    """Cancel a journalled job (by API name or local id) where it was submitted: ``client_for`` builds
    the batch back-end of the model the job was submitted for, with the fields it was submitted with
    (its endpoint, a Bedrock job's region, an OpenAI key's variable), as the sweep builds one.

    Nothing is lost: the next sweep collects what the job answered and resubmits the rest.
    """
    from promptgrade.config import ModelSpec  # the experiment model's rules: not needed to list jobs

    job = store_journal(cache_path).job(name)
    if job is None or job.name is None:
        raise PromptgradeError(
            f"no batch job {name!r} in this store's journal (see `promptgrade batches list`)"
        )
    spec = ModelSpec.model_validate(
        {"provider": job.provider, "model": job.model, "base_url": job.base_url, **job.fields}
    )
    client = client_for(spec)
    try:
        client.cancel(job.name)
    finally:
        client.close()
    return job
