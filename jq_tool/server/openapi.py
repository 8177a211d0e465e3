"""The OpenAPI 3.1 document served at /openapi.json: docs/api.md in machine-readable form.

Hand-written as data (not derived from the routes) because the contract comes first: docs/api.md
and this document describe the same API, and a test checks that every route of the app is here.
"""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": ["string", "null"], "format": "date-time"}
_NSTR = {"type": ["string", "null"]}
_STATE = {"type": "string", "enum": ["READY", "RUNNING", "ACKED", "RETRY", "DEAD", "CANCELLED"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "invalid_json / invalid_field",
        401: "no, unknown or revoked key",
        403: "the key lacks the scope",
        404: "not found",
        409: "lease_mismatch / invalid_state",
        413: "payload_too_large",
        503: "unavailable",
        507: "storage_full",
    }
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses if s in text}


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
    op["responses"].update(_errors(*errors))
    if body is not None:
        op["requestBody"] = {"content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_COUNTS = ("runnable", "running", "scheduled", "retry", "dead", "acked", "cancelled", "total")
_QUEUE_STATS = _obj({k: {"type": "integer"} for k in _COUNTS})

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {"error": {"type": "string"}, "code": {"type": "string"}, "field": {"type": "string"}},
        ["error", "code"],
    ),
    "SubmitRequest": _obj(
        {
            "payload": {"type": "string", "default": ""},
            "max_retries": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 3},
            "priority": {"type": "integer", "default": 0},
            "delay_ms": {"type": "integer", "minimum": 0},
            "run_at": _TIME,
            "queue": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.:-]{1,128}$",
                "default": "default",
            },
            "idempotency_key": {"type": "string", "maxLength": 256},
        }
    ),
    "SubmitResponse": _obj(
        {"job_id": {"type": "string"}, "duplicate": {"type": "boolean"}}, ["job_id"]
    ),
    "BatchRequest": _obj(
        {
            "jobs": {
                "type": "array",
                "items": _ref("SubmitRequest"),
                "minItems": 1,
                "maxItems": 1000,
            }
        },
        ["jobs"],
    ),
    "BatchResponse": _obj(
        {
            "results": {
                "type": "array",
                "items": {
                    "oneOf": [
                        _obj({"job_id": {"type": "string"}, "duplicate": {"type": "boolean"}}),
                        _obj({"error": {"type": "string"}, "field": _NSTR}),
                    ]
                },
            }
        }
    ),
    "LeaseRequest": _obj(
        {
            "queue": {"type": "string", "default": "default"},
            "wait_ms": {"type": "integer", "minimum": 0, "maximum": 30000},
            "max_jobs": {"type": "integer", "minimum": 1, "maximum": 100},
            "lease_ms": {"type": "integer", "minimum": 1000, "maximum": 3600000},
        }
    ),
    "LeasedJob": _obj(
        {
            "job_id": {"type": "string"},
            "payload": {"type": "string"},
            "lease_until": _TIME,
            "attempt": {"type": "integer"},
            "lease_id": {"type": "string"},
            "queue": {"type": "string"},
            "priority": {"type": "integer"},
            "max_retries": {"type": "integer"},
        }
    ),
    "AckRequest": _obj(
        {
            "result": {"type": "string"},
            "result_error": {"type": "string"},
            "lease_id": {"type": "string"},
        }
    ),  # fmt: skip
    "ExtendRequest": _obj({"lease_id": {"type": "string"}, "lease_ms": {"type": "integer"}}),
    "JobState": _obj({"job_id": {"type": "string"}, "state": _STATE}),
    "Job": _obj(
        {
            "job_id": {"type": "string"},
            "state": _STATE,
            "attempts": {"type": "integer"},
            "max_retries": {"type": "integer"},
            "created_at": _TIME,
            "result": _NSTR,
            "result_error": _NSTR,
            "payload": {"type": "string"},
            "queue": {"type": "string"},
            "priority": {"type": "integer"},
            "run_at": _NTIME,
            "lease_until": _NTIME,
            "updated_at": _NTIME,
            "idempotency_key": _NSTR,
        }
    ),
    "JobList": _obj({"jobs": {"type": "array", "items": _ref("Job")}, "next_cursor": _NSTR}),
    "Stats": {
        "allOf": [
            _QUEUE_STATS,
            _obj(
                {
                    "queues": {"type": "object", "additionalProperties": _QUEUE_STATS},
                    "submits_per_sec": {"type": "number"},
                    "acks_per_sec": {"type": "number"},
                    "totals": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "role": {"type": "string"},
                    "node_id": {"type": "string"},
                    "uptime_s": {"type": "number"},
                }
            ),
        ]
    },
    "Ticket": _obj({"ticket": {"type": "string"}, "expires_at": _TIME}),
    "KeyCreateRequest": _obj(
        {
            "name": {"type": "string"},
            "owner_id": {"type": "string"},
            "type": {"type": "string", "enum": ["client", "worker", "admin"]},
            "scopes": {"type": "array", "items": {"type": "string"}},
        },
        ["name", "owner_id", "type"],
    ),
    "Key": _obj(
        {
            "key_id": {"type": "string"},
            "key_prefix": {"type": "string"},
            "name": {"type": "string"},
            "owner_id": {"type": "string"},
            "type": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "created_at": _TIME,
            "revoked_at": _NTIME,
        }
    ),
    "CreatedKey": {"allOf": [_ref("Key"), _obj({"key": {"type": "string"}}, ["key"])]},
    "Revoked": _obj(
        {"message": {"type": "string"}, "key": {"type": "string"}, "revoked_at": _TIME}
    ),
}

_ID = [_path_param("id")]

PATHS: dict[str, Any] = {
    "/health": {
        "get": _op(
            "Liveness and write availability",
            None,
            {"200": _json(_obj({"status": {"type": "string"}, "role": {"type": "string"}}), "ok")},
            errors=(503,),
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
            [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
            (400, 413, 507),
        ),
        "get": _op(
            "List jobs, newest first",
            "jobs:read",
            {"200": _json(_ref("JobList"), "a page")},
            params=[
                _query("state", _STATE),
                _query("queue", {"type": "string"}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _query("cursor", {"type": "string"}),
            ],
            errors=(400,),
        ),
    },
    "/jobs/batch": {
        "post": _op(
            "Submit up to 1000 jobs in one durable write",
            "jobs:submit",
            {"201": _json(_ref("BatchResponse"), "per-entry results in input order")},
            "BatchRequest",
            errors=(400, 413, 507),
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
            errors=(400, 404, 507),
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
            (400, 404, 409, 413, 507),
        )
    },
    "/jobs/{id}/extend": {
        "post": _op(
            "Extend a lease",
            "jobs:ack",
            {"200": _json(_obj({"job_id": {"type": "string"}, "lease_until": _TIME}), "extended")},
            "ExtendRequest",
            _ID,
            (400, 404, 409, 507),
        )
    },
    "/jobs/{id}/cancel": {
        "post": _op(
            "Cancel a READY or RETRY job",
            "jobs:submit",
            {"200": _json(_ref("JobState"), "cancelled")},
            None,
            _ID,
            (404, 409, 507),
        )
    },
    "/jobs/{id}/requeue": {
        "post": _op(
            "Requeue a DEAD job",
            "jobs:submit",
            {"200": _json(_ref("JobState"), "requeued")},
            None,
            _ID,
            (404, 409, 507),
        )
    },
    "/stats": {
        "get": _op("Queue counts and rates", "jobs:read", {"200": _json(_ref("Stats"), "")})
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
            "Revoke a key (admins: any; others: their owner's)",
            "any key",
            {"200": _json(_ref("Revoked"), "revoked")},
            None,
            [_path_param("key")],
            (404,),
        )
    },
    "/_noop": {"post": _op("Benchmark baseline: does nothing", None, {"200": {"description": ""}})},
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jq",
            "version": "0.1.0",
            "description": "A durable, crash-proof job queue. See docs/api.md.",
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                f"E{status}": _json(_ref("Error"), text)
                for status, text in {
                    400: "bad request",
                    401: "unauthorized",
                    403: "forbidden",
                    404: "not found",
                    409: "conflict",
                    413: "payload too large",
                    503: "unavailable",
                    507: "storage full",
                }.items()
            },
        },
    }
