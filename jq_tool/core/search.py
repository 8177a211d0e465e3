"""What a job search matches (GET /jobs' filters, the bulk actions' selection): a state label,
a queue, an id prefix, a text in the current error. Pure predicates; the state machine walks
its submission order with them (`StateMachine.search_jobs`), a bounded number of jobs a call.

A job's label is its state, except a READY job whose run_at is still ahead of the machine's
clock, which is SCHEDULED: the label the console shows and filters by.
"""

from __future__ import annotations

import msgspec

from jq_tool.core.model import Job, JobState

SCHEDULED = "SCHEDULED"
LABELS = (*(state.value for state in JobState), SCHEDULED)
# The error text a search looks at: the end of the current error, where a traceback names the
# exception (a 1 MiB error is not read whole for every job a search passes).
ERROR_SEARCHED_CHARS = 8192


class JobFilter(msgspec.Struct, frozen=True):
    labels: frozenset[str] | None = None  # state labels (LABELS); None: any
    queue: str | None = None
    id_prefix: str | None = None
    error: str | None = None  # matched case-insensitively

    def matches(self, job: Job, now: int) -> bool:
        if self.queue is not None and job.queue != self.queue:
            return False
        if self.labels is not None:
            state = job.state
            label = SCHEDULED if state is JobState.READY and job.run_at > now else state.value
            if label not in self.labels:
                return False
        if self.id_prefix is not None and not job.id.startswith(self.id_prefix):
            return False
        if self.error is not None:
            text = job.result_error
            if not text or self.error.lower() not in text[-ERROR_SEARCHED_CHARS:].lower():
                return False
        return True
