"""Error fingerprints: which failed attempts failed for the same cause.

A worker reports an attempt's error as text (`Fail.error`): often `Type: message`, sometimes a
whole traceback. `fingerprint(error)` keeps the exception type and the first line of the message
(the last line of a Python traceback, which names the exception), replaces what differs from
one job to the next (numbers, hex ids, UUIDs, paths, addresses, quoted strings) by placeholders,
and hashes the type and that pattern. The same error about another id, file or amount falls in
the same group; another exception type never does.

The fingerprint is computed by the state machine from the error text the log already carries
(not by the proposer into the command): an old log has every error text, so it replays into
the same groups, and the log format does not change. Groups are derived data, rebuilt from the
DEAD jobs on restore; this function must stay deterministic (no locale, no hashing seed) and a
change to it regroups existing dead jobs, never breaks them.
"""

from __future__ import annotations

import functools
import hashlib
import re

import msgspec

__all__ = ["ErrorFingerprint", "MAX_PATTERN", "fingerprint"]

MAX_PATTERN = 200  # characters of the normalised message kept (and hashed)

_TRACEBACK = "Traceback (most recent call last):"
# An exception type: an identifier, with dots for a module path (`requests.exceptions.X`).
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w.]*$")

# Order matters: the wider shapes first, so a UUID is not read as five hex runs and a path's
# digits do not become <n>s inside it. Compiled on first use (`_substitutions`): compiling them
# at import was ~1.3 ms of every start (issue 20), and most starts never fingerprint an error.
_SUBSTITUTION_SOURCES: tuple[tuple[str, int, str], ...] = (
    (r"'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`", 0, "<str>"),
    (r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b", 0, "<uuid>"),
    (r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE, "<url>"),
    (r"(?:[A-Za-z]:\\|\\\\)[^\s:,;]+|(?:~|\.{1,2})?/[^\s:,;]+", 0, "<path>"),
    (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", 0, "<ip>"),
    (r"\b0x[0-9a-fA-F]+\b", 0, "<addr>"),
    # A run of 8+ hex digits holding a digit: an id or a hash, not a word like "deadbeef"s
    # cousins in English text ("accepted" has no digit).
    (r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b", 0, "<hex>"),
    (r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", 0, "<n>"),
    (r"\s+", 0, " "),  # then spaces collapsed
)


@functools.cache
def _substitutions() -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple((re.compile(source, flags), to) for source, flags, to in _SUBSTITUTION_SOURCES)


class ErrorFingerprint(msgspec.Struct, frozen=True):
    """An error's group: `id` (16 hex digits) hashes `error_type` and `pattern`."""

    id: str
    error_type: str  # "" when the error names none
    pattern: str  # the first message line, normalised


def _exception_line(error: str) -> str:
    """The line that says what went wrong: the first non-empty line, or for a Python
    traceback its last non-empty line (the exception itself)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith(_TRACEBACK):
        return lines[-1]
    return lines[0]


def normalise(message: str) -> str:
    """The message with its varying parts replaced by placeholders, spaces collapsed."""
    for pattern, placeholder in _substitutions():
        message = pattern.sub(placeholder, message)
    return message.strip()[:MAX_PATTERN]


def fingerprint(error: str) -> ErrorFingerprint:
    line = _exception_line(error)
    error_type, message = "", line
    head, sep, rest = line.partition(":")
    if sep and _IDENTIFIER.match(head) and not rest.startswith("//"):
        error_type, message = head, rest.strip()
    elif _IDENTIFIER.match(line) and line[:1].isupper():
        error_type, message = line, ""  # a bare exception name: `TimeoutError`
    pattern = normalise(message)
    digest = hashlib.blake2b(f"{error_type}\n{pattern}".encode(), digest_size=8).hexdigest()
    return ErrorFingerprint(digest, error_type, pattern)
