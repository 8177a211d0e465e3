"""What one tenant's submits may do to another's and to the server: idempotency keys scoped to
the owner and tied to the request's fingerprint, kept for the time the Submit command carries,
and the cap on queues holding jobs (also carried by the command)."""

from __future__ import annotations

import msgspec

from jq_tool.core.model import (
    Ack,
    Error,
    ErrorCode,
    Lease,
    NewJob,
    Purge,
    PurgeResult,
    Submit,
    SubmitResult,
    Submitted,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine, _Snapshot

T0 = 1_000_000
DAY = 86_400_000


def submit(
    sm: StateMachine, *jobs: NewJob, now: int = T0, keep_ms: int = DAY, max_queues: int = 0
) -> list[Submitted | Error]:
    result = sm.apply(Submit(now, list(jobs), keep_ms, max_queues))
    assert isinstance(result, SubmitResult)
    return result.entries


def code(entry: Submitted | Error) -> ErrorCode | None:
    return entry.code if isinstance(entry, Error) else None


def keyed(job_id: str, owner: str, fingerprint: str | None, key: str = "k", **kw: object) -> NewJob:
    return NewJob(job_id, idempotency_key=key, owner=owner, fingerprint=fingerprint, **kw)  # type: ignore[arg-type]


def test_same_owner_same_request_answers_the_first_job() -> None:
    sm = StateMachine()
    assert submit(sm, keyed("a", "acme", "f1")) == [Submitted("a")]
    assert submit(sm, keyed("b", "acme", "f1"), now=T0 + 10) == [Submitted("a", duplicate=True)]
    assert sm.get("b") is None and sm.job_count == 1


def test_same_owner_different_request_is_refused_and_creates_nothing() -> None:
    sm = StateMachine()
    submit(sm, keyed("a", "acme", "f1"))
    (entry,) = submit(sm, keyed("b", "acme", "f2"), now=T0 + 10)
    assert isinstance(entry, Error) and entry.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert "'k'" in entry.message and "a" in entry.message
    assert sm.get("b") is None and sm.job_count == 1
    assert sm.stats().counters.submitted == 1
    # The key still answers the first request.
    assert submit(sm, keyed("c", "acme", "f1"), now=T0 + 20) == [Submitted("a", duplicate=True)]


def test_another_owner_with_the_same_key_gets_its_own_job() -> None:
    sm = StateMachine()
    submit(sm, keyed("a", "acme", "f1"))
    assert submit(sm, keyed("b", "globex", "f1")) == [Submitted("b")]
    (entry,) = submit(sm, keyed("c", "globex", "f2"), now=T0 + 5)
    assert code(entry) is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert submit(sm, keyed("e", "acme", "f1")) == [Submitted("a", duplicate=True)]


def test_within_one_batch_a_key_answers_its_first_entry() -> None:
    sm = StateMachine()
    entries = submit(sm, keyed("a", "o", "f1"), keyed("b", "o", "f1"), keyed("c", "o", "f2"))
    assert entries[:2] == [Submitted("a"), Submitted("a", duplicate=True)]
    assert code(entries[2]) is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert sm.job_count == 1


def test_keep_time_travels_in_the_command_and_purge_forgets() -> None:
    sm = StateMachine()
    submit(sm, keyed("a", "o", "f1"), keep_ms=1000)
    # A later submit with a longer keep time does not extend the first key's.
    (entry,) = submit(sm, keyed("b", "o", "f2"), now=T0 + 999, keep_ms=DAY)
    assert code(entry) is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert sm.apply(Purge(T0 + 1000, finished_before=0)) == PurgeResult(0, 1)
    # Forgotten: the key is free for a new request.
    assert submit(sm, keyed("c", "o", "f2"), now=T0 + 1001) == [Submitted("c")]


def test_an_old_log_without_owner_or_fingerprint_replays_as_it_was_answered() -> None:
    # The first release's Submit: [now, jobs], each job 7 fields. Decoded today: owner "", no
    # fingerprint, 24 h keep, no queue cap; and its duplicates answer as they did then.
    first_release = msgspec.msgpack.encode(["submit", T0, [["a", "default", "p", 0, 3, None, "k"]]])
    command = decode_command(first_release)
    assert isinstance(command, Submit)
    assert (command.idempotency_ms, command.max_queues) == (DAY, 0)
    assert (command.jobs[0].owner, command.jobs[0].fingerprint) == ("", None)
    sm = StateMachine()
    assert sm.apply(command) == SubmitResult([Submitted("a")])
    again = msgspec.msgpack.encode(["submit", T0 + 1, [["b", "default", "other", 0, 3, None, "k"]]])
    assert sm.apply(decode_command(again)) == SubmitResult([Submitted("a", duplicate=True)])
    # No API key has owner "": today's submits never match those keys.
    assert submit(sm, keyed("c", "dev-client", "f1")) == [Submitted("c")]
    assert decode_command(encode_command(command)) == command


def test_a_snapshot_without_owners_restores_its_keys_as_owner_empty() -> None:
    legacy = _Snapshot(1, T0, 0, msgspec.structs.replace(StateMachine().stats().counters), [],
                       [("k", "a", T0 + 1000)])  # fmt: skip
    sm = StateMachine()
    sm.restore(msgspec.msgpack.encode(legacy))
    assert sm._idempotency == {("", "k"): ("a", None, T0 + 1000)}
    restored = StateMachine()
    restored.restore(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()
    assert sm.apply(Purge(T0 + 1000, finished_before=0)) == PurgeResult(0, 1)


def test_scoped_keys_survive_snapshot_and_restore() -> None:
    sm = StateMachine()
    submit(sm, keyed("a", "acme", "f1"), keyed("b", "globex", None, key="g"))
    restored = StateMachine()
    restored.restore(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()
    assert submit(restored, keyed("c", "acme", "f1")) == [Submitted("a", duplicate=True)]
    assert code(submit(restored, keyed("d", "acme", "f9"))[0]) is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert submit(restored, keyed("e", "globex", "f7", key="g")) == [Submitted("b", duplicate=True)]


def test_queue_cap_counts_queues_holding_jobs() -> None:
    sm = StateMachine()
    assert submit(sm, NewJob("a", queue="q1"), NewJob("b", queue="q2"), max_queues=2) == [
        Submitted("a"),
        Submitted("b"),
    ]
    entries = submit(sm, NewJob("c", queue="q3"), NewJob("d", queue="q1"), max_queues=2)
    assert isinstance(entries[0], Error) and entries[0].code is ErrorCode.TOO_MANY_QUEUES
    assert "2 queues" in entries[0].message
    assert entries[1] == Submitted("d")
    assert sm.get("c") is None
    # Without a cap in the command (an old log), the same submit is taken.
    assert submit(sm, NewJob("e", queue="q3")) == [Submitted("e")]


def test_a_queue_emptied_by_purge_no_longer_counts() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a", queue="q1"), NewJob("b", queue="q2"), max_queues=2)
    (leased,) = sm.apply(Lease(T0, "q1", 1000, ["L"])).jobs  # type: ignore[union-attr]
    sm.apply(Ack(T0 + 1, leased.id, "L"))
    (entry,) = submit(sm, NewJob("c", queue="q3"), now=T0 + 2, max_queues=2)
    assert code(entry) is ErrorCode.TOO_MANY_QUEUES
    assert sm.apply(Purge(T0 + 3, finished_before=T0 + 1)) == PurgeResult(1, 0)
    assert "q1" not in sm.stats().queues
    assert submit(sm, NewJob("c", queue="q3"), now=T0 + 4, max_queues=2) == [Submitted("c")]
    # The live machine and a restored one agree on the queues they hold.
    restored = StateMachine()
    restored.restore(sm.snapshot())
    assert sorted(restored._queues) == sorted(sm._queues) == ["q2", "q3"]


def test_malformed_submit_fields_are_invalid_not_a_crash() -> None:
    sm = StateMachine()
    for command in (
        Submit(T0, [NewJob("a")], -1, 0),
        Submit(T0, [NewJob("a")], DAY, -5),
        Submit(T0, [NewJob("a")], "x", 0),  # type: ignore[arg-type]
    ):
        result = sm.apply(command)
        assert isinstance(result, Error) and result.code is ErrorCode.INVALID
    entries = submit(sm, NewJob("a", owner=5), NewJob("b", fingerprint=b"x"))  # type: ignore[arg-type]
    assert all(isinstance(e, Error) and e.code is ErrorCode.INVALID for e in entries)
    assert sm.job_count == 0


def test_stats_top_keeps_the_busiest_and_counts_them_all() -> None:
    sm = StateMachine()
    jobs = [NewJob(f"j{i}", queue=f"q{i % 5}") for i in range(10)]  # two jobs in each queue
    jobs += [NewJob("busy-1", queue="q3"), NewJob("busy-2", queue="q3"), NewJob("x", queue="q1")]
    submit(sm, *jobs)
    everything = sm.stats()
    top = sm.stats(top=2)
    assert everything.queue_count == top.queue_count == 5
    assert list(top.queues) == ["q1", "q3"]  # by name; q3 holds 4 jobs, q1 3
    assert top.totals == everything.totals and top.totals.total == 13
    assert top.queues["q3"] == everything.queues["q3"]
    assert sm.stats(top=0).queues == {} and sm.stats(top=0).queue_count == 5
    assert StateMachine().stats(top=3).queue_count == 0


def test_queue_page_walks_every_queue_by_name() -> None:
    sm = StateMachine()
    submit(sm, *[NewJob(f"j{i}", queue=f"q{i:02d}") for i in range(7)])
    seen, after = [], None
    while True:
        page = sm.queue_page(after, 3)
        if not page:
            break
        seen += [name for name, _ in page]
        after = page[-1][0]
    assert seen == [f"q{i:02d}" for i in range(7)]
    assert sm.queue_page("q05", 10)[0][1].runnable == 1
