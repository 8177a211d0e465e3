"""Attempt history: each failed or expired attempt kept on the job (the last 10, error text
bounded), the current attempt read from the job, a successful retry clearing the current
error, the worker id carried by the Lease; old log records and snapshots still decode."""

from __future__ import annotations

import msgspec

from jq_tool.core.attempts import (
    ATTEMPTS_KEPT,
    ERROR_TEXT_BYTES,
    attempt_history,
    bounded_error,
    split_error,
)
from jq_tool.core.model import (
    Ack,
    Expire,
    Fail,
    JobState,
    Lease,
    NewJob,
    Submit,
    decode_command,
)
from jq_tool.core.state_machine import StateMachine, StateMachineConfig

T0 = 1_700_000_000_000
TRACE = 'Traceback (most recent call last):\n  File "w.py", line 3, in run\nValueError: bad input'


def _machine() -> StateMachine:
    machine = StateMachine(StateMachineConfig(retry_base_ms=0, retry_max_ms=0))
    machine.apply(Submit(T0, [NewJob("j", max_retries=20)]))
    return machine


def test_a_successful_retry_keeps_the_failures_and_clears_the_current_error() -> None:
    machine = _machine()
    machine.apply(Lease(T0 + 1, "default", 1000, ["l1"], "host:1:a"))
    machine.apply(Fail(T0 + 2, "j", "l1", TRACE))
    machine.apply(Expire(T0 + 3))
    machine.apply(Lease(T0 + 4, "default", 1000, ["l2"], "host:2:b"))
    job = machine.get("j")
    assert job is not None and job.result_error == TRACE and job.worker == "host:2:b"
    running = attempt_history(job)
    assert [(a.attempt, a.outcome, a.worker) for a in running] == [
        (1, "failed", "host:1:a"),
        (2, "running", "host:2:b"),
    ]
    assert running[0].started_at == T0 + 1 and running[0].ended_at == T0 + 2
    assert running[0].error == TRACE and running[1].ended_at is None

    machine.apply(Ack(T0 + 5, "j", "l2", "ok"))
    job = machine.get("j")
    assert job is not None and job.state is JobState.ACKED and job.result_error is None
    done = attempt_history(job)
    assert [(a.attempt, a.outcome, a.ended_at) for a in done] == [
        (1, "failed", T0 + 2),
        (2, "acked", T0 + 5),
    ]


def test_an_expired_lease_is_an_attempt_and_only_the_last_ten_are_kept() -> None:
    machine = _machine()
    now = T0
    for i in range(15):
        now += 10
        machine.apply(Expire(now))
        machine.apply(Lease(now, "default", 5, [f"l{i}"], "w"))
        if i % 2:
            machine.apply(Fail(now + 1, "j", f"l{i}", f"E{i}: no"))
        else:
            machine.apply(Expire(now + 5))
    job = machine.get("j")
    assert job is not None and job.attempts == 15
    history = attempt_history(job)
    assert len(history) == ATTEMPTS_KEPT
    assert [a.attempt for a in history] == list(range(6, 16))
    assert history[-1].outcome == "expired" and history[-1].error == "lease expired"
    assert history[-2].outcome == "failed" and history[-2].error == "E13: no"


def test_a_first_attempt_that_succeeds_keeps_no_list() -> None:
    machine = _machine()
    machine.apply(Lease(T0 + 1, "default", 1000, ["l1"]))
    machine.apply(Ack(T0 + 2, "j", "l1", "ok"))
    job = machine.get("j")
    assert job is not None and job.history is None
    assert [(a.attempt, a.worker, a.outcome) for a in attempt_history(job)] == [(1, None, "acked")]


def test_error_text_is_bounded_keeping_its_end() -> None:
    text = "x" * 20_000 + "\nValueError: the end é"
    kept = bounded_error(text)
    assert len(kept.encode()) <= ERROR_TEXT_BYTES and kept.endswith("ValueError: the end é")
    assert kept.startswith("…")
    assert bounded_error("short") == "short"


def test_split_error_reads_a_class_and_a_message() -> None:
    assert split_error(TRACE) == ("ValueError", "bad input")
    assert split_error("Traceback (most recent call last):\n  x\nKeyError") == ("KeyError", "")
    assert split_error("requests.exceptions.Timeout: read timed out") == (
        "requests.exceptions.Timeout",
        "read timed out",
    )
    assert split_error("lease expired") == (None, "lease expired")
    assert split_error("http://x failed") == (None, "http://x failed")
    assert split_error(None) == (None, None)
    assert split_error("") == (None, None)


def test_a_lease_record_written_before_worker_ids_decodes() -> None:
    old = msgspec.msgpack.encode(["lease", T0, "default", 1000, ["l1"]])
    command = decode_command(old)
    assert isinstance(command, Lease) and command.worker is None
    machine = _machine()
    machine.apply(command)
    job = machine.get("j")
    assert job is not None and job.worker is None and job.leased_at == T0


def test_snapshot_keeps_history_and_worker() -> None:
    machine = _machine()
    machine.apply(Lease(T0 + 1, "default", 1000, ["l1"], "w1"))
    machine.apply(Fail(T0 + 2, "j", "l1", "boom"))
    machine.apply(Expire(T0 + 3))
    machine.apply(Lease(T0 + 4, "default", 1000, ["l2"], "w2"))
    restored = StateMachine()
    restored.restore(machine.snapshot())
    assert restored.snapshot() == machine.snapshot()
    job = restored.get("j")
    assert job is not None and job.worker == "w2"
    assert [a.outcome for a in attempt_history(job)] == ["failed", "running"]


def test_an_earlier_attempts_error_is_cut_to_1_kib_and_counted_as_held() -> None:
    from jq_tool.core.attempts import OLDER_ERROR_BYTES, error_chars

    machine = _machine()
    long_error = "x" * 5000 + "\nRuntimeError: first"
    machine.apply(Lease(T0 + 1, "default", 1000, ["l1"]))
    machine.apply(Fail(T0 + 2, "j", "l1", long_error))
    job = machine.get("j")
    assert job is not None and job.history is not None and job.history[0].error == long_error
    assert error_chars(job) == 0  # the same text as the current error
    machine.apply(Expire(T0 + 3))
    machine.apply(Lease(T0 + 4, "default", 1000, ["l2"]))
    machine.apply(Fail(T0 + 5, "j", "l2", "ValueError: second"))
    job = machine.get("j")
    assert job is not None and job.history is not None
    first, second = job.history
    assert first.error is not None and len(first.error.encode()) <= OLDER_ERROR_BYTES
    assert first.error.endswith("RuntimeError: first") and second.error == "ValueError: second"
    assert error_chars(job) == len(first.error)
