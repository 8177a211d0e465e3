"""The jq Python SDK: `Client`/`AsyncClient` for the HTTP API (with `events()` for the live
`/events` stream), `Worker`/`AsyncWorker` (configured by one `WorkerOptions`) to process jobs,
typed results, typed events and typed exceptions, and the client side's one clock and RFC 3339
formatter/parser. It imports nothing from the server side, so it works against any jq server
over HTTP.

The modules: `client` (the two clients and their shared base), `calls` (one request per API
route), `wire` (the keep-alive connection pools, the one transport), `tls` (`verify=` to an
SSL context), `sse` (the event stream: format, typed events, iterators), `waiting`
(`wait_for_completion`, written once), `worker`, `types`, `errors`, `times`.
"""

from jq_tool.sdk.client import DEFAULT_URL, AsyncClient, BaseClient, Client
from jq_tool.sdk.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    IdempotencyKeyReused,
    InvalidState,
    JobNotFound,
    JqError,
    KeyNotFound,
    LeaseLost,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    ScheduleExists,
    ScheduleNotFound,
    ServerUnavailable,
    StorageFull,
    TlsError,
    TooManyQueues,
    TooManySchedules,
    Unauthorized,
    WaitTimeout,
)
from jq_tool.sdk.sse import AsyncEventStream, EventStream, ServerEvent
from jq_tool.sdk.times import format_time, parse_time, utc_now
from jq_tool.sdk.types import (
    FINISHED_STATES,
    AckResult,
    BatchAck,
    CreatedKey,
    Extended,
    Failure,
    Job,
    JobEvent,
    JobSpec,
    JobState,
    Key,
    LeasedJob,
    Page,
    QueueStats,
    RevokedKey,
    Schedule,
    SchedulePage,
    ScheduleSummary,
    Settled,
    Settlement,
    Stats,
    SubmitResult,
    Success,
    Totals,
)
from jq_tool.sdk.worker import (
    AsyncWorker,
    BaseWorker,
    Worker,
    WorkerCounts,
    WorkerOptions,
    handler_outcome,
)

__all__ = [
    "DEFAULT_URL",
    "FINISHED_STATES",
    "AckResult",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncWorker",
    "BadRequest",
    "BaseClient",
    "BaseWorker",
    "BatchAck",
    "Client",
    "Conflict",
    "CreatedKey",
    "EventStream",
    "Extended",
    "Failure",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidState",
    "Job",
    "JobEvent",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JqError",
    "Key",
    "KeyNotFound",
    "LeaseLost",
    "LeasedJob",
    "NotFound",
    "Page",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "QueueStats",
    "RevokedKey",
    "Schedule",
    "ScheduleExists",
    "ScheduleNotFound",
    "SchedulePage",
    "ScheduleSummary",
    "ServerEvent",
    "ServerUnavailable",
    "Settled",
    "Settlement",
    "Stats",
    "StorageFull",
    "SubmitResult",
    "Success",
    "TlsError",
    "TooManyQueues",
    "TooManySchedules",
    "Totals",
    "Unauthorized",
    "WaitTimeout",
    "Worker",
    "WorkerCounts",
    "WorkerOptions",
    "format_time",
    "handler_outcome",
    "parse_time",
    "utc_now",
]

# The console (docs/api.md "The operator's console"): workers, one queue's view, history, bulk.
from jq_tool.sdk.console import (  # noqa: E402
    BulkResult,
    HeldLease,
    History,
    QueueDetail,
    QueueNotFound,
    WorkerPage,
    new_worker_id,
)
from jq_tool.sdk.console import Worker as WorkerInfo  # noqa: E402
from jq_tool.sdk.types import Attempt  # noqa: E402

__all__ += [
    "Attempt",
    "BulkResult",
    "HeldLease",
    "History",
    "QueueDetail",
    "QueueNotFound",
    "WorkerInfo",
    "WorkerPage",
    "new_worker_id",
]
