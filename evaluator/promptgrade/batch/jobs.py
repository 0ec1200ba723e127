"""A store's batch jobs (Gemini, Bedrock, OpenAI) outside a sweep: what ``promptgrade batches`` lists,
and cancelling one.

The journal beside the answer cache is the record of which jobs this store submitted (the API lists
every job of the key, whoever submitted it), so both read the journal rather than the API.
"""

from __future__ import annotations

from pathlib import Path

from promptgrade.batch.journal import BatchJournal, JobRecord, journal_path
from promptgrade.cache import default_path
from promptgrade.errors import PromptgradeError


def store_journal(cache_path: Path | None = None) -> BatchJournal:
    """The journal beside ``cache_path``, or beside the default answer cache."""
    return BatchJournal(journal_path(cache_path or default_path()))


def cancel_job(name: str, cache_path: Path | None = None) -> JobRecord:
    """Cancel a journalled job (by API name or local id) at the endpoint it was submitted to, with the
    model fields it was submitted with (a Bedrock job's region, an OpenAI key's variable).

    Nothing is lost: the next sweep collects what the job answered and resubmits the rest.
    """
    # the SDKs are imported here, not above: listing jobs never needs one
    from promptgrade.config import ModelSpec
    from promptgrade.settings import load_settings
    from promptgrade.sweep import batch_client

    job = store_journal(cache_path).job(name)
    if job is None or job.name is None:
        raise PromptgradeError(
            f"no batch job {name!r} in this store's journal (see `promptgrade batches list`)"
        )
    spec = ModelSpec.model_validate(
        {"provider": job.provider, "model": job.model, "base_url": job.base_url, **job.fields}
    )
    client = batch_client(spec, None, load_settings())
    try:
        client.cancel(job.name)
    finally:
        client.close()
    return job
