"""Per-minute history in the state machine: counted by the logged minute, kept 24 h, bounded
in queues, kept in the snapshot and identical after a replay of the same log."""

from __future__ import annotations

from jq_tool.core.history import MINUTE_MS, MINUTES_KEPT, QUEUES_TRACKED
from jq_tool.core.model import Ack, Command, Fail, Lease, NewJob, Submit
from jq_tool.core.state_machine import StateMachine

T0 = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS
M0 = T0 // MINUTE_MS


def _log() -> list[Command]:
    commands: list[Command] = [
        Submit(T0, [NewJob("a", "q1", "p"), NewJob("b", "q1", "p"), NewJob("c", "q2", "p")]),
        Lease(T0 + 1, "q1", 1000, ["l1", "l2"]),
        Ack(T0 + MINUTE_MS, "a", "l1"),
        Fail(T0 + 2 * MINUTE_MS + 5, "b", "l2", "boom"),
    ]
    return commands


def test_counts_by_minute_globally_and_per_queue() -> None:
    machine = StateMachine()
    for command in _log():
        machine.apply(command)
    tracked, submitted, acked, failed = machine.history(None, 3, M0 + 2)
    assert tracked and submitted == [3, 0, 0] and acked == [0, 1, 0] and failed == [0, 0, 1]
    assert machine.history("q1", 3, M0 + 2) == (True, [2, 0, 0], [0, 1, 0], [0, 0, 1])
    assert machine.history("q2", 2, M0 + 1) == (True, [1, 0], [0, 0], [0, 0])
    assert machine.history("nope", 1, M0) == (False, [0], [0], [0])


def test_history_survives_a_snapshot_and_a_replay_means_the_same() -> None:
    machine, replayed = StateMachine(), StateMachine()
    for command in _log():
        machine.apply(command)
        replayed.apply(command)
    restored = StateMachine()
    restored.restore(machine.snapshot())
    assert restored.history(None, 3, M0 + 2) == machine.history(None, 3, M0 + 2)
    assert restored.snapshot() == machine.snapshot() == replayed.snapshot()


def test_only_the_last_day_and_a_bounded_number_of_queues_are_kept() -> None:
    machine = StateMachine()
    for i in range(QUEUES_TRACKED + 5):
        machine.apply(Submit(T0, [NewJob(f"j{i}", f"q{i:03d}", "p")]))
    assert machine.history(f"q{QUEUES_TRACKED + 1:03d}", 1, M0)[0] is False
    later = T0 + MINUTES_KEPT * MINUTE_MS
    machine.apply(Submit(later, [NewJob("new", "fresh", "p")]))
    # A day later the idle queues' counts are out of the window: a new queue takes a place.
    assert machine.history("fresh", 1, M0 + MINUTES_KEPT) == (True, [1], [0], [0])
    assert machine.history(None, MINUTES_KEPT, M0 + MINUTES_KEPT)[1][0] == 0
