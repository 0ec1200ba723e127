"""Cutting a candidate's requests into jobs that keep to the provider's documented limits.

Every limit is enforced before anything is uploaded, because a job over a limit is refused whole (after
a 1 GB upload, on Bedrock) or fails hours later. Jobs are cut to near-equal sizes rather than filled
one after the other: 50,050 requests under a 50,000 cap are two jobs of 25,025, not 50,000 and a
remainder of 50 that Bedrock's minimum of 100 records per job would refuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from promptgrade.providers.batch_base import BatchLimits


@dataclass
class Split:
    """Positions (into the sizes given) per job, and those no job may take, with the reason."""

    jobs: list[list[int]] = field(default_factory=list)
    held: dict[int, str] = field(default_factory=dict)


def split(sizes: list[int], limits: BatchLimits) -> Split:
    """Jobs of near-equal count, each within ``max_requests`` and ``max_bytes``; a request larger than
    ``max_bytes`` by itself, or a set smaller than ``min_requests``, is held (never submitted)."""
    out = Split()
    fitting = list(range(len(sizes)))
    if limits.max_bytes is not None:
        too_big = {i for i in fitting if sizes[i] > limits.max_bytes}
        for i in too_big:
            out.held[i] = f"larger than one job's input file may be ({limits.max_bytes:,} bytes)"
        fitting = [i for i in fitting if i not in too_big]
    if not fitting:
        return out
    if len(fitting) < limits.min_requests:
        for i in fitting:
            out.held[i] = f"fewer requests than the {limits.min_requests} one job needs at least"
        return out
    count = len(fitting)
    jobs = 1 if limits.max_requests is None else math.ceil(count / limits.max_requests)
    if limits.max_bytes is not None:
        jobs = max(jobs, math.ceil(sum(sizes[i] for i in fitting) / limits.max_bytes))
    while True:
        chunks = _even(fitting, jobs)
        if limits.max_bytes is None or all(sum(sizes[i] for i in c) <= limits.max_bytes for c in chunks):
            break
        jobs += 1  # images of unequal size: one more, smaller, job each round
    for chunk in chunks:
        if len(chunk) < limits.min_requests:  # only when the bytes force many small jobs
            for i in chunk:
                out.held[i] = f"fewer requests than the {limits.min_requests} one job needs at least"
        else:
            out.jobs.append(chunk)
    return out


def _even(items: list[int], jobs: int) -> list[list[int]]:
    """``items`` in ``jobs`` contiguous runs whose lengths differ by at most one."""
    base, extra = divmod(len(items), jobs)
    out, start = [], 0
    for index in range(jobs):
        end = start + base + (index < extra)
        out.append(items[start:end])
        start = end
    return [chunk for chunk in out if chunk]
