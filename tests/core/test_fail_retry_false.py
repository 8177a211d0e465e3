"""A failed attempt that is final: `Fail(retry=False)` (an ack with `"retry": false`) makes the
job DEAD at once, whatever its retries left; and a Fail record written before the field existed
still decodes, and replays, as a retrying failure."""

from __future__ import annotations

import msgspec
import pytest

from jq_tool.core.model import (
    Error,
    ErrorCode,
    Fail,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    Submit,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine

T0 = 1_000_000


def leased(sm: StateMachine, job_id: str = "j", max_retries: int = 3) -> str:
    sm.apply(Submit(T0, [NewJob(job_id, max_retries=max_retries)]))
    result = sm.apply(Lease(T0 + 1, "default", 30_000, [f"lease-{job_id}"]))
    assert isinstance(result, LeaseResult) and result.jobs
    return result.jobs[0].lease_id or ""


def test_a_final_failure_is_dead_at_once_with_retries_left() -> None:
    sm = StateMachine()
    lease_id = leased(sm, max_retries=3)
    result = sm.apply(Fail(T0 + 2, "j", lease_id, "bad input, no point retrying", retry=False))
    assert isinstance(result, JobResult)
    assert result.job.state is JobState.DEAD and result.job.attempts == 1
    assert result.job.result_error == "bad input, no point retrying"
    stats = sm.stats()
    assert (stats.totals.dead, stats.totals.retry, stats.totals.running) == (1, 0, 0)
    assert (stats.counters.failed, stats.counters.dead, stats.counters.retried) == (1, 1, 0)
    # DEAD like any spent job: not leasable, and requeue gives it a fresh budget.
    assert sm.apply(Lease(T0 + 10_000_000, "default", 30_000, ["again"])) == LeaseResult(jobs=[])


def test_the_default_still_retries() -> None:
    sm = StateMachine()
    lease_id = leased(sm, max_retries=3)
    result = sm.apply(Fail(T0 + 2, "j", lease_id, "flaky"))
    assert isinstance(result, JobResult) and result.job.state is JobState.RETRY


def test_retry_must_be_a_bool() -> None:
    sm = StateMachine()
    lease_id = leased(sm)
    result = sm.apply(Fail(T0 + 2, "j", lease_id, "x", retry="no"))  # type: ignore[arg-type]
    assert isinstance(result, Error) and result.code is ErrorCode.INVALID
    assert sm.get("j") is not None and sm.get("j").state is JobState.RUNNING  # type: ignore[union-attr]


class _FailBeforeRetry(msgspec.Struct, tag="fail", array_like=True):
    """The Fail command as the first release wrote it: no `retry` at the end."""

    now: int
    job_id: str
    lease_id: str | None = None
    error: str = ""


def test_a_fail_record_without_the_field_decodes_as_retrying() -> None:
    old = msgspec.msgpack.encode(_FailBeforeRetry(5, "j", "l", "boom"))
    command = decode_command(old)
    assert command == Fail(5, "j", "l", "boom", retry=True)
    # The new field is the last element: every earlier one keeps its place.
    new = msgspec.msgpack.decode(encode_command(Fail(5, "j", "l", "boom", retry=False)))
    assert new[:-1] == msgspec.msgpack.decode(old) and new[-1] is False


@pytest.mark.parametrize("retry", [True, False])
def test_replay_and_snapshot_agree(retry: bool) -> None:
    log = [
        Submit(T0, [NewJob("j", max_retries=2)]),
        Lease(T0 + 1, "default", 30_000, ["l1"]),
        Fail(T0 + 2, "j", "l1", "e", retry=retry),
    ]
    first, second = StateMachine(), StateMachine()
    for command in log:
        first.apply(command)
    for record in [encode_command(c) for c in log]:
        second.apply(decode_command(record))
    assert first.snapshot() == second.snapshot()
    third = StateMachine()
    third.restore(first.snapshot())
    job = third.get("j")
    assert job is not None
    assert job.state is (JobState.RETRY if retry else JobState.DEAD)
