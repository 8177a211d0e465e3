"""The OpenAPI 3.1 document served at /openapi.json (by `openapi_route.py`): docs/api.md in
machine-readable form.

The body schemas are generated from the Structs the server itself decodes requests into
(`validation.py`, where every limit is declared once) and encodes answers from (`wire.py`),
through `msgspec.json.schema_components`: a limit the decoder enforces is the limit this
document publishes. Only what has no Struct is written here by hand: the /stats body (built
from the engine's counters), the per-entry union of a batch answer, and the paths themselves,
because the contract comes first: a test checks that every route of the app is here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jq_tool.auth import SCOPES_BY_TYPE, KeyType, Scope
from jq_tool.core.model import (
    DeadGroupAction,
    JobState,
    MissedPolicy,
    OverlapPolicy,
    ParentFailure,
    UniqueScope,
)
from jq_tool.server.insight_wire import (
    DeadGroupActionBody,
    DeadGroupList,
    DeadGroupSettled,
    DeadGroupView,
    ExplanationView,
    ProgressBody,
)
from jq_tool.server.validation import (
    QUEUE_NAME_PATTERN,
    AckBatchBody,
    AckBody,
    AckEntry,
    BatchBody,
    ExtendBody,
    IdempotencyKey,
    KeyCreateBody,
    LeaseBody,
    LeaseNextBody,
    ListQuery,
    ListState,
    QueueListQuery,
    QueueSettingsBody,
    ReleaseBody,
    ScheduleBody,
    ScheduleChangeBody,
    ScheduleListQuery,
    SubmitBody,
    WorkerId,
)
from jq_tool.server.wire import (
    AckBatchAnswer,
    AckResult,
    AttemptView,
    BatchRefusal,
    CreatedKey,
    ErrorBody,
    ExtendedLease,
    Health,
    HealthProblem,
    JobPage,
    JobView,
    KeyView,
    LeasedJob,
    ProgressView,
    QueuePage,
    QueueSettingsView,
    QueueView,
    RevokedKey,
    SchedulePage,
    ScheduleView,
    SettledJob,
    ShardHealth,
    StreamTicket,
    SubmitAnswer,
)
from jq_tool.server.wire_console import (
    BulkAnswer,
    BulkBody,
    ForgottenWorker,
    HeldLease,
    HistoryQuery,
    HistoryView,
    QueueDetail,
    QueueDetailQuery,
    Throughput,
    WorkerListQuery,
    WorkerPage,
    WorkerView,
)

_REF = "#/components/schemas/"

# Every component of the document: the Structs (and the enums their fields use) under the names
# this document has always given them, which are not always the Python names.
_PUBLISHED: dict[type, str] = {
    SubmitBody: "SubmitRequest",
    BatchBody: "BatchRequest",
    LeaseBody: "LeaseRequest",
    AckBody: "AckRequest",
    ExtendBody: "ExtendRequest",
    ReleaseBody: "ReleaseRequest",
    KeyCreateBody: "KeyCreateRequest",
    ErrorBody: "Error",
    SubmitAnswer: "SubmitResponse",
    BatchRefusal: "BatchRefusal",
    LeasedJob: "LeasedJob",
    SettledJob: "JobState",
    ExtendedLease: "ExtendedLease",
    JobView: "Job",
    JobPage: "JobList",
    Health: "Health",
    HealthProblem: "HealthProblem",
    ShardHealth: "ShardHealth",
    QueueView: "Queue",
    QueuePage: "QueueList",
    StreamTicket: "Ticket",
    KeyView: "Key",
    CreatedKey: "CreatedKey",
    RevokedKey: "Revoked",
    JobState: "State",  # "JobState" is the settled job's shape above, as it always was
    KeyType: "KeyType",
    Scope: "Scope",
    AckEntry: "AckEntry",
    LeaseNextBody: "LeaseNext",
    AckBatchBody: "AckBatchRequest",
    AckResult: "AckResult",
    AckBatchAnswer: "AckBatchResponse",
    ScheduleBody: "ScheduleRequest",
    ScheduleChangeBody: "ScheduleChange",
    ScheduleView: "Schedule",
    SchedulePage: "ScheduleList",
    OverlapPolicy: "OverlapPolicy",
    MissedPolicy: "MissedPolicy",
    UniqueScope: "UniqueScope",
    ParentFailure: "ParentFailure",
    QueueSettingsBody: "QueueSettingsRequest",
    QueueSettingsView: "QueueSettings",
    # insight (issue 19)
    ExplanationView: "Explanation",
    ProgressBody: "ProgressRequest",
    ProgressView: "Progress",
    DeadGroupView: "DeadGroup",
    DeadGroupList: "DeadGroupList",
    DeadGroupActionBody: "DeadGroupRequest",
    DeadGroupAction: "DeadGroupAction",
    DeadGroupSettled: "DeadGroupSettled",
    # The console (issue 17): wire_console.py.
    ListState: "ListState",
    AttemptView: "Attempt",
    WorkerView: "Worker",
    WorkerPage: "WorkerList",
    ForgottenWorker: "ForgottenWorker",
    HeldLease: "HeldLease",
    Throughput: "Throughput",
    QueueDetail: "QueueDetail",
    HistoryView: "History",
    BulkBody: "BulkRequest",
    BulkAnswer: "BulkResponse",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _published(node: Any, names: dict[str, str]) -> Any:
    """`node` with each $ref to a Python name pointed at the published name instead, and each
    pattern in JSON Schema's dialect: the decoder's `\\Z` (the very end, which Python's `$` is
    not) is what `$` means in ECMAScript regexes."""
    if isinstance(node, dict):
        return {
            key: _REF + names[value.removeprefix(_REF)]
            if key == "$ref"
            else value.removesuffix("\\Z") + "$"
            if key == "pattern" and isinstance(value, str) and value.endswith("\\Z")
            else _published(value, names)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_published(item, names) for item in node]
    return node


def _generated() -> tuple[
    dict[str, Any],
    dict[str, Any],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
]:
    """(component schemas, the Idempotency-Key header's schema, GET /jobs', GET /queues' and
    GET /schedules' query parameters), all from the Structs and annotated types the server
    decodes with."""
    queries = (ListQuery, QueueListQuery, ScheduleListQuery)
    (header, *_), components = msgspec.json.schema_components(
        [IdempotencyKey, *queries, *_PUBLISHED], ref_template=_REF + "{name}"
    )
    names = {cls.__name__: name for cls, name in _PUBLISHED.items()}
    params, queue_params, schedule_params = (
        [
            _query(name, _not_null(schema))
            for name, schema in _published(components.pop(query.__name__), names)[
                "properties"
            ].items()
        ]
        for query in queries
    )
    schemas = {
        names[name]: {**_published(schema, names), "title": names[name]}
        for name, schema in components.items()
    }
    # A batch's entries are decoded one by one (msgspec.Raw), so that one bad entry does not
    # sink the others; each entry is a SubmitRequest all the same.
    schemas["BatchRequest"]["properties"]["jobs"]["items"] = _ref("SubmitRequest")
    # What a Struct cannot say: rules between fields, checked by the routes.
    schemas["SubmitRequest"]["not"] = {
        "description": "delay_ms and run_at together",
        "properties": {"delay_ms": {"type": "integer"}, "run_at": {"type": "string"}},
        "required": ["delay_ms", "run_at"],
    }
    schemas["SubmitRequest"]["allOf"] = [
        {
            "description": "a unique_key with unique_scope period needs unique_period_ms",
            "if": {
                "properties": {
                    "unique_key": {"type": "string"},
                    "unique_scope": {"const": "period"},
                },
                "required": ["unique_key", "unique_scope"],
            },
            "then": {
                "properties": {"unique_period_ms": {"type": "integer"}},
                "required": ["unique_period_ms"],
            },
        }
    ]
    schemas["KeyCreateRequest"]["allOf"] = [
        {
            "if": {"properties": {"type": {"const": key_type.value}}},
            "then": {
                "properties": {
                    "scopes": {
                        "anyOf": [
                            {"type": "array", "items": {"enum": [s.value for s in scopes]}},
                            {"type": "null"},
                        ]
                    }
                }
            },
        }
        for key_type, scopes in SCOPES_BY_TYPE.items()
    ]
    return schemas, header, params, queue_params, schedule_params


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: its schema without the null branch."""
    branches = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
    if len(branches) != 1:
        return schema
    return {**branches[0], **{k: v for k, v in schema.items() if k not in ("anyOf", "default")}}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    400: (
        "bad request: the body or a field (invalid_json, invalid_field), or bytes that are not "
        "HTTP/1.1 (invalid_http: answered before the route is known, the connection closed)"
    ),
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    413: "payload too large",
    415: (
        "unsupported_encoding: the body was sent with a Content-Encoding (gzip, br, …); only an "
        "unencoded body is read (the answer carries Accept-Encoding: identity)"
    ),
    422: (
        "idempotency key already used for a different request, or a depends_on parent that "
        "is not a job of the caller's owner (unknown_parent)"
    ),
    429: "too many queues hold jobs (--max-queues), or too many schedules (10,000)",
    431: "request line and headers too large (--max-header-size); the connection is closed",
    501: "unsupported_encoding: a Transfer-Encoding other than chunked alone (gzip, chunked)",
    503: "unavailable: refused before it reached the log, not done; retry later (Retry-After)",
    504: (
        "outcome_unknown: the write reached the log and may or may not have taken effect; "
        "retry with the same Idempotency-Key (or the same lease_id), or look the job up"
    ),
    507: "storage full",
}


def _op(
    summary: str,
    scope: str | None,
    responses: dict[str, Any],
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if scope is None:
        op["security"] = []
    else:
        op["description"] = f"Scope: `{scope}`."
        errors = (401, 403, *errors, 503)
    # Any request: the head is parsed and counted before the route is known.
    errors = (*errors, 400, 431)
    op["responses"].update({str(s): {"$ref": f"#/components/responses/E{s}"} for s in errors})
    if body is not None:
        for status in ("415", "501"):  # a body in a coding (server/requests.py, read_body)
            op["responses"][status] = {"$ref": f"#/components/responses/E{status}"}
        op["requestBody"] = {
            "required": bool(SCHEMAS[body].get("required")),  # a body with required fields
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    # An empty parameter counts as absent (docs/api.md).
    return {
        "name": name,
        "in": "query",
        "required": False,
        "allowEmptyValue": True,
        "schema": schema,
    }


SCHEMAS, _IDEMPOTENCY_KEY, _LIST_QUERY, _QUEUE_QUERY, _SCHEDULE_QUERY = _generated()

# The /stats body is built from the engine's counters, not from a Struct of ours.
_COUNTS = (
    "runnable", "running", "scheduled", "retry", "dead", "acked", "cancelled", "total", "waiting"
)  # fmt: skip
_TOTALS = _obj({k: {"type": "integer"} for k in _COUNTS})
# A queue's counts, and its flow settings (PUT /queues/{name}).
_QUEUE_STATS = _obj(
    {
        **{k: {"type": "integer"} for k in _COUNTS},
        "paused": {"type": "boolean"},
        "concurrency": {"type": "integer"},
        "rate_limit": {"type": "integer"},
        "rate_period_ms": {"type": "integer"},
    }
)
SCHEMAS["Stats"] = {
    "allOf": [
        _TOTALS,
        _obj(
            {
                "queues": {
                    "type": "object",
                    "additionalProperties": _QUEUE_STATS,
                    "description": "the busiest queues (100 at most); GET /queues lists all",
                },
                "queue_count": {"type": "integer"},
                "submits_per_sec": {"type": "number"},
                "acks_per_sec": {"type": "number"},
                "totals": {"type": "object", "additionalProperties": {"type": "integer"}},
                "schedules": _obj(
                    {
                        "count": {"type": "integer"},
                        "paused": {"type": "integer"},
                        "next_fire_at": {
                            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]
                        },
                        "runs": {"type": "integer"},
                        "skipped_runs": {"type": "integer"},
                        "missed_runs": {"type": "integer"},
                    }
                ),
                # What finished jobs are held, in memory and on disk (issue 21).
                "held": _obj(
                    {
                        name: {"type": "integer"}
                        for name in (
                            "finished_in_memory",
                            "dead_in_memory",
                            "bytes_in_memory",
                            "finished_on_disk",
                            "history_bytes",
                            "evicted",
                            "dead_dropped",
                            "idempotency_keys",
                        )
                    }  # fmt: skip
                ),
                "flow": _obj(
                    {"paused_queues": {"type": "integer"}, "limited_queues": {"type": "integer"}}
                ),
                "latency": {
                    "type": "object",
                    "description": "per queue (the 50 busiest and those with a max latency): "
                    "recent time-in-queue percentiles (s), drain rate, oldest runnable job's age",
                    "additionalProperties": {"type": "object"},
                },
                "role": {"type": "string"},
                "node_id": {"type": "string"},
                "uptime_s": {"type": "number"},
            }
        ),
    ]
}
# Each entry of a batch answer is one of two Structs; msgspec publishes only tagged unions.
# Each branch names what the other must not have, so exactly one matches an entry.
SCHEMAS["BatchResponse"] = _obj(
    {
        "results": {
            "type": "array",
            "items": {
                "oneOf": [
                    {"allOf": [_ref("SubmitResponse"), {"not": {"required": ["error"]}}]},
                    {"allOf": [_ref("BatchRefusal"), {"not": {"required": ["job_id"]}}]},
                ]
            },
        }
    }
)

_ID = [_path_param("id")]
# A queue's or a schedule's name in a path: one rule for both (validation.py), and a name off it
# is a 400, so the schema says it.
_NAME = [{**_path_param("name"), "schema": {"type": "string", "pattern": QUEUE_NAME_PATTERN}}]

PATHS: dict[str, Any] = {
    "/health": {
        "get": _op(
            "Liveness and write availability",
            None,
            {
                "200": _json(_ref("Health"), "ok"),
                "503": _json(_ref("Health"), "writes refused; `reason` says why"),
            },
        )
    },
    "/jobs": {
        "post": _op(
            "Submit a job (durable before the answer)",
            "jobs:submit",
            {
                "201": _json(_ref("SubmitResponse"), "created, on disk"),
                "200": _json(_ref("SubmitResponse"), "idempotency key seen before"),
            },
            "SubmitRequest",
            [{"name": "Idempotency-Key", "in": "header", "schema": _IDEMPOTENCY_KEY}],
            (400, 413, 422, 429, 504, 507),
        ),
        "get": _op(
            "List jobs, newest first",
            "jobs:read",
            {"200": _json(_ref("JobList"), "a page")},
            params=_LIST_QUERY,
            errors=(400,),
        ),
    },
    "/jobs/batch": {
        "post": _op(
            "Submit up to 1000 jobs in one durable write",
            "jobs:submit",
            {"201": _json(_ref("BatchResponse"), "per-entry results in input order")},
            "BatchRequest",
            errors=(400, 413, 504, 507),
        )
    },
    "/jobs/lease": {
        "post": _op(
            "Lease the next job (long poll with wait_ms)",
            "jobs:lease",
            {
                "200": _json(
                    {"oneOf": [_ref("LeasedJob"), {"type": "array", "items": _ref("LeasedJob")}]},
                    "one job, or a list when max_jobs is given",
                )
            },
            "LeaseRequest",
            errors=(400, 404, 504, 507),
        )
    },
    "/jobs/ack": {
        "post": _op(
            "Settle up to 1000 leases in one durable write; lease_next leases the next jobs in it",
            "jobs:ack (and jobs:lease with lease_next)",
            {"200": _json(_ref("AckBatchResponse"), "per-entry results, and the leased jobs")},
            "AckBatchRequest",
            errors=(400, 413, 507),
        )
    },
    "/jobs/{id}": {
        "get": _op(
            "One job", "jobs:read", {"200": _json(_ref("Job"), "the job")}, None, _ID, (404,)
        )
    },
    "/jobs/{id}/ack": {
        "post": _op(
            "Settle a lease: result (ACKED) or result_error (RETRY/DEAD)",
            "jobs:ack",
            {"200": _json(_ref("JobState"), "settled")},
            "AckRequest",
            _ID,
            (400, 404, 409, 413, 504, 507),
        )
    },
    "/jobs/{id}/extend": {
        "post": _op(
            "Extend a lease",
            "jobs:ack",
            {"200": _json(_ref("ExtendedLease"), "extended")},
            "ExtendRequest",
            _ID,
            (400, 404, 409, 504, 507),
        )
    },
    "/jobs/{id}/release": {
        "post": _op(
            "Give a lease back unfinished: READY again after delay_ms, the attempt not counted",
            "jobs:ack",
            {"200": _json(_ref("JobState"), "released")},
            "ReleaseRequest",
            _ID,
            (400, 404, 409, 504, 507),
        )
    },
    "/jobs/{id}/cancel": {
        "post": _op(
            "Cancel a READY or RETRY job",
            "jobs:submit",
            {"200": _json(_ref("JobState"), "cancelled")},
            None,
            _ID,
            (400, 404, 409, 504, 507),
        )
    },
    "/jobs/{id}/requeue": {
        "post": _op(
            "Requeue a DEAD job",
            "jobs:submit",
            {"200": _json(_ref("JobState"), "requeued")},
            None,
            _ID,
            (400, 404, 409, 504, 507),
        )
    },
    "/stats": {
        "get": _op("Queue counts and rates", "jobs:read", {"200": _json(_ref("Stats"), "")})
    },
    "/queues": {
        "get": _op(
            "Every queue holding jobs, by name, a page at a time",
            "jobs:read",
            {"200": _json(_ref("QueueList"), "a page")},
            params=_QUEUE_QUERY,
            errors=(400,),
        )
    },
    "/queues/{name}": {
        "get": _op(
            "A queue's flow settings, with its counts when it holds jobs",
            "jobs:read",
            {"200": _json(_ref("QueueSettings"), "the queue")},
            None,
            _NAME,
            (400,),
        ),
        "put": _op(
            "Change a queue's flow: pause, concurrency limit, rate limit (left out: kept; 0: no "
            "limit). Needs jobs:submit and jobs:lease",
            "jobs:submit",
            {"200": _json(_ref("QueueSettings"), "changed")},
            "QueueSettingsRequest",
            _NAME,
            (400, 409, 429, 504, 507),
        ),
    },
    "/queues/{name}/pause": {
        "post": _op(
            "Pause a queue: leases skip it, submits still land. Needs jobs:submit and jobs:lease",
            "jobs:submit",
            {"200": _json(_ref("QueueSettings"), "paused")},
            None,
            _NAME,
            (400, 429, 504, 507),
        )
    },
    "/queues/{name}/resume": {
        "post": _op(
            "Resume a paused queue. Needs jobs:submit and jobs:lease",
            "jobs:submit",
            {"200": _json(_ref("QueueSettings"), "resumed")},
            None,
            _NAME,
            (400, 429, 504, 507),
        )
    },
    "/events": {
        "get": _op(
            "Server-Sent Events: `event: stats` and `event: job` (Bearer or ?ticket=)",
            "jobs:read",
            {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}}},
            params=[_query("ticket", {"type": "string"})],
        )
    },
    "/events/ticket": {
        "post": _op(
            "A 5-minute read-only ticket for /events",
            "jobs:read",
            {"200": _json(_ref("Ticket"), "")},
        )  # fmt: skip
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            "jobs:read",
            {"200": {"description": "text format", "content": {"text/plain": {}}}},
        )
    },
    "/openapi.json": {"get": _op("This document", None, {"200": {"description": "OpenAPI 3.1"}})},
    "/admin/keys": {
        "post": _op(
            "Create a key (the secret is shown only here)",
            "keys:create",
            {"201": _json(_ref("CreatedKey"), "created")},
            "KeyCreateRequest",
            errors=(400,),
        ),
        "get": _op(
            "Every key, without secrets",
            "keys:create",
            {"200": _json({"type": "array", "items": _ref("Key")}, "")},
        ),
    },
    "/keys": {
        "get": _op(
            "The caller's owner's keys",
            "keys:read",
            {"200": _json({"type": "array", "items": _ref("Key")}, "")},
        )
    },
    "/keys/{key}": {
        "delete": _op(
            "Revoke a key by its key_id (keys:revoke: any key; keys:read: the caller's owner's; "
            "an admin key needs keys:create). A secret in the path is refused (400)",
            "keys:read",
            {"200": _json(_ref("Revoked"), "revoked")},
            None,
            [
                {
                    "name": "key",
                    "in": "path",
                    "required": True,
                    "description": "the key's key_id, never the key itself (a 400)",
                    "schema": {"type": "string", "pattern": "^(client|worker|admin)_[0-9a-f]{16}$"},
                }
            ],
            (400, 404),
        )
    },
    "/_noop": {"post": _op("Benchmark baseline: does nothing", None, {"200": {"description": ""}})},
    "/schedules": {
        "post": _op(
            "Create a schedule (a periodic job)",
            "jobs:submit",
            {
                "201": _json(_ref("Schedule"), "created"),
                "200": _json(_ref("Schedule"), "the same schedule existed (a retried create)"),
            },
            "ScheduleRequest",
            errors=(400, 409, 413, 429, 504, 507),
        ),
        "get": _op(
            "Every schedule, by name, a page at a time",
            "jobs:read",
            {"200": _json(_ref("ScheduleList"), "a page")},
            params=_SCHEDULE_QUERY,
            errors=(400,),
        ),
    },
    "/schedules/{name}": {
        "get": _op(
            "One schedule, with its next due times (`upcoming`)",
            "jobs:read",
            {"200": _json(_ref("Schedule"), "the schedule")},
            None,
            _NAME,
            (404,),
        ),
        "patch": _op(
            "Change a schedule: a new cron or timezone starts from the next due time after now",
            "jobs:submit",
            {"200": _json(_ref("Schedule"), "changed")},
            "ScheduleChange",
            _NAME,
            (400, 404, 409, 413, 504, 507),
        ),
        "delete": _op(
            "Delete a schedule (the jobs it made stay)",
            "jobs:submit",
            {"200": _json(_ref("Schedule"), "deleted: the schedule as it was")},
            None,
            _NAME,
            (404, 504, 507),
        ),
    },
    "/schedules/{name}/pause": {
        "post": _op(
            "Pause a schedule: no runs until it is resumed",
            "jobs:submit",
            {"200": _json(_ref("Schedule"), "paused")},
            None,
            _NAME,
            (400, 404, 409, 504, 507),
        )
    },
    "/schedules/{name}/resume": {
        "post": _op(
            "Resume a schedule from its next due time after now (what passed is not missed)",
            "jobs:submit",
            {"200": _json(_ref("Schedule"), "resumed")},
            None,
            _NAME,
            (400, 404, 409, 504, 507),
        )
    },
}


# -- insight (issue 19) ------------------------------------------------------------------------
_FINGERPRINT = [_path_param("fingerprint")]
PATHS.update(
    {
        "/jobs/{id}/explain": {
            "get": _op(
                "Why the job is where it is: one sentence (`summary`), a `reason`, and fields",
                "jobs:read",
                {"200": _json(_ref("Explanation"), "the explanation")},
                None,
                _ID,
                (404,),
            )
        },
        "/jobs/{id}/progress": {
            "post": _op(
                "Report a running attempt's progress (0..1) and a short note",
                "jobs:ack",
                {"200": _json(_obj({"job_id": {"type": "string"}, "progress": _ref("Progress")}),
                              "recorded")},
                "ProgressRequest",
                _ID,
                (400, 404, 409, 413, 504, 507),
            )
        },
        "/dead/groups": {
            "get": _op(
                "The DEAD jobs grouped by their last error's fingerprint, biggest first",
                "jobs:read",
                {"200": _json(_ref("DeadGroupList"), "the groups")},
            )
        },
        **{
            f"/dead/groups/{{fingerprint}}/{action}": {
                "post": _op(
                    f"{action.capitalize()} every job of a dead-letter group that died before "
                    "the request, in logged commands of `chunk` jobs",
                    "jobs:submit",
                    {"200": _json(_ref("DeadGroupSettled"), "done")},
                    "DeadGroupRequest",
                    _FINGERPRINT,
                    (400, 404, 413, 504, 507),
                )
            }
            for action in ("requeue", "cancel")
        },
    }
)  # fmt: skip


def _console_paths() -> dict[str, Any]:
    """The console's routes (issue 17; docs/api.md "The operator's console"), their query
    parameters generated from wire_console.py's Structs like the others'."""
    queries = (WorkerListQuery, QueueDetailQuery, HistoryQuery)
    (worker_id, *_), components = msgspec.json.schema_components(
        [WorkerId, *queries], ref_template=_REF + "{name}"
    )
    worker_query, queue_query, history_query = (
        [
            _query(name, _not_null(schema))
            for name, schema in _published(components.pop(query.__name__), {})["properties"].items()
        ]
        for query in queries
    )
    header = {
        "name": "X-Jq-Worker",
        "in": "header",
        "description": "the worker's id, kept on each job it leases (GET /workers)",
        "schema": _published(worker_id, {}),
    }
    for path in ("/jobs/lease", "/jobs/ack"):
        PATHS[path]["post"].setdefault("parameters", []).append(header)
    return {
        "/workers": {
            "get": _op(
                "Live workers: leases held (logged) and last seen (this node's soft state)",
                "jobs:read",
                {"200": _json(_ref("WorkerList"), "a page")},
                params=worker_query,
                errors=(400,),
            )
        },
        "/workers/{worker_id}": {
            "delete": _op(
                "A worker that stopped: this node's list of workers drops it at once (soft"
                " state; the leases it still holds keep it listed)",
                "jobs:lease",
                {"200": _json(_ref("ForgottenWorker"), "whether this node had it listed")},
                None,
                [{**_path_param("worker_id"), "schema": _published(worker_id, {})}],
                (400,),
            )
        },
        "/queues/{name}/overview": {
            "get": _op(
                "One queue: counts by state, latency, throughput, the leases held (paged)",
                "jobs:read",
                {"200": _json(_ref("QueueDetail"), "the queue")},
                None,
                [*_NAME, *queue_query],
                (400, 404),
            )
        },
        "/stats/history": {
            "get": _op(
                "Per-minute submitted/acked/failed counts over the last hour or day",
                "jobs:read",
                {"200": _json(_ref("History"), "the counts")},
                params=history_query,
                errors=(400,),
            )
        },
        "/jobs/bulk": {
            "post": _op(
                "Requeue the DEAD jobs, or cancel the waiting jobs, matching a filter",
                "jobs:submit",
                {"200": _json(_ref("BulkResponse"), "done: every chunk durable")},
                "BulkRequest",
                errors=(400, 413, 504, 507),
            )
        },
    }


PATHS.update(_console_paths())

# Sharded mode's routes (--shards): in the document of a sharded server only, as they are in
# its app (elsewhere they do not exist: 404).
SCHEMAS["QueueMoveRequest"] = {
    "type": "object",
    "properties": {"to": {"type": "integer", "description": "the shard to move the queue to"}},
    "required": ["to"],
    "additionalProperties": False,
}
_SHARDED_PATHS: dict[str, Any] = {
    "/health/shards/{shard}": {
        "get": _op(
            "One shard's write availability (a quorum for its queues)",
            None,
            {
                "200": _json(_ref("Health"), "its queues take writes"),
                "503": _json(_ref("Health"), "no quorum; `reason` says why (Retry-After: 1)"),
            },
            params=[_path_param("shard")],
            errors=(404,),
        )
    },
    "/admin/shards": {
        "get": _op(
            "The placement table as this node sees it: shards, their health, "
            "replicas and queue counts, and each queue's shard, epoch and move",
            "keys:create",
            {"200": _json({"type": "object"}, "")},
        )
    },
    "/admin/queues/{name}/move": {
        "post": _op(
            "Move a queue to another shard (or finish its stopped move)",
            "keys:create",
            {"200": _json({"type": "object"}, "moved, or nothing to do")},
            "QueueMoveRequest",
            _NAME,
            (400, 409),
        )
    },
}


def openapi_document(sharded: bool = False) -> dict[str, Any]:
    """The API this server serves: with sharded mode's routes when it runs sharded."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jq",
            "version": "0.1.0",
            "description": "A durable, crash-proof job queue. See docs/api.md.",
        },
        "security": [{"bearer": []}],
        "paths": {**PATHS, **_SHARDED_PATHS} if sharded else PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                f"E{status}": _json(_ref("Error"), text) for status, text in _ERRORS.items()
            },
        },
    }
