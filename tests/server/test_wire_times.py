"""The server's one formatter and parser of times (issue 15, finding 4), the new rows of the
error table, and the request reader's limits, as pure functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest
from starlette.datastructures import QueryParams

from jq_tool.core.model import ErrorCode
from jq_tool.engine.base import CommandRejected
from jq_tool.sdk.types import Job as SdkJob
from jq_tool.server.errors import ApiError, to_response
from jq_tool.server.requests import MAX_JSON_DEPTH, check_depth, decode, decode_query
from jq_tool.server.validation import AckBatchBody, LeaseBody, ListQuery, SubmitBody
from jq_tool.server.wire import LAST_RUN_AT_MS, parse_rfc3339, rfc3339

YEAR_1 = -62_135_596_800_000


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (YEAR_1, "0001-01-01T00:00:00.000Z"),  # was "1-01-01T…"
        (YEAR_1 - 3_600_000, "0001-01-01T00:00:00.000Z"),  # year 0 does not exist: held at 1
        (-(2**62), "0001-01-01T00:00:00.000Z"),
        (-30_610_224_000_000, "1000-01-01T00:00:00.000Z"),
        (-30_610_224_000_001, "0999-12-31T23:59:59.999Z"),
        (LAST_RUN_AT_MS, "9999-12-31T23:59:59.999Z"),
        (2**62, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_every_time_written_is_rfc3339_that_clients_read(ms: int, text: str) -> None:
    assert rfc3339(ms) == text
    # What the SDK (and so `jq get`, `jq list`) decodes a job's times with.
    fields = {"job_id": "j", "state": "READY", "attempts": 0, "max_retries": 0,
              "created_at": text, "run_at": text, "queue": "q", "priority": 0}  # fmt: skip
    job = msgspec.json.decode(json.dumps(fields), type=SdkJob)
    assert job.run_at is not None and job.run_at.tzinfo is not None
    assert datetime.fromisoformat(text.replace("Z", "+00:00")).year == job.run_at.year


def test_parse_keeps_milliseconds_and_offsets() -> None:
    assert parse_rfc3339("1970-01-01T00:00:00.0009Z") == 0
    assert parse_rfc3339("1970-01-02T01:00:00.5+01:00") == 86_400_500
    assert parse_rfc3339("1969-12-31T23:00:00-01:00".replace("1969-12-31", "1970-01-01")) > 0
    assert parse_rfc3339("2030-01-01T00:00:00-00:30") == parse_rfc3339("2030-01-01T00:30:00Z")
    stamp = datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1000
    assert parse_rfc3339("2030-01-01t00:00:00z") == stamp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2030-01-01T00:00:00+00:60",
        "+2030-01-01T00:00:00Z",
        "2030-1-01T00:00:00Z",
        "1970-01-01T05:00:00+01:00",  # inside in UTC, but the rule is one a pattern can state
        "9999-12-31T01:00:00-01:00",
        "1969-12-31T23:00:00-02:00",
    ],
)
def test_parse_refuses_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339|valid date-time|outside|offset must"):
        parse_rfc3339(text)


def test_error_table_rows_of_issue_15() -> None:
    reused = to_response(CommandRejected(ErrorCode.IDEMPOTENCY_KEY_REUSED, "used"))
    assert reused.status_code == 422
    assert json.loads(bytes(reused.body))["code"] == "idempotency_key_reused"
    full = to_response(CommandRejected(ErrorCode.TOO_MANY_QUEUES, "cap"))
    assert full.status_code == 429 and full.headers["retry-after"]
    assert json.loads(bytes(full.body))["code"] == "too_many_queues"


def test_depth_is_checked_without_recursion() -> None:
    check_depth(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    check_depth(b'{"a": "' + b"[" * 10_000 + b'"}')  # brackets inside a string are text
    check_depth(b'{"a": "\\"[[[[", "b": []}')  # an escaped quote does not end the string
    for body in (b"[" * 65 + b"]" * 65, b"[" * 1_000_000, b"][" * 100):
        with pytest.raises(ApiError) as refused:
            check_depth(body)
        assert (refused.value.status, refused.value.code) == (400, "invalid_json")
    # Mismatched kinds nest no deeper than their count: the decoder refuses them.
    with pytest.raises(ApiError) as refused:
        decode(b'{"payload": "x", "odd": ' + b"[}" * 100 + b"}", SubmitBody)
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")
    with pytest.raises(ApiError):
        decode(b'{"payload": "x", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}", SubmitBody)


def test_whole_floats_are_ints_but_halves_are_not() -> None:
    assert decode(b'{"max_jobs": 2.0, "wait_ms": 0.0}', LeaseBody).max_jobs == 2
    # Inside a nested object too (schemathesis sent this one).
    nested = decode(b'{"acks": [{"job_id": "j"}], "lease_next": {"max_jobs": 84.0}}', AckBatchBody)
    assert nested.lease_next is not None and nested.lease_next.max_jobs == 84
    with pytest.raises(ApiError) as refused:
        decode(b'{"acks": [{"job_id": "j"}], "lease_next": {"max_jobs": 8.5}}', AckBatchBody)
    assert refused.value.field == "lease_next.max_jobs"
    with pytest.raises(ApiError) as refused:
        decode(b'{"max_jobs": 2.5}', LeaseBody)
    assert refused.value.field == "max_jobs"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b'{"acks": [{"job_id": "j"}, {}]}', "acks[1].job_id", "missing required field"),
        (b'{"acks": [{"job_id": "j", "lease_id": 5}]}', "acks[0].lease_id", "got `int`"),
        (
            b'{"acks": [{"job_id": "j"}], "lease_next": {"max_jobs": 0}}',
            "lease_next.max_jobs",
            ">= 1",
        ),
        (
            b'{"acks": [{"job_id": "j"}], "lease_next": {"queue": "a b"}}',
            "lease_next.queue",
            "queue",
        ),
        (b'{"acks": [{"job_id": "j"}], "lease_next": 5}', "lease_next", "got `int`"),
        (b'{"acks": []}', "acks", "length >= 1"),
        (b"{}", "acks", "missing required field"),
    ],
)
def test_a_refused_nested_field_is_named_by_its_whole_path(
    body: bytes, field: str, words: str
) -> None:
    # A 400 names the field a client has to fix, not the top-level object it sits in.
    with pytest.raises(ApiError) as refused:
        decode(body, AckBatchBody)
    assert (refused.value.status, refused.value.code) == (400, "invalid_field")
    assert refused.value.field == field
    assert field in refused.value.message and words in refused.value.message


def test_query_numbers_are_ascii_digits() -> None:
    assert decode_query(QueryParams("limit=20"), ListQuery).limit == 20
    for value in ("²", "٣", "1e2", "2.0", "+3"):
        with pytest.raises(ApiError) as refused:
            decode_query(QueryParams({"limit": value}), ListQuery)
        assert refused.value.field == "limit"
    with pytest.raises(ApiError) as refused:
        decode_query(QueryParams("state=DEAD&state=READY"), ListQuery)
    assert refused.value.field == "state" and "more than once" in refused.value.message
    with pytest.raises(ApiError):  # "null" is text, not an absent value
        decode_query(QueryParams("state=null"), ListQuery)
