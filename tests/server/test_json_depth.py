"""The JSON depth bound (server/requests.py check_depth) against two references: on valid JSON
the exact nesting of the decoded value, and on any bytes the decoder itself, which must never
nest deeper than the bound on a body the check let through."""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jq_tool.server.errors import ApiError
from jq_tool.server.requests import MAX_JSON_DEPTH, check_depth

# Text that looks like structure: brackets, quotes and backslashes are what a depth check
# could misread inside a string.
_TRICKY_TEXT = st.text(alphabet='[]{}"\\/ ab\u00e9\u2028\U0001f600', max_size=8)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), _TRICKY_TEXT)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@st.composite
def _nested(draw: st.DrawFn) -> Any:
    """A value nested a chosen number of levels around the limit, each level a list or an
    object with tricky strings beside the deeper value."""
    value: Any = draw(_SCALARS)
    for _ in range(draw(st.integers(MAX_JSON_DEPTH - 4, MAX_JSON_DEPTH + 4))):
        siblings = draw(st.lists(_TRICKY_TEXT, max_size=2))
        if draw(st.booleans()):
            value = [*siblings, value]
        else:
            value = {**{s: s for s in siblings}, draw(_TRICKY_TEXT): value}
    return value


def _accepted(body: bytes) -> bool:
    try:
        check_depth(body)
    except ApiError as exc:
        assert (exc.status, exc.code) == (400, "invalid_json")
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(_nested(), st.booleans())
def test_valid_json_is_refused_exactly_when_too_deep(value: Any, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _accepted(body) == (_depth(value) <= MAX_JSON_DEPTH)


def _decoder_nests_at_most(body: bytes, levels: int) -> bool:
    """Whether msgspec decodes (or refuses) `body` within `levels` of recursion."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + levels)
    try:
        msgspec.json.decode(body)
    except RecursionError:
        return False
    except msgspec.DecodeError:
        pass
    finally:
        sys.setrecursionlimit(old)
    return True


def test_the_decoder_probe_sees_nesting() -> None:
    assert _decoder_nests_at_most(b"[" * 60 + b"]" * 60, MAX_JSON_DEPTH + 8)
    assert not _decoder_nests_at_most(b"[" * 100 + b"]" * 100, MAX_JSON_DEPTH + 8)


@st.composite
def _mangled(draw: st.DrawFn) -> bytes:
    """Deep valid JSON with a few bytes that break its strings or escapes inserted anywhere."""
    body = bytearray(json.dumps(draw(_nested())).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        body[at:at] = draw(st.sampled_from([b'"', b"\\", b'\\"', b"\\\\", b"[", b"}"]))
    return bytes(body)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_mangled(), st.binary(max_size=300), st.text('[]{}"\\, :1').map(str.encode)))
def test_a_body_let_through_never_nests_the_decoder_deeper(body: bytes) -> None:
    if _accepted(body):
        assert _decoder_nests_at_most(body, MAX_JSON_DEPTH + 8)


@pytest.mark.parametrize(
    "body",
    [
        b'["\\\\", ' + b"[" * 70 + b"]" * 70 + b"]",  # an escaped backslash ends no string
        b'["\\\\\\"' + b"[" * 70 + b'"]',  # an escaped backslash, then an escaped quote
        b'{"a": "x\\\\\\\\"}' + b"[" * 70,
    ],
)
def test_escapes_are_read_as_the_decoder_reads_them(body: bytes) -> None:
    value_depth = None
    with contextlib.suppress(json.JSONDecodeError):
        value_depth = _depth(json.loads(body))
    accepted = _accepted(body)
    if value_depth is not None:
        assert accepted == (value_depth <= MAX_JSON_DEPTH)
    if accepted:
        assert _decoder_nests_at_most(body, MAX_JSON_DEPTH + 8)
