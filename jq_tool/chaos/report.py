"""The verdict of a chaos run: comparing the harness's ledger with the job states the server
reported at the end, counting lost jobs and duplicates, and rendering the report as text or as
one JSON object.

Lost means an acknowledged submit whose job is not ACKED at the end (or that the server no longer
knows). Duplicates are a job leased again after its ack was confirmed, the same attempt leased
twice, one submit (one idempotency key) that became two job ids, or two submits that got one job
id. A submit sent without a key (`--without-key`) that became two jobs is counted apart: a
server cannot tell such a retry from a new job, which is why every client should send a key.
`ZERO LOSS ✓` is printed only when nothing was lost, nothing was duplicated (keyless retries
aside, which are reported) and every submit was acknowledged (a run that could not submit its
load proves nothing).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from jq_tool.chaos.ledger import Duplicate, Ledger

ZERO_LOSS = "ZERO LOSS ✓"
# How many lost jobs / duplicates the report names one by one; the counts are always complete.
DETAIL_LIMIT = 20


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least pct% of values at or below
    it. None for no values."""
    if not values:
        return None
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclasses.dataclass(frozen=True)
class LostJob:
    index: int
    job_id: str
    state: str  # the state the server reported, or "MISSING"


@dataclasses.dataclass(frozen=True)
class Report:
    jobs: int  # submits the run attempted
    submitted: int  # submits the server acknowledged (201/200 with a job id)
    acked: int  # acknowledged submits whose job is ACKED at the end
    lost: int
    duplicates: int  # every duplicate but those of keyless retries: must be 0
    unacknowledged: int  # submits never acknowledged (refused, or the run was cut short)
    kills: int
    restarts: int
    downtime_s: float  # server down (kill until healthy again), all kills together
    executions: int  # leases the workers ran, retries included
    submit_retries: int  # submits sent more than once (their first try met a dead server)
    idempotent_replays: int  # retried submits answered "duplicate": the first try had landed
    ack_retries: int  # acks re-sent with the same lease_id through a restart
    acks_settled_by_read: int  # re-sent acks refused (409) whose job read back ACKED
    foreign_jobs: int  # leased jobs whose payload names no submit of this run
    wall_time_s: float
    throughput_jobs_per_s: float  # acked jobs per second of the load phase
    latency_ms: dict[str, float | None]  # submit→ack p50/p95/p99
    lost_jobs: list[LostJob]
    duplicate_details: list[Duplicate]
    rejections: dict[str, int]  # why submits were refused, and how many
    error: str | None = None  # the run could not finish (server never came back, …)
    verified: bool = True  # False: the run broke off before the server was asked about its jobs
    notes: list[str] = dataclasses.field(default_factory=list)
    seed: int | None = None  # the run's random seed: --seed repeats its kill schedule
    queue: str | None = None
    submits_without_key: int = 0  # sent without an idempotency key (--without-key)
    duplicates_from_keyed_retries: int = 0  # one key, two jobs: part of `duplicates`, must be 0
    duplicates_from_unkeyed_retries: int = 0  # extra jobs made by keyless retries: expected
    releases: int = 0  # leases workers gave back (--release-share), answered 200
    releases_unsure: int = 0  # retried releases met 409: the first try may have landed

    @property
    def zero_loss(self) -> bool:
        return (
            self.error is None
            and self.lost == 0
            and self.duplicates == 0
            and self.unacknowledged == 0
            and self.submitted == self.jobs
        )

    @property
    def result(self) -> str:
        if self.zero_loss:
            return ZERO_LOSS
        reasons = []
        if self.lost:
            reasons.append(f"{self.lost} lost")
        if self.duplicates:
            reasons.append(f"{self.duplicates} duplicates")
        if self.unacknowledged:
            reasons.append(f"{self.unacknowledged} submits never acknowledged")
        if self.error:
            reasons.append(self.error)
        return "FAILED ✗ (" + ", ".join(reasons) + ")"

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "result": self.result,
            "zero_loss": self.zero_loss,
            "jobs": self.jobs,
            "submitted": self.submitted,
            "acked": self.acked,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "duplicates_from_keyed_retries": self.duplicates_from_keyed_retries,
            "duplicates_from_unkeyed_retries": self.duplicates_from_unkeyed_retries,
            "submits_without_key": self.submits_without_key,
            "unacknowledged": self.unacknowledged,
            "kills": self.kills,
            "restarts": self.restarts,
            "downtime_s": round(self.downtime_s, 3),
            "executions": self.executions,
            "submit_retries": self.submit_retries,
            "idempotent_replays": self.idempotent_replays,
            "ack_retries": self.ack_retries,
            "acks_settled_by_read": self.acks_settled_by_read,
            "foreign_jobs": self.foreign_jobs,
            "wall_time_s": round(self.wall_time_s, 3),
            "throughput_jobs_per_s": round(self.throughput_jobs_per_s, 1),
            "latency_ms": {
                name: None if value is None else round(value, 1)
                for name, value in self.latency_ms.items()
            },
            "lost_jobs": [dataclasses.asdict(lost) for lost in self.lost_jobs],
            "duplicate_details": [dataclasses.asdict(dup) for dup in self.duplicate_details],
            "rejections": self.rejections,
            "error": self.error,
            "verified": self.verified,
            "notes": self.notes,
            "seed": self.seed,
            "queue": self.queue,
            "releases": self.releases,
            "releases_unsure": self.releases_unsure,
        }
        return json.dumps(body)

    def to_text(self) -> str:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1f}ms"

        lines = [
            f"submitted:   {self.submitted}/{self.jobs}",
            f"acked:       {self.acked}",
            f"lost:        {self.lost}",
            f"duplicates:  {self.duplicates} ({self.duplicates_from_keyed_retries} from submits "
            "retried with their idempotency key, as the SDK retries)",
            f"kills:       {self.kills} (restarts: {self.restarts}, "
            f"down {self.downtime_s:.2f}s in all)",
            f"executions:  {self.executions}",
            f"retried:     {self.submit_retries} submits "
            f"({self.idempotent_replays} answered as duplicates of a try that had landed), "
            f"{self.ack_retries} acks ({self.acks_settled_by_read} found already ACKED)",
            f"wall time:   {self.wall_time_s:.2f}s",
            f"throughput:  {self.throughput_jobs_per_s:.1f} jobs/s",
            "latency:     p50 {} / p95 {} / p99 {} (submit→ack)".format(
                ms(self.latency_ms["p50"]), ms(self.latency_ms["p95"]), ms(self.latency_ms["p99"])
            ),
        ]
        if self.submits_without_key:
            lines.append(
                f"without key: {self.submits_without_key} submits sent without an idempotency "
                f"key made {self.duplicates_from_unkeyed_retries} extra jobs when retried "
                "(expected: the server cannot tell such a retry from a new job; not counted "
                "above)"
            )
        if self.releases or self.releases_unsure:
            lines.append(
                f"released:    {self.releases} leases given back and run again "
                f"({self.releases_unsure} more whose release may have landed before a kill)"
            )
        if self.unacknowledged:
            lines.append(f"unacknowledged submits: {self.unacknowledged}")
        for reason, count in sorted(self.rejections.items()):
            lines.append(f"  refused {count}x: {reason}")
        if self.foreign_jobs:
            lines.append(f"foreign jobs leased: {self.foreign_jobs}")
        for lost in self.lost_jobs:
            lines.append(f"  lost: submit {lost.index} job {lost.job_id} is {lost.state}")
        for dup in self.duplicate_details:
            lines.append(f"  duplicate ({dup.kind}): job {dup.job_id}: {dup.detail}")
        if self.error:
            lines.append(f"error: {self.error}")
        if not self.verified:
            lines.append("not verified: the run broke off before every job could be checked")
        lines.extend(f"note: {note}" for note in self.notes)
        if self.seed is not None:
            lines.append(f"seed:        {self.seed} (--seed {self.seed} repeats the kill schedule)")
        lines.append(f"result: {self.result}")
        return "\n".join(lines)


def verify(
    ledger: Ledger,
    final_states: Mapping[str, str | None],
    *,
    kills: int,
    restarts: int,
    wall_time_s: float,
    downtime_s: float = 0.0,
    load_time_s: float,
    error: str | None = None,
    verified: bool = True,
    seed: int | None = None,
    queue: str | None = None,
) -> Report:
    """Judge a run. `final_states` maps every job id the server told us about to the state
    `GET /jobs/{id}` reported at the end (None: 404, the server does not know it). With
    `verified` False (the run broke off) nothing is counted lost: the report carries the error."""
    acknowledged = ledger.acknowledged()
    lost_jobs: list[LostJob] = []
    acked = 0
    for record in acknowledged if verified else []:
        assert record.job_id is not None
        state = final_states.get(record.job_id)
        if state == "ACKED":
            acked += 1
        else:
            lost_jobs.append(LostJob(record.index, record.job_id, state or "MISSING"))

    duplicates = list(ledger.duplicates)
    keyless: list[Duplicate] = []
    jobs_of_index: dict[int, set[str]] = {}
    for job_id, indexes in ledger.job_indexes.items():
        for index in indexes:
            jobs_of_index.setdefault(index, set()).add(job_id)
        if len(indexes) > 1:
            duplicates.append(
                Duplicate(
                    "two_keys_one_job",
                    job_id,
                    min(indexes),
                    f"submits {sorted(indexes)} (different idempotency keys) share one job id",
                )
            )
    keyed_retry_duplicates = 0
    for index, job_ids in sorted(jobs_of_index.items()):
        if len(job_ids) <= 1:
            continue
        if ledger.submits[index].keyed:
            keyed_retry_duplicates += 1
            duplicates.append(
                Duplicate(
                    "one_key_two_jobs",
                    sorted(job_ids)[1],
                    index,
                    f"submit {index} (one idempotency key) became jobs {sorted(job_ids)}",
                )
            )
        else:
            keyless.extend(
                Duplicate(
                    "retried_without_key",
                    extra,
                    index,
                    f"submit {index} (no idempotency key) became jobs {sorted(job_ids)}",
                )
                for extra in sorted(job_ids)[1:]
            )

    latencies = [
        (ledger.acked_at[record.job_id] - record.started_at) * 1000.0
        for record in acknowledged
        if record.job_id in ledger.acked_at and record.started_at is not None
    ]
    rejections: dict[str, int] = {}
    for record in ledger.submits:
        if record.job_id is None and record.rejected is not None:
            rejections[record.rejected] = rejections.get(record.rejected, 0) + 1

    return Report(
        jobs=len(ledger.submits),
        submitted=len(acknowledged),
        acked=acked,
        lost=len(lost_jobs),
        duplicates=len(duplicates),
        unacknowledged=len(ledger.submits) - len(acknowledged),
        kills=kills,
        restarts=restarts,
        downtime_s=downtime_s,
        executions=len(ledger.executions),
        submit_retries=sum(1 for record in ledger.submits if record.attempts > 1),
        idempotent_replays=sum(1 for record in ledger.submits if record.replayed),
        ack_retries=ledger.ack_retries,
        acks_settled_by_read=ledger.acks_settled_by_read,
        releases=ledger.releases,
        releases_unsure=ledger.releases_unsure,
        foreign_jobs=len(ledger.foreign_jobs),
        wall_time_s=wall_time_s,
        throughput_jobs_per_s=acked / load_time_s if load_time_s > 0 else 0.0,
        latency_ms={
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
        },
        lost_jobs=lost_jobs[:DETAIL_LIMIT],
        duplicate_details=(duplicates + keyless)[:DETAIL_LIMIT],
        rejections=rejections,
        error=error,
        verified=verified,
        seed=seed,
        queue=queue,
        submits_without_key=sum(1 for record in ledger.submits if not record.keyed),
        duplicates_from_keyed_retries=keyed_retry_duplicates,
        duplicates_from_unkeyed_retries=len(keyless),
    )
