"""Reading a request: one header, the body within its size limit, and decoding what was read
into the Structs of `validation.py` (like Starlette's requests.py, for our hot routes).

Headers are looked up in the raw ASGI list: cheaper than building Starlette's Headers for one
lookup. The body size is checked against the limit from Content-Length before anything is
read, and again while a chunked body streams in, so an oversized request costs us at most
`limit` bytes of memory. A body is a msgspec Struct decoded straight from the bytes (unknown
fields ignored); a decoding failure becomes a 400 that names the field, and a payload or
result over the configured size a 413 that names it.

JSON nested deeper than MAX_JSON_DEPTH levels is refused (400) before the decoder sees it: the
decoder recurses once per level, and a thousand levels (even in a field nobody reads) ran it
out of stack. The check is linear and almost free for the usual body, which holds fewer
brackets than the limit. A numeric query parameter must be written with ASCII digits.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request

from jq_tool.server.errors import PAYLOAD_TOO_LARGE, UNSUPPORTED_ENCODING, ApiError, invalid_field
from jq_tool.server.validation import PAYLOAD_REQUIRED, QUEUE_NAME_RULE

Body = TypeVar("Body", bound=msgspec.Struct)

_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
# Where msgspec says a fault is: "- at `$.acks[1].lease_id`" (absent at the top level).
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
MAX_JSON_DEPTH = 64
# What nesting is made of: brackets (both kinds as one: the depth is all that is checked here,
# a `[}` is the decoder's to refuse) and the quotes that start and end the strings they may be
# written in as text.
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
# A message, not a shared ApiError: an exception object raised again keeps every raise's frames
# and so every refused body (server/auth_guard.py says why).
_TOO_DEEP = f"the body nests JSON deeper than {MAX_JSON_DEPTH} levels"
# What a refusal of these fields says instead of the decoder's words: (the decoder's words that
# mean it, the message). A missing, null or empty payload is the original's "payload is
# required"; a queue name off the pattern says the rule rather than the decoder's regex.
# Keyed by a field's own name, wherever it sits ("queue" and "lease_next.queue").
_FIELD_RULES = {
    "payload": (("missing required", "got `null`", "length >="), PAYLOAD_REQUIRED),
    "queue": (("regex",), f"{{field}} must be {QUEUE_NAME_RULE}"),
}
_int_fields: dict[type, frozenset[str]] = {}
_IDENTITY = (b"", b"identity")  # the Content-Encoding values of a body read as it is


def header(request: Request, name: bytes) -> str | None:
    """One request header by its lower-case name. Given twice, it is a 400 naming it, as a
    repeated query parameter is: two `Authorization`s or `Idempotency-Key`s are ambiguous, and
    taking the first (as a proxy in front may take the last) hides that from the client."""
    found = None
    for key, value in request.scope["headers"]:
        if key == name:
            if found is not None:
                field = name.decode("latin-1").title()
                raise invalid_field(field, f"the {field} header is given more than once")
            found = value
    return None if found is None else found.decode("latin-1")


def too_large(what: str, limit: int, field: str | None = None) -> ApiError:
    return ApiError(413, PAYLOAD_TOO_LARGE, f"{what} is larger than {limit} bytes", field)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over `limit` bytes before or while reading, and
    a body in a coding the server does not decode (it decodes none but HTTP/1.1's chunked
    framing): 415 for a content coding, 501 for a transfer coding (RFC 9110 §12.5.3, RFC 9112
    §6.1). Read as JSON, gzip's bytes would only be "invalid character (byte 0)"."""
    length = None
    for key, value in request.scope["headers"]:  # one pass for all three: every body
        if key == b"content-length":
            length = value.decode("latin-1")
        elif key == b"content-encoding" and value.strip().lower() not in _IDENTITY:
            raise _unsupported_coding(415, "Content-Encoding", value, "an unencoded body")
        elif key == b"transfer-encoding" and value.lower().translate(None, b" \t") != b"chunked":
            raise _unsupported_coding(501, "Transfer-Encoding", value, "chunked alone")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
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


def _unsupported_coding(status: int, header: str, value: bytes, read: str) -> ApiError:
    coding = value.decode("latin-1")[:64]
    message = f"the body is sent with {header} {coding!r}: only {read} is read"
    return ApiError(status, UNSUPPORTED_ENCODING, message)


def check_depth(body: bytes) -> None:
    """Refuse (400) JSON nested deeper than MAX_JSON_DEPTH, without recursing and with only
    C-speed bytes operations (a body of 100 small jobs: ~41 µs with regexes, ~12 µs so).

    Escapes go first: an escaped backslash, then an escaped quote, removed left to right as
    the decoder reads them, so every quote left opens or closes a string, and the pieces
    between quotes alternate outside and inside strings. Of the brackets outside, each pass
    removes every innermost pair, i.e. one level. Where the text is not JSON (a backslash
    outside a string, say) this may count differently, but only past the point where the
    decoder stops at the error, so the decoder never nests deeper than the levels counted."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return  # it cannot nest deeper than the brackets it holds
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(body.translate(_AS_SQUARE, _NOT_STRUCTURE).split(b'"')[::2])
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            return
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            # Unbalanced (e.g. "]["): not JSON, and the decoder must not recurse into it.
            raise ApiError(400, "invalid_json", "the body is not valid JSON: unbalanced brackets")
        brackets = inner
    if brackets:
        raise ApiError(400, "invalid_json", _TOO_DEEP)


def decode(body: bytes, type_: type[Body]) -> Body:
    """Decode a JSON object body into `type_`; an empty body means `{}`. Raises ApiError 400."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    check_depth(body)
    try:
        return decoder.decode(body or b"{}")
    except msgspec.ValidationError as exc:
        if "got `float`" in str(exc):
            whole = _with_whole_numbers(body, type_)
            if whole is not None:
                return whole
        raise _refusal(exc) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def decode_query(params: QueryParams, type_: type[Body], *, any_case: tuple[str, ...] = ()) -> Body:
    """Query parameters into `type_`, numbers parsed from their text (ASCII digits only: "²"
    or "٣" is a 400, not a number); an empty parameter counts as absent, a parameter given
    twice is a 400, and the parameters named in `any_case` are upper-cased (enum names). Raises
    ApiError 400 naming the parameter."""
    given: dict[str, Any] = {}
    for name, value in params.multi_items():
        if name in given:
            raise invalid_field(name, f"{name} is given more than once")
        given[name] = value.upper() if name in any_case else value
    given = {name: value for name, value in given.items() if value}
    for name in _integer_fields(type_).intersection(given):
        value = given[name]
        if not (value.isascii() and value.removeprefix("-").isdigit()):
            raise invalid_field(name, f"{name} must be a whole number written with digits 0-9")
        given[name] = int(value)
    try:
        # Strict: text stays text ("null" is not None, "1e2" not a number).
        return msgspec.convert(given, type_)
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


def _with_whole_numbers(body: bytes, type_: type[Body]) -> Body | None:
    """JSON Schema counts 2.0 as an integer, so /openapi.json cannot refuse it, and neither may
    we: a body whose fault was a whole number written with a fraction (`"max_jobs": 2.0`) is
    decoded again with those numbers as ints, at any depth (`lease_next.max_jobs` too). None
    when that does not help (1.5 stays wrong)."""
    try:
        fields = msgspec.json.decode(body)
        if not isinstance(fields, dict):
            return None
        return msgspec.convert(_whole_numbers(fields), type_)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        return None


def _whole_numbers(value: Any) -> Any:
    """`value` with every whole float an int. Recursion is bounded: check_depth came first."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {name: _whole_numbers(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def _integer_fields(type_: type) -> frozenset[str]:
    fields = _int_fields.get(type_)
    if fields is None:
        info = msgspec.inspect.type_info(type_)
        assert isinstance(info, msgspec.inspect.StructType)
        fields = _int_fields[type_] = frozenset(f.name for f in info.fields if _is_integer(f.type))
    return fields


def _is_integer(info: msgspec.inspect.Type) -> bool:
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_is_integer(t) for t in info.types)
    return isinstance(info, msgspec.inspect.IntType)


def _refusal(error: msgspec.ValidationError) -> ApiError:
    """A 400 naming the field to fix by its whole path (`acks[1].lease_id`,
    `lease_next.max_jobs`), not the top-level object it sits in."""
    text = str(error)
    at = _AT_PATH.search(text)
    path = at.group(1) if at else ""
    missing = _MISSING_FIELD.search(text)
    if missing is not None:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    if not path:
        return ApiError(400, "invalid_json", f"the body must be a JSON object: {text}")
    rule = _FIELD_RULES.get(path.rpartition(".")[2])
    if rule is not None and any(words in text for words in rule[0]):
        return invalid_field(path, rule[1].replace("{field}", path))
    # msgspec says "Expected `int` >= 0 - at `$.max_retries`"; the field is reported apart.
    return invalid_field(path, f"invalid field {path!r}: {text.split(' - at `', 1)[0]}")
