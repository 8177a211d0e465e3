"""A job's attempt history: what the state machine keeps of each attempt, how it bounds it,
and how an error text is read into a class and a message.

The state machine records an attempt when it ends in a failure (a Fail, an expired lease): the
last ATTEMPTS_KEPT of them stay on the job, each error text cut to its last ERROR_TEXT_BYTES.
A job that succeeds at its first attempt keeps no list at all; the current attempt (running,
or the acked one) is read from the job's own fields (`worker`, `leased_at`), so an ack
allocates nothing. Splitting an error text (`split_error`) is a pure function of the text,
done when a job is shown, never in the log.
"""

from __future__ import annotations

import re

from jq_tool.core.model import Attempt, Job, JobState

ATTEMPTS_KEPT = 10
ERROR_TEXT_BYTES = 8192  # the last attempt's error text
OLDER_ERROR_BYTES = 1024  # an earlier attempt's, once another came after it
OUTCOMES = ("running", "acked", "failed", "expired", "released")
_ELLIPSIS = "…"

# "ValueError: bad input", "requests.exceptions.Timeout: …", "KeyError" (alone on the last
# line of a traceback). An exception name is a dotted identifier without spaces.
_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*)|:)?", re.DOTALL)


def bounded_error(text: str, limit: int = ERROR_TEXT_BYTES) -> str:
    """At most `limit` bytes of UTF-8: a longer text keeps its end (where a traceback names
    the exception) behind an ellipsis."""
    if len(text) * 4 <= limit:
        return text
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    tail = data[len(data) - limit + len(_ELLIPSIS.encode()) :]
    return _ELLIPSIS + tail.decode("utf-8", errors="ignore")


def _older(attempt: Attempt) -> Attempt:
    """An attempt pushed down the history by a newer one: its error cut to OLDER_ERROR_BYTES,
    so a job's history holds at most ~17 KiB of error text however its attempts failed."""
    error = attempt.error
    if error is None or len(error) * 4 <= OLDER_ERROR_BYTES:
        return attempt
    shorter = bounded_error(error, OLDER_ERROR_BYTES)
    if shorter is error:
        return attempt
    return Attempt(attempt.attempt, attempt.worker, attempt.started_at, attempt.ended_at,
                   attempt.outcome, shorter)  # fmt: skip


def error_chars(job: Job) -> int:
    """The error text a job's history holds beyond its current error (retention's bytes)."""
    current = job.result_error
    return sum(len(a.error) for a in job.history or () if a.error and a.error != current)


def ended_attempt(job: Job, now: int, outcome: str, error: str | None) -> list[Attempt]:
    """The job's history with its current attempt ended as `outcome`, the last ATTEMPTS_KEPT.
    A new list: copies of the job handed out earlier keep theirs unchanged."""
    attempt = Attempt(
        job.attempts,
        job.worker,
        job.leased_at,
        now,
        outcome,
        None if error is None else bounded_error(error),
    )
    kept = job.history or []
    older = kept[max(0, len(kept) - ATTEMPTS_KEPT + 1) :]
    if older:
        older[-1] = _older(older[-1])  # the others were cut when they were pushed down
    return [*older, attempt]


def attempt_history(job: Job) -> list[Attempt]:
    """Every attempt the job keeps, oldest first: the recorded ones, then the current one (a
    running attempt, or the acked one) read from the job's fields."""
    history = list(job.history or [])
    # Only failures are recorded: a running or acked attempt is never in the list yet.
    if job.state is JobState.RUNNING:
        history.append(Attempt(job.attempts, job.worker, job.leased_at, None, "running"))
    elif job.state is JobState.ACKED and job.attempts > 0:
        history.append(
            Attempt(job.attempts, job.worker, job.leased_at, job.updated_at or None, "acked")
        )
    return history[-ATTEMPTS_KEPT:]


def split_error(text: str | None) -> tuple[str | None, str | None]:
    """(class, message) of an error text: the last non-empty line of a Python traceback, or a
    line "Name: message", gives the exception's name and message; any other text is a message
    without a class. (None, None) for no error."""
    if not text:
        return None, None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None, text
    last = lines[-1].strip()
    match = _EXCEPTION_LINE.fullmatch(last)
    traceback = len(lines) > 1 and lines[0].startswith("Traceback")
    if match is not None and (match.group(2) is not None or traceback):
        return match.group(1), (match.group(2) or "").strip()
    return None, last if traceback else text.strip()
