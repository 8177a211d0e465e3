"""search_jobs (a bounded scan by cursor) and the bulk commands: a chunk moves each job as its
single command would, skips the others, and replays to the same state."""

from __future__ import annotations

from jq_tool.core.model import (
    BulkCancel,
    BulkRequeue,
    BulkResult,
    Error,
    Fail,
    JobState,
    Lease,
    NewJob,
    Submit,
    decode_command,
    encode_command,
)
from jq_tool.core.search import JobFilter
from jq_tool.core.state_machine import MAX_BULK_CHUNK, StateMachine

T0 = 1_700_000_000_000


def _machine(n: int = 10) -> StateMachine:
    machine = StateMachine()
    machine.apply(Submit(T0, [NewJob(f"j{i:02d}", max_retries=0) for i in range(n)]))
    return machine


def test_a_bounded_scan_stops_and_its_cursor_goes_on() -> None:
    machine = _machine(10)
    where = JobFilter(id_prefix="j0")  # j00..j09 all match
    page, cursor = machine.search_jobs(where, limit=100, scan_limit=4)
    assert [j.id for j in page] == ["j09", "j08", "j07", "j06"] and cursor is not None
    rest, end = machine.search_jobs(where, limit=100, cursor=cursor, scan_limit=100)
    assert [j.id for j in rest] == [f"j0{i}" for i in range(5, -1, -1)] and end is None
    none, cursor = machine.search_jobs(JobFilter(id_prefix="x"), limit=5, scan_limit=3)
    assert none == [] and cursor is not None


def test_bulk_requeue_moves_dead_jobs_once_and_replays() -> None:
    machine = _machine(4)
    machine.apply(Lease(T0 + 1, "default", 1000, ["a", "b", "c"]))
    for job_id, lease_id in (("j00", "a"), ("j01", "b")):
        machine.apply(Fail(T0 + 2, job_id, lease_id, "boom"))
    log = [BulkRequeue(T0 + 3, ["j00", "j01", "j02", "j03", "nope"])]
    result = machine.apply(log[0])
    assert isinstance(result, BulkResult) and result.changed == ["j00", "j01"]
    again = machine.apply(BulkRequeue(T0 + 4, ["j00"]))
    assert isinstance(again, BulkResult) and again.changed == []
    cancel = machine.apply(BulkCancel(T0 + 5, ["j00", "j02", "j03"]))
    assert isinstance(cancel, BulkResult) and cancel.changed == ["j00", "j03"]
    job = machine.get("j00")
    assert job is not None and job.state is JobState.CANCELLED
    assert machine.stats().counters.requeued == 2
    assert decode_command(encode_command(log[0])) == log[0]


def test_a_chunk_too_large_is_refused_whole() -> None:
    machine = _machine(1)
    result = machine.apply(BulkCancel(T0, ["j00"] * (MAX_BULK_CHUNK + 1)))
    assert isinstance(result, Error)
    job = machine.get("j00")
    assert job is not None and job.state is JobState.READY


def test_a_state_no_job_has_is_answered_without_a_scan() -> None:
    machine = _machine(10)
    page, cursor = machine.search_jobs(JobFilter(labels=frozenset({"DEAD"})), scan_limit=1)
    assert (page, cursor) == ([], None)  # the counts say none: no short page, no cursor
    page, cursor = machine.search_jobs(JobFilter(labels=frozenset({"READY"})), scan_limit=1)
    assert len(page) == 1 and cursor is not None
