"""`wait_for_completion`, written once for both clients: the waiting is a plan (a generator)
that yields the I/O it needs as steps (`Get` the job, `Sleep`, `Listen` on /events, take the
`NextEvent`) and is sent each step's outcome; `Client` and `AsyncClient` each run it with their
own I/O (see `Plan`), the way httpx keeps the logic in its base client and only the I/O apart.

How it waits: GET the job; subscribe to `GET /events`; GET again (closing the race with a job
that finished in between); then wait for an `event: job` naming the job in a finished state. It
still looks at the job every `FALLBACK_POLL_S` (a dropped event must not hang a waiter), and
falls back to a slow poll while /events is unavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from jq_tool.sdk.errors import BadRequest, NotFound, ServerUnavailable, WaitTimeout
from jq_tool.sdk.sse import ServerEvent, finished_event_for
from jq_tool.sdk.types import Job

T = TypeVar("T")

# While waiting on /events, look at the job itself this often anyway: a missed event (a
# reconnect, a slow consumer dropped by the server) must not leave a waiter hanging.
FALLBACK_POLL_S = 5.0


class OpenStream(Protocol):
    """What the plan needs of an event stream its client opened."""

    ended: bool

    def close(self) -> None: ...


@dataclass(frozen=True)
class Get:
    """GET the job; the outcome is the `Job`."""

    job_id: str


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Listen:
    """Open `GET /events`; the outcome is the open stream."""


@dataclass(frozen=True)
class NextEvent:
    """The stream's next event, None after `wait` quiet seconds or at its end."""

    stream: Any
    wait: float


Step = Get | Sleep | Listen | NextEvent


class Plan(Generic[T]):
    """Runs a generator of steps: `next_step()` gives the step to do (None once finished, the
    answer in `result`), then `done(outcome)` or `failed(error)` says how it went; an error is
    raised inside the plan, where it may be handled."""

    def __init__(self, steps: Generator[Step, Any, T]) -> None:
        self._steps = steps
        self._outcome: Any = None
        self._error: Exception | None = None
        self.result: T

    def next_step(self) -> Step | None:
        try:
            if self._error is not None:
                error, self._error = self._error, None
                return self._steps.throw(error)
            return self._steps.send(self._outcome)
        except StopIteration as finished:
            self.result = finished.value
            return None

    def done(self, outcome: Any) -> None:
        self._outcome = outcome

    def failed(self, error: Exception) -> None:
        self._outcome, self._error = None, error


def wait_plan(
    job_id: str, timeout: float, backoff_delay: Callable[[int], float]
) -> Generator[Step, Any, Job]:
    """Until the job is ACKED, DEAD or CANCELLED; WaitTimeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    job: Job = yield Get(job_id)
    failures = 0
    while not job.finished:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"job {job_id} still {job.state.value} after {timeout}s")
        try:
            job = yield from _listen(job_id, deadline)
            failures = 0
        except (ServerUnavailable, NotFound, BadRequest):
            # No /events (or the server is restarting): fall back to a slow poll.
            yield Sleep(min(backoff_delay(failures) + 0.5, max(0.0, remaining)))
            failures += 1
            job = yield Get(job_id)
    return job


def _listen(job_id: str, deadline: float) -> Generator[Step, Any, Job]:
    """One subscription: the job once finished, at the deadline, or when the stream ends."""
    stream: OpenStream = yield Listen()
    try:
        # Subscribed: a GET now closes the race with a job that finished just before.
        job: Job = yield Get(job_id)
        looked_at = time.monotonic()
        while not job.finished:
            quiet = min(deadline, looked_at + FALLBACK_POLL_S) - time.monotonic()
            event: ServerEvent | None = yield NextEvent(stream, max(0.0, quiet))
            if stream.ended:
                return (yield Get(job_id))  # the server ended it (draining): look, then listen
            now = time.monotonic()
            if (
                finished_event_for(event, job_id)
                or now - looked_at >= FALLBACK_POLL_S
                or (now >= deadline)
            ):
                job = yield Get(job_id)
                looked_at = now
                if now >= deadline:
                    return job
        return job
    finally:
        stream.close()
