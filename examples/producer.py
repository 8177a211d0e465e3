"""Submit a few jobs with the jq SDK and wait for the first one to finish.

    JQ_URL=http://127.0.0.1:8080 JQ_KEY=client_… python examples/producer.py
(run examples/worker.py with a worker key alongside it to get the jobs done)
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from jq_tool.sdk import Client, JobEvent, JobSpec, JqError, WaitTimeout


def main() -> None:
    url = os.environ.get("JQ_URL", "http://127.0.0.1:8080")
    key = os.environ["JQ_KEY"]
    with Client(url, key) as client:
        # One job; the SDK adds an idempotency key, so its own retries never duplicate it.
        first = client.submit({"task": "resize", "image": "cat.png"}, priority=5)
        # Later: in 30 seconds, and at a fixed time.
        client.submit("send reminder", delay=timedelta(seconds=30), max_retries=5)
        client.submit("nightly report", run_at=datetime.now(UTC) + timedelta(hours=1))
        # Many at once: one durable write per 1000 jobs.
        results = client.submit_many(
            JobSpec(payload=f"item {n}", queue="default") for n in range(100)
        )
        print(f"submitted {1 + 2 + sum(r.ok for r in results)} jobs; first is {first}")

        try:
            job = client.wait_for_completion(first, timeout=30)
            print(
                f"{job.job_id}: {job.state.value} result={job.result!r} error={job.result_error!r}"
            )
        except WaitTimeout:
            print("no worker finished it within 30 s (is examples/worker.py running?)")
        except JqError as error:
            print(f"the server refused: {error}")

        stats = client.stats(timeout=2.0)  # any call takes its own timeout
        print(f"runnable={stats.runnable} running={stats.running} acked={stats.acked}")

        # The live stream, typed: subscribe, submit, and see the job's first state change.
        with client.events() as events:
            watched = client.submit("watched")
            for event in events:
                if isinstance(event, JobEvent) and event.job_id == watched:
                    print(f"{event.job_id}: {event.state.value} in queue {event.queue}")
                    break


if __name__ == "__main__":
    main()
