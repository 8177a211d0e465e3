"""Request bodies: reading them within the size limit and decoding them into typed records.

Each route's body is a msgspec Struct decoded straight from the bytes (unknown fields ignored);
a decoding failure becomes a 400 that names the field. The body size is checked against the
limit from Content-Length before anything is read, and again while a chunked body streams in,
so an oversized request costs us at most `limit` bytes of memory.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from jq_tool.auth import KeyType, Scope
from jq_tool.server.errors import PAYLOAD_TOO_LARGE, ApiError, invalid_field

MAX_LEASE_WAIT_MS = 30_000
MAX_BATCH = 1000

QueueName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
LeaseMs = Annotated[int, msgspec.Meta(ge=1000, le=3_600_000)]
Priority = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
MaxRetries = Annotated[int, msgspec.Meta(ge=0, le=1000)]
DelayMs = Annotated[int, msgspec.Meta(ge=0, le=10 * 365 * 86_400_000)]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SubmitBody(msgspec.Struct):
    payload: str = ""
    max_retries: MaxRetries = 3
    priority: Priority = 0
    delay_ms: DelayMs | None = None
    run_at: str | None = None  # RFC 3339; parsed by the route, which knows the clock
    queue: QueueName = "default"
    idempotency_key: IdempotencyKey | None = None


class BatchBody(msgspec.Struct):
    # Raw entries: each is decoded on its own so one bad entry does not sink the batch.
    jobs: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class LeaseBody(msgspec.Struct):
    queue: QueueName = "default"
    wait_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_LEASE_WAIT_MS)] = 0
    max_jobs: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    lease_ms: LeaseMs | None = None


class AckBody(msgspec.Struct):
    result: str | None = None
    result_error: str | None = None  # non-empty: the attempt failed
    lease_id: str | None = None


class ExtendBody(msgspec.Struct):
    lease_id: str | None = None
    lease_ms: LeaseMs | None = None


class KeyCreateBody(msgspec.Struct):
    name: Label
    owner_id: Label
    type: KeyType
    scopes: list[Scope] | None = None


class EmptyBody(msgspec.Struct):
    pass


Body = TypeVar("Body", bound=msgspec.Struct)

_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_AT_FIELD = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def too_large(what: str, limit: int, field: str | None = None) -> ApiError:
    return ApiError(413, PAYLOAD_TOO_LARGE, f"{what} is larger than {limit} bytes", field)


def header(request: Request, name: bytes) -> str | None:
    """One request header by its lower-case name, read from the raw ASGI headers: cheaper than
    building Starlette's Headers for one lookup on the hot routes."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over `limit` bytes before or while reading."""
    length = header(request, b"content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "invalid_request", "Content-Length is not a number")
        if int(length) > limit:
            raise too_large("request body", limit)
    receive = request.receive
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            body += chunk
            if len(body) > limit:
                raise too_large("request body", limit)
        if not message.get("more_body", False):
            return body


def field_of(error: msgspec.ValidationError) -> str | None:
    text = str(error)
    match = _AT_FIELD.search(text) or _MISSING_FIELD.search(text)
    return match.group(1) if match else None


def decode(body: bytes, type_: type[Body]) -> Body:
    """Decode a JSON object body into `type_`; an empty body means `{}`. Raises ApiError 400."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(body or b"{}")
    except msgspec.ValidationError as exc:
        field = field_of(exc)
        if field is None:
            raise ApiError(400, "invalid_json", f"the body must be a JSON object: {exc}") from None
        raise invalid_field(field, f"invalid field {field!r}: {_short(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _short(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int` >= 0 - at `$.max_retries`"; the field is reported apart.
    return str(exc).split(" - at `", 1)[0]


def check_payload_size(value: str, limit: int, field: str) -> None:
    """A payload (or result) over the limit in UTF-8 bytes → 413 naming the field."""
    # A str of n code points is at most 4n UTF-8 bytes: most strings need no encoding at all.
    if len(value) * 4 > limit and len(value.encode()) > limit:
        raise too_large(field, limit, field)
