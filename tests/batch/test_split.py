"""Cutting a candidate's requests into jobs within a provider's limits, and the journal that keeps what
``batches cancel`` needs to reach a job of any provider again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from promptgrade.batch.journal import BatchJournal
from promptgrade.batch.split import split
from promptgrade.providers.batch_base import BatchLimits


def test_without_limits_everything_is_one_job() -> None:
    assert split([10] * 7, BatchLimits()).jobs == [list(range(7))]


def test_a_count_over_the_limit_is_cut_into_even_jobs_not_a_full_one_and_a_remainder() -> None:
    cut = split([1] * 50_050, BatchLimits(max_requests=50_000, min_requests=100))
    assert [len(job) for job in cut.jobs] == [25_025, 25_025] and not cut.held
    assert sorted(i for job in cut.jobs for i in job) == list(range(50_050))  # each once, in order


def test_bytes_over_the_file_limit_make_more_jobs() -> None:
    sizes = [30, 10, 10, 10, 30, 10]  # 100 bytes, at most 40 per file
    cut = split(sizes, BatchLimits(max_bytes=40))
    assert all(sum(sizes[i] for i in job) <= 40 for job in cut.jobs)
    assert sorted(i for job in cut.jobs for i in job) == list(range(6)) and not cut.held


def test_a_request_larger_than_a_file_and_a_set_below_the_minimum_are_held_with_their_reason() -> None:
    cut = split([50, 10, 10], BatchLimits(max_bytes=40, min_requests=1))
    assert cut.jobs == [[1, 2]] and cut.held == {0: "larger than one job's input file may be (40 bytes)"}
    few = split([1] * 6, BatchLimits(min_requests=100))
    assert not few.jobs and set(few.held) == set(range(6))
    assert few.held[0] == "fewer requests than the 100 one job needs at least"


def test_the_lab_may_lower_a_providers_per_job_maximum_but_never_raise_it() -> None:
    limits = BatchLimits(max_requests=50_000, max_bytes=10, min_requests=100)
    assert limits.tightened(4) == BatchLimits(4, 10, 100)
    assert limits.tightened(60_000) is limits and limits.tightened(None) is limits
    assert BatchLimits().tightened(4).max_requests == 4


def test_a_journal_from_before_other_providers_opens_and_keeps_each_jobs_fields(tmp_path: Path) -> None:
    path = tmp_path / "cache.batches.sqlite"
    with sqlite3.connect(path) as old:  # the schema Gemini-only journals were written with
        old.execute(
            "CREATE TABLE jobs (local_id TEXT PRIMARY KEY, name TEXT, experiment TEXT NOT NULL, "
            "provider TEXT NOT NULL, model TEXT NOT NULL, candidate_key TEXT NOT NULL, candidate_label TEXT "
            "NOT NULL, route TEXT, requests INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, "
            "state TEXT NOT NULL, stats TEXT NOT NULL DEFAULT '{}', error TEXT, collected REAL, base_url TEXT)"
        )
        old.execute(
            "INSERT INTO jobs VALUES ('old', 'batches/1', 'e', 'gemini', 'm', 'k', 'l', 'inline', 1, 1.0, 1.0, "
            "'JOB_STATE_PENDING', '{}', NULL, NULL, NULL)"
        )
    journal = BatchJournal(path)
    assert journal.job("batches/1") is not None and journal.job("old").fields == {}  # type: ignore[union-attr]
    fields = {"region": "eu-west-1", "batch_s3_uri": "s3://b/p", "batch_role_arn": "arn:aws:iam::1:role/r"}
    journal.intend(
        "new",
        experiment="e",
        provider="bedrock",
        model="amazon.nova-lite-v1:0",
        candidate_key="k2",
        candidate_label="l2",
        requests=[("key", "example")],
        fields=fields,
    )
    arn = "arn:aws:bedrock:eu-west-1:123456789012:model-invocation-job/abc123"
    journal.submitted("new", arn, "s3")
    for name in (arn, "abc123", "new"):  # the ARN, the job id `batches list` shows, the local id
        job = journal.job(name)
        assert job is not None and job.local_id == "new" and job.fields == fields
    assert journal.job("abc12") is None and journal.job("bc123") is None
    journal.close()


@pytest.mark.parametrize("name", ["%", "_bc123", "job-%"])
def test_a_name_with_sql_wildcards_matches_nothing_it_should_not(tmp_path: Path, name: str) -> None:
    journal = BatchJournal(tmp_path / "cache.batches.sqlite")
    journal.intend(
        "id",
        experiment="e",
        provider="openai",
        model="m",
        candidate_key="k",
        candidate_label="l",
        requests=[],
    )
    journal.submitted("id", "arn:x/abc123", "file")
    assert journal.job(name) is None
    journal.close()
