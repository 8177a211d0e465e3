"""Reading a request: one header, the body within its size limit, and decoding what was read
into the Structs of `validation.py` (like Starlette's requests.py, for our hot routes).

Headers are looked up in the raw ASGI list: cheaper than building Starlette's Headers for one
lookup. The body size is checked against the limit from Content-Length before anything is
read, and again while a chunked body streams in, so an oversized request costs us at most
`limit` bytes of memory. A body is a msgspec Struct decoded straight from the bytes (unknown
fields ignored); a decoding failure becomes a 400 that names the field, and a payload or
result over the configured size a 413 that names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from jq_tool.server.errors import PAYLOAD_TOO_LARGE, ApiError, invalid_field

Body = TypeVar("Body", bound=msgspec.Struct)

_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_AT_FIELD = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def header(request: Request, name: bytes) -> str | None:
    """One request header by its lower-case name."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def too_large(what: str, limit: int, field: str | None = None) -> ApiError:
    return ApiError(413, PAYLOAD_TOO_LARGE, f"{what} is larger than {limit} bytes", field)


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


def decode(body: bytes, type_: type[Body]) -> Body:
    """Decode a JSON object body into `type_`; an empty body means `{}`. Raises ApiError 400."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(body or b"{}")
    except msgspec.ValidationError as exc:
        raise _refusal(exc) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def decode_query(params: Mapping[str, str], type_: type[Body]) -> Body:
    """Query parameters into `type_`, numbers parsed from their text; an empty parameter counts
    as absent. Raises ApiError 400 naming the parameter."""
    try:
        return msgspec.convert({k: v for k, v in params.items() if v}, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise _refusal(exc) from None


def check_value(value: str, type_: Any, name: str) -> None:
    """A single value (a header) against an annotated type of validation.py. Raises 400."""
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise invalid_field(name, f"invalid {name!r}: {exc}") from None


def check_size(value: str, limit: int, field: str) -> None:
    """A payload (or result) over the limit in UTF-8 bytes → 413 naming the field."""
    # A str of n code points is at most 4n UTF-8 bytes: most strings need no encoding at all.
    if len(value) * 4 > limit and len(value.encode()) > limit:
        raise too_large(field, limit, field)


def _refusal(error: msgspec.ValidationError) -> ApiError:
    text = str(error)
    match = _AT_FIELD.search(text) or _MISSING_FIELD.search(text)
    if match is None:
        return ApiError(400, "invalid_json", f"the body must be a JSON object: {text}")
    field = match.group(1)
    # msgspec says "Expected `int` >= 0 - at `$.max_retries`"; the field is reported apart.
    return invalid_field(field, f"invalid field {field!r}: {text.split(' - at `', 1)[0]}")
