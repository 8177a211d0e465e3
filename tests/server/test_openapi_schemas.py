"""The request schemas of /openapi.json are the limits the server enforces: for each limit, the
value at it is accepted by the running server and by the published schema, and the value just
past it is refused by both. The document itself is checked by openapi-spec-validator."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

_PRIORITY_MAX = 2**31 - 1
_TEN_YEARS_MS = 10 * 365 * 86_400_000

# (field, the value at the limit, the value just past it) of POST /jobs.
SUBMIT_LIMITS = [
    ("max_retries", 0, -1),
    ("max_retries", 1000, 1001),
    ("priority", _PRIORITY_MAX, _PRIORITY_MAX + 1),
    ("priority", -_PRIORITY_MAX - 1, -_PRIORITY_MAX - 2),
    ("delay_ms", 0, -1),
    ("delay_ms", _TEN_YEARS_MS, _TEN_YEARS_MS + 1),
    ("queue", "q" * 128, "q" * 129),
    ("queue", "a.b_c:d-1", "a b"),
    ("idempotency_key", "k" * 256, "k" * 257),
    ("idempotency_key", "k", ""),
]

# The same of POST /jobs/lease; the queue holds a job, so a lease at the limit answers at once.
LEASE_LIMITS = [
    ("wait_ms", 30_000, 30_001),
    ("wait_ms", 0, -1),
    ("max_jobs", 100, 101),
    ("max_jobs", 1, 0),
    ("lease_ms", 1000, 999),
    ("lease_ms", 3_600_000, 3_600_001),
]


@pytest.fixture(scope="module")
def document(server: Any) -> dict[str, Any]:
    response = httpx.get(server.url + "/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def schema_of(document: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one component; its $refs resolve inside the published document."""
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    )


def assert_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_field"
    assert response.json()["field"] == field, response.json()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)  # raises with the offending path when it is not


def test_a_sharded_servers_document_is_valid_too() -> None:
    from jq_tool.server.openapi import openapi_document

    validate(json.loads(json.dumps(openapi_document(sharded=True))))


@pytest.mark.parametrize(("field", "at_limit", "past_limit"), SUBMIT_LIMITS)
def test_submit_limits_agree(
    document: dict[str, Any], client: httpx.Client, field: str, at_limit: Any, past_limit: Any
) -> None:
    schema = schema_of(document, "SubmitRequest")
    accepted = {"payload": "p", field: at_limit}
    assert schema.is_valid(accepted), accepted
    # 200: an idempotency key this shared server has seen in an earlier run of the test.
    assert client.post("/jobs", json=accepted).status_code in (200, 201)
    refused = {"payload": "p", field: past_limit}
    assert not schema.is_valid(refused), refused
    assert_refused(client.post("/jobs", json=refused), field)


@pytest.mark.parametrize(("field", "at_limit", "past_limit"), LEASE_LIMITS)
def test_lease_limits_agree(
    document: dict[str, Any],
    client: httpx.Client,
    worker: httpx.Client,
    field: str,
    at_limit: int,
    past_limit: int,
) -> None:
    schema = schema_of(document, "LeaseRequest")
    queue = "limits-" + uuid.uuid4().hex[:8]
    assert client.post("/jobs", json={"queue": queue, "payload": "p"}).status_code == 201
    accepted = {"queue": queue, field: at_limit}
    assert schema.is_valid(accepted)
    assert worker.post("/jobs/lease", json=accepted).status_code == 200
    refused = {"queue": queue, field: past_limit}
    assert not schema.is_valid(refused)
    assert_refused(worker.post("/jobs/lease", json=refused), field)


def test_batch_size_limits_agree(document: dict[str, Any], client: httpx.Client) -> None:
    schema = schema_of(document, "BatchRequest")
    for jobs in ([{"payload": "p"}], [{"payload": "p"}] * 1000):
        assert schema.is_valid({"jobs": jobs})
        assert client.post("/jobs/batch", json={"jobs": jobs}).status_code == 201
    for jobs in ([], [{"payload": "p"}] * 1001):
        assert not schema.is_valid({"jobs": jobs})
        assert_refused(client.post("/jobs/batch", json={"jobs": jobs}), "jobs")
    # Each entry is a SubmitRequest: its limits hold inside a batch too.
    assert not schema.is_valid({"jobs": [{"payload": "p", "max_retries": 1001}]})
    entry = client.post("/jobs/batch", json={"jobs": [{"payload": "p", "max_retries": 1001}]})
    entry = entry.json()
    assert entry["results"][0]["field"] == "max_retries"


def test_rules_between_fields_agree(document: dict[str, Any], client: httpx.Client) -> None:
    """What a Struct cannot say, the document says with `not` and `if`/`then`: a body one
    refuses, the other refuses too (schemathesis found both rules missing once each)."""
    schema = schema_of(document, "SubmitRequest")
    unique = {"payload": "p", "unique_key": uuid.uuid4().hex, "unique_scope": "period"}
    for refused, field in (
        ({**unique, "unique_period_ms": None}, "unique_period_ms"),
        ({"payload": "p", "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"}, "run_at"),
    ):
        assert not schema.is_valid(refused), refused
        assert_refused(client.post("/jobs", json=refused), field)
    for accepted in (
        {**unique, "unique_period_ms": 60_000},
        {"payload": "p", "unique_scope": "period"},  # no unique key: nothing to keep unique
        {"payload": "p", "delay_ms": None, "run_at": "2030-01-01T00:00:00Z"},
    ):
        assert schema.is_valid(accepted), accepted
        assert client.post("/jobs", json=accepted).status_code in (200, 201)


def test_path_names_agree(document: dict[str, Any], client: httpx.Client) -> None:
    """A queue's or a schedule's name in a path follows the name rule in the document, as the
    server holds it to."""
    for path in ("/queues/{name}", "/queues/{name}/pause", "/schedules/{name}"):
        operation = next(iter(document["paths"][path].values()))
        (name,) = [p for p in operation["parameters"] if p["name"] == "name"]
        rule = Draft202012Validator(name["schema"])
        assert rule.is_valid("a.b_c:d-1") and not rule.is_valid("\u00d2")
    assert_refused(client.get("/queues/%C3%92"), "name")


def test_key_limits_agree(document: dict[str, Any], admin: httpx.Client) -> None:
    schema = schema_of(document, "KeyCreateRequest")
    body = {"name": "n" * 200, "owner_id": "limits", "type": "client"}
    assert schema.is_valid(body)
    assert admin.post("/admin/keys", json=body).status_code == 201
    for field, value in (("name", "n" * 201), ("name", ""), ("type", "root")):
        refused = {**body, field: value}
        assert not schema.is_valid(refused), refused
        assert_refused(admin.post("/admin/keys", json=refused), field)


def test_header_and_query_limits_agree(document: dict[str, Any], client: httpx.Client) -> None:
    submit = document["paths"]["/jobs"]["post"]
    (header,) = [p for p in submit["parameters"] if p["name"] == "Idempotency-Key"]
    key_schema = Draft202012Validator(header["schema"])
    at_limit = uuid.uuid4().hex + "k" * 224
    assert key_schema.is_valid(at_limit) and not key_schema.is_valid(at_limit + "k")
    body = {"payload": "p"}
    assert client.post("/jobs", json=body, headers={"Idempotency-Key": at_limit}).status_code == 201
    assert_refused(
        client.post("/jobs", json=body, headers={"Idempotency-Key": at_limit + "k"}),
        "Idempotency-Key",
    )

    listing = document["paths"]["/jobs"]["get"]
    params = {p["name"]: Draft202012Validator(p["schema"]) for p in listing["parameters"]}
    assert params["limit"].is_valid(1000) and not params["limit"].is_valid(1001)
    assert not params["limit"].is_valid(0)
    assert client.get("/jobs", params={"limit": 1000}).status_code == 200
    assert_refused(client.get("/jobs", params={"limit": 1001}), "limit")
    assert_refused(client.get("/jobs", params={"limit": 0}), "limit")
    # state: the published enum is the server's, in any case on the server's side.
    state_schema = schema_of(document, "State")
    assert state_schema.is_valid("DEAD") and not state_schema.is_valid("NAPPING")
    assert client.get("/jobs", params={"state": "dead"}).status_code == 200
    assert_refused(client.get("/jobs", params={"state": "NAPPING"}), "state")


def test_answers_match_their_published_schemas(
    document: dict[str, Any], client: httpx.Client, worker: httpx.Client
) -> None:
    """The response schemas come from the Structs the server encodes: real answers fit them."""
    queue = "shapes-" + uuid.uuid4().hex[:8]
    created = client.post("/jobs", json={"queue": queue, "payload": "p"})
    assert schema_of(document, "SubmitResponse").is_valid(created.json())
    job_id = created.json()["job_id"]
    leased = worker.post("/jobs/lease", json={"queue": queue}).json()
    schema_of(document, "LeasedJob").validate(leased)
    extended = worker.post(f"/jobs/{job_id}/extend", json={"lease_id": leased["lease_id"]})
    schema_of(document, "ExtendedLease").validate(extended.json())
    acked = worker.post(f"/jobs/{job_id}/ack", json={"lease_id": leased["lease_id"]})
    schema_of(document, "JobState").validate(acked.json())
    schema_of(document, "Job").validate(client.get(f"/jobs/{job_id}").json())
    schema_of(document, "JobList").validate(client.get("/jobs", params={"queue": queue}).json())
    schema_of(document, "Stats").validate(client.get("/stats").json())
    schema_of(document, "Ticket").validate(client.post("/events/ticket").json())
    schema_of(document, "Error").validate(client.get("/jobs/nope").json())
    batch = client.post("/jobs/batch", json={"jobs": [{"payload": "p"}, {"priority": "x"}]})
    batch = batch.json()
    schema_of(document, "BatchResponse").validate(batch)
    health = httpx.get(str(client.base_url.join("/health"))).json()
    schema_of(document, "Health").validate(health)
    for key in client.get("/keys").json():
        schema_of(document, "Key").validate(key)
