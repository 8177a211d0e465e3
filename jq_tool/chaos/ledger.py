"""The harness's own record of a chaos run: which submits the server acknowledged (and with which
job id), every execution a worker started (job id + attempt), and every ack the server confirmed.

Some submits may be sent without their idempotency key (`--without-key`), as a bare HTTP client
would; the ledger marks them, so duplicates their retries make are counted apart.

The ledger is the ground truth the final verification compares the server against, so it only
records what a response proved: a submit is acknowledged only when a 201/200 carrying a job id
came back, an ack only when the server answered it (or, after an ambiguous crash, showed the job
ACKED). It is touched from one event loop only, so it needs no locks. Times are
`time.monotonic()` seconds.
"""

from __future__ import annotations

import dataclasses
import json


def chaos_payload(run_id: str, index: int) -> str:
    """The payload of submit `index`: it names the run and the index so a leased job can be
    traced back to the submit that made it, whatever id the server gave it."""
    return json.dumps({"chaos_run": run_id, "index": index}, separators=(",", ":"))


def payload_index(run_id: str, payload: str) -> int | None:
    """The submit index a payload encodes, or None when it is not a payload of this run."""
    try:
        decoded = json.loads(payload)
    except (ValueError, TypeError):
        return None
    if not isinstance(decoded, dict) or decoded.get("chaos_run") != run_id:
        return None
    index = decoded.get("index")
    return index if isinstance(index, int) else None


@dataclasses.dataclass
class SubmitRecord:
    index: int
    idempotency_key: str
    keyed: bool = True  # False: sent without its key (and retried all the same)
    started_at: float | None = None  # first attempt sent: the start of submit→ack latency
    job_id: str | None = None  # set once the server acknowledged the submit
    acknowledged_at: float | None = None
    attempts: int = 0  # HTTP attempts, retries through restarts included
    replayed: bool = False  # the answer said duplicate: an earlier attempt had landed
    rejected: str | None = None  # a 4xx refusal: the submit will never be acknowledged


@dataclasses.dataclass(frozen=True)
class Execution:
    job_id: str
    attempt: int
    lease_id: str
    index: int | None  # submit index from the payload
    at: float


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """Evidence of a duplicate: what happened, to which job, which submit."""

    # executed_after_ack | same_attempt_twice | one_key_two_jobs | two_keys_one_job, or
    # retried_without_key: a submit sent without a key made more than one job (counted apart)
    kind: str
    job_id: str
    index: int | None
    detail: str


class Ledger:
    def __init__(self, run_id: str, jobs: int, *, without_key: set[int] | None = None) -> None:
        self.run_id = run_id
        unkeyed = without_key or set()
        self.submits = [
            SubmitRecord(i, f"chaos-{run_id}-{i}", keyed=i not in unkeyed) for i in range(jobs)
        ]
        # job id -> the submit indexes it was tied to, by a submit response or by its payload;
        # verification calls any job with two indexes, or index with two jobs, a duplicate.
        self.job_indexes: dict[str, set[int]] = {}
        self.executions: list[Execution] = []
        self.acked_at: dict[str, float] = {}  # job id -> when an ack was first confirmed
        self.duplicates: list[Duplicate] = []
        self.ack_refusals: list[tuple[str, str]] = []
        self.ack_retries = 0  # acks re-sent (same lease_id) because a kill took the first try
        self.acks_settled_by_read = 0  # a re-sent ack met 409 and the job read back ACKED
        self.foreign_jobs: set[str] = set()  # leased jobs whose payload names no submit of ours
        self.releases = 0  # leases given back, answered 200
        self.releases_unsure = 0  # a retried release met 409: it may have landed
        self._attempts_seen: set[tuple[str, int]] = set()

    # -- submits ------------------------------------------------------------------------------

    def submit_started(self, index: int, at: float) -> None:
        record = self.submits[index]
        record.attempts += 1
        if record.started_at is None:
            record.started_at = at

    def submit_retried(self, index: int) -> None:
        self.submits[index].attempts += 1

    def submit_acknowledged(
        self, index: int, job_id: str, at: float, *, replayed: bool = False
    ) -> None:
        record = self.submits[index]
        if record.job_id is None:
            record.job_id = job_id
            record.acknowledged_at = at
            record.replayed = replayed
        self.job_indexes.setdefault(job_id, set()).add(index)

    def submit_rejected(self, index: int, reason: str) -> None:
        self.submits[index].rejected = reason

    # -- workers ------------------------------------------------------------------------------

    def execution_started(
        self, job_id: str, attempt: int, lease_id: str, index: int | None, at: float
    ) -> None:
        """A worker leased `job_id` and is about to run it. Checked against the acks seen so far:
        running a job whose ack the server already confirmed is a duplicate."""
        self.executions.append(Execution(job_id, attempt, lease_id, index, at))
        self.job_payload_seen(job_id, index)
        if job_id in self.acked_at:
            self.duplicates.append(
                Duplicate(
                    "executed_after_ack",
                    job_id,
                    index,
                    f"attempt {attempt} leased {at - self.acked_at[job_id]:.3f}s after its ack "
                    "was confirmed",
                )
            )
        if (job_id, attempt) in self._attempts_seen:
            self.duplicates.append(
                Duplicate(
                    "same_attempt_twice", job_id, index, f"attempt {attempt} was leased twice"
                )
            )
        self._attempts_seen.add((job_id, attempt))

    def job_payload_seen(self, job_id: str, index: int | None) -> None:
        """A job's payload (from a lease or the final read) named submit `index`."""
        if index is None or not 0 <= index < len(self.submits):
            self.foreign_jobs.add(job_id)
        else:
            self.job_indexes.setdefault(job_id, set()).add(index)

    def release_sent(self, job_id: str, attempt: int) -> None:
        """A worker is giving this attempt's lease back. A released attempt is leased again
        under the same number, so from now on it may be leased once more without being a
        duplicate (forgotten before the request goes: another worker may lease the job again
        before this one reads the answer)."""
        self._attempts_seen.discard((job_id, attempt))

    def release_answered(self, *, sure: bool) -> None:
        """The release landed (`sure`: answered 200), or may have (a retried release met 409:
        its first try landed and its answer died with the server, or the lease had run out)."""
        if sure:
            self.releases += 1
        else:
            self.releases_unsure += 1

    def ack_confirmed(self, job_id: str, at: float) -> None:
        self.acked_at.setdefault(job_id, at)

    def ack_refused(self, job_id: str, reason: str) -> None:
        """An ack the server refused for a reason other than a stale lease (e.g. 404)."""
        self.ack_refusals.append((job_id, reason))

    # -- views --------------------------------------------------------------------------------

    def acknowledged(self) -> list[SubmitRecord]:
        return [record for record in self.submits if record.job_id is not None]

    def known_job_ids(self) -> set[str]:
        """Every job id the server told us exists: from submit responses and from leases."""
        ids = {record.job_id for record in self.submits if record.job_id is not None}
        ids.update(execution.job_id for execution in self.executions)
        ids.update(self.job_indexes)
        return ids

    def all_acks_confirmed(self) -> bool:
        return all(
            record.job_id in self.acked_at for record in self.submits if record.job_id is not None
        )
