"""The chaos harness's pure pieces: flag spellings, durations, percentiles, the ledger and the
verdict maths. No server: these are the rules the real runs are judged by."""

from __future__ import annotations

import json

import pytest

from jq_tool.chaos.ledger import Ledger, chaos_payload, payload_index
from jq_tool.chaos.options import ChaosOptions, normalise_argv, parse_duration
from jq_tool.chaos.report import ZERO_LOSS, percentile, verify
from jq_tool.chaos.target import ADMIN_KEY_LINE, redact


def test_seed_single_dash_flags_become_long_flags() -> None:
    argv = [
        "-target",
        "http://localhost:8080",
        "-key",
        "admin_x",
        "-jobs",
        "10000",
        "-workers",
        "16",
        "-kills",
        "20",
        "-kill-interval",
        "2s",
        "-kill-cmd",
        "docker compose kill queue",
        "-restart-cmd=docker compose up -d queue",
        "-json",
    ]
    assert normalise_argv(argv) == [
        "--target",
        "http://localhost:8080",
        "--key",
        "admin_x",
        "--jobs",
        "10000",
        "--workers",
        "16",
        "--kills",
        "20",
        "--kill-interval",
        "2s",
        "--kill-cmd",
        "docker compose kill queue",
        "--restart-cmd=docker compose up -d queue",
        "--json",
    ]


def test_normalise_leaves_values_unknown_flags_and_long_flags_alone() -> None:
    argv = ["--jobs", "5", "-seed", "-3", "-x", "--", "-jobs"]
    assert normalise_argv(argv) == ["--jobs", "5", "--seed", "-3", "-x", "--", "-jobs"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("1.5m", 90.0), ("1h", 3600.0), ("3", 3.0), (" 250ms ", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2x", "-1s", "s", "1 2s"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_options_problems_name_each_bad_flag() -> None:
    assert ChaosOptions().problems() == []
    problems = ChaosOptions(jobs=0, workers=0, target="localhost", kills=2).problems()
    assert "--jobs must be at least 1" in problems
    assert "--workers must be at least 1" in problems
    assert any("http://" in p for p in problems)
    assert any("--key" in p for p in problems)
    assert any("--kill-cmd" in p for p in problems)
    assert any("--target" in p for p in ChaosOptions(kill_cmd="true").problems())
    assert any("--queue" in p for p in ChaosOptions(queue="no spaces").problems())
    assert any("--release-share" in p for p in ChaosOptions(release_share=1.5).problems())


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_payload_round_trip_and_foreign_payloads() -> None:
    payload = chaos_payload("run1", 42)
    assert payload_index("run1", payload) == 42
    assert payload_index("run2", payload) is None
    assert payload_index("run1", "not json") is None
    assert payload_index("run1", '{"chaos_run": "run1", "index": "7"}') is None


def _clean_run(jobs: int = 3) -> Ledger:
    ledger = Ledger("r", jobs)
    for i in range(jobs):
        ledger.submit_started(i, at=float(i))
        ledger.submit_acknowledged(i, f"job-{i}", at=float(i) + 0.01)
        ledger.execution_started(f"job-{i}", 1, f"lease-{i}", i, at=float(i) + 0.02)
        ledger.ack_confirmed(f"job-{i}", at=float(i) + 0.1 * (i + 1))
    return ledger


def test_clean_run_is_zero_loss() -> None:
    ledger = _clean_run()
    assert ledger.all_acks_confirmed()
    states = {f"job-{i}": "ACKED" for i in range(3)}
    report = verify(ledger, states, kills=2, restarts=2, wall_time_s=2.0, load_time_s=1.5)
    assert (report.submitted, report.acked, report.lost, report.duplicates) == (3, 3, 0, 0)
    assert report.zero_loss
    assert report.result == ZERO_LOSS
    assert "result: ZERO LOSS ✓" in report.to_text()
    assert report.throughput_jobs_per_s == pytest.approx(2.0)
    # submit→ack latencies are 100, 200 and 300 ms
    assert report.latency_ms["p50"] == pytest.approx(200.0)
    assert report.latency_ms["p99"] == pytest.approx(300.0)
    body = json.loads(report.to_json())
    assert body["zero_loss"] is True
    assert body["result"] == ZERO_LOSS
    assert (body["lost"], body["duplicates"], body["kills"]) == (0, 0, 2)


def test_job_not_acked_or_missing_at_the_end_is_lost() -> None:
    ledger = _clean_run()
    states: dict[str, str | None] = {"job-0": "ACKED", "job-1": "RUNNING", "job-2": None}
    report = verify(ledger, states, kills=0, restarts=0, wall_time_s=1.0, load_time_s=1.0)
    assert report.lost == 2
    assert report.acked == 1
    assert {(lost.job_id, lost.state) for lost in report.lost_jobs} == {
        ("job-1", "RUNNING"),
        ("job-2", "MISSING"),
    }
    assert not report.zero_loss
    assert "ZERO LOSS" not in report.to_text()
    assert "2 lost" in report.result


def test_execution_after_confirmed_ack_is_a_duplicate() -> None:
    ledger = _clean_run()
    ledger.execution_started("job-1", 2, "lease-x", 1, at=99.0)
    states = {f"job-{i}": "ACKED" for i in range(3)}
    report = verify(ledger, states, kills=0, restarts=0, wall_time_s=1.0, load_time_s=1.0)
    assert report.lost == 0
    assert report.duplicates == 1
    assert report.duplicate_details[0].kind == "executed_after_ack"
    assert not report.zero_loss


def test_reexecution_before_any_ack_is_at_least_once_not_a_duplicate() -> None:
    ledger = Ledger("r", 1)
    ledger.submit_started(0, at=0.0)
    ledger.submit_acknowledged(0, "job-0", at=0.1)
    ledger.execution_started("job-0", 1, "lease-a", 0, at=0.2)  # lease died with the server
    ledger.execution_started("job-0", 2, "lease-b", 0, at=6.0)  # expired, leased again
    ledger.ack_confirmed("job-0", at=6.1)
    report = verify(ledger, {"job-0": "ACKED"}, kills=1, restarts=1, wall_time_s=7.0, load_time_s=7)
    assert report.duplicates == 0
    assert report.executions == 2
    assert report.zero_loss


def test_the_same_attempt_leased_again_is_a_duplicate_unless_it_was_released() -> None:
    """A release gives the attempt back under its number (POST /jobs/{id}/release): leased
    again, it is no duplicate. Leased again without one, it is: the server handed one attempt
    to two workers."""
    for released in (True, False):
        ledger = Ledger("r", 1)
        ledger.submit_started(0, at=0.0)
        ledger.submit_acknowledged(0, "job-0", at=0.1)
        ledger.execution_started("job-0", 1, "lease-a", 0, at=0.2)
        if released:
            ledger.release_sent("job-0", 1)
            ledger.release_answered(sure=True)
        ledger.execution_started("job-0", 1, "lease-b", 0, at=0.3)
        ledger.ack_confirmed("job-0", at=0.4)
        states = {"job-0": "ACKED"}
        report = verify(ledger, states, kills=0, restarts=0, wall_time_s=1.0, load_time_s=1.0)
        assert report.zero_loss is released, report
        assert report.releases == (1 if released else 0)
        if not released:
            assert [d.kind for d in report.duplicate_details] == ["same_attempt_twice"]


def test_one_idempotency_key_becoming_two_jobs_is_a_duplicate() -> None:
    ledger = _clean_run()
    # A worker leases a job whose payload says "submit 2", but submit 2 was told job-2.
    ledger.execution_started("job-other", 1, "lease-o", 2, at=50.0)
    states = {**{f"job-{i}": "ACKED" for i in range(3)}, "job-other": "ACKED"}
    report = verify(ledger, states, kills=0, restarts=0, wall_time_s=1.0, load_time_s=1.0)
    assert report.duplicates == 1
    assert report.duplicate_details[0].kind == "one_key_two_jobs"
    assert report.duplicate_details[0].index == 2


def test_two_submits_answered_with_one_job_id_is_a_duplicate() -> None:
    ledger = Ledger("r", 2)
    for i in range(2):
        ledger.submit_started(i, at=0.0)
        ledger.submit_acknowledged(i, "same", at=0.1)
    report = verify(ledger, {"same": "ACKED"}, kills=0, restarts=0, wall_time_s=1, load_time_s=1)
    assert report.duplicates == 1
    assert report.duplicate_details[0].kind == "two_keys_one_job"


def test_unacknowledged_or_refused_submits_are_never_zero_loss() -> None:
    ledger = _clean_run(2)
    ledger.submits.append(type(ledger.submits[0])(2, "k"))  # a third submit, never answered
    ledger.submit_rejected(2, "HTTP 400 invalid_field: payload")
    states = {"job-0": "ACKED", "job-1": "ACKED"}
    report = verify(ledger, states, kills=0, restarts=0, wall_time_s=1, load_time_s=1)
    assert (report.lost, report.duplicates, report.unacknowledged) == (0, 0, 1)
    assert report.rejections == {"HTTP 400 invalid_field: payload": 1}
    assert not report.zero_loss
    assert "never acknowledged" in report.result


def test_broken_off_run_reports_its_error_not_a_loss_count() -> None:
    ledger = _clean_run()
    report = verify(
        ledger, {}, kills=1, restarts=0, wall_time_s=1, load_time_s=1, error="boom", verified=False
    )
    assert report.lost == 0
    assert not report.zero_loss
    assert "boom" in report.result
    assert json.loads(report.to_json())["verified"] is False


def test_admin_key_line_is_parsed_and_secrets_are_redacted() -> None:
    line = "INFO jq: Created admin key: admin_AbC123_xyz-9 (owner: dev-admin)"
    match = ADMIN_KEY_LINE.search(line)
    assert match is not None and match.group(1) == "admin_AbC123_xyz-9"
    assert "AbC123" not in redact(line)
    assert "admin_…" in redact(line)


def test_retried_submits_and_idempotent_replays_are_counted() -> None:
    ledger = Ledger("r", 2)
    ledger.submit_started(0, at=0.0)
    ledger.submit_retried(0)
    ledger.submit_acknowledged(0, "job-0", at=1.0, replayed=True)
    ledger.submit_started(1, at=0.0)
    ledger.submit_acknowledged(1, "job-1", at=0.1)
    states = {"job-0": "ACKED", "job-1": "ACKED"}
    report = verify(ledger, states, kills=1, restarts=1, wall_time_s=1, load_time_s=1)
    assert (report.submit_retries, report.idempotent_replays) == (1, 1)
    body = json.loads(report.to_json())
    assert (body["submit_retries"], body["idempotent_replays"]) == (1, 1)
    assert report.zero_loss  # a replay is the idempotency key doing its job, not a duplicate


def test_keyless_retry_duplicates_are_counted_apart_from_keyed_ones() -> None:
    # Submit 0 went without a key: retried, it made two jobs (a worker leased the second).
    # Submit 1 carried its key, and so must never make two.
    ledger = Ledger("r", 2, without_key={0})
    assert [record.keyed for record in ledger.submits] == [False, True]
    ledger.submit_started(0, at=0.0)
    ledger.submit_retried(0)
    ledger.submit_acknowledged(0, "job-0b", at=1.0)
    ledger.execution_started("job-0a", 1, "l0", 0, at=1.5)
    ledger.submit_started(1, at=0.0)
    ledger.submit_acknowledged(1, "job-1", at=0.5)
    states = {"job-0a": "ACKED", "job-0b": "ACKED", "job-1": "ACKED"}
    report = verify(ledger, states, kills=1, restarts=1, wall_time_s=1, load_time_s=1)
    assert (report.duplicates, report.duplicates_from_keyed_retries) == (0, 0)
    assert (report.duplicates_from_unkeyed_retries, report.submits_without_key) == (1, 1)
    assert report.zero_loss and report.result == ZERO_LOSS  # expected without a key
    assert [dup.kind for dup in report.duplicate_details] == ["retried_without_key"]
    body = json.loads(report.to_json())
    assert body["duplicates_from_keyed_retries"] == 0
    assert body["duplicates_from_unkeyed_retries"] == 1
    assert "made 1 extra jobs when retried" in report.to_text()

    # The same with a key is a broken promise: counted as a duplicate, and the run fails.
    keyed = Ledger("r", 1)
    keyed.submit_started(0, at=0.0)
    keyed.submit_retried(0)
    keyed.submit_acknowledged(0, "job-b", at=1.0)
    keyed.execution_started("job-a", 1, "l0", 0, at=1.5)
    report = verify(
        keyed, {"job-a": "ACKED", "job-b": "ACKED"}, kills=1, restarts=1, wall_time_s=1,
        load_time_s=1,
    )  # fmt: skip
    assert (report.duplicates, report.duplicates_from_keyed_retries) == (1, 1)
    assert not report.zero_loss


def test_without_key_share_is_checked() -> None:
    assert ChaosOptions(without_key=0.25).problems() == []
    assert ChaosOptions(without_key=1.5).problems() == [
        "--without-key must be a share between 0 and 1"
    ]
    assert normalise_argv(["-without-key", "0.2"]) == ["--without-key", "0.2"]
