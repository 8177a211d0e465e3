"""Queue latency scraped from a live `jq serve` under a paced load (issue 19): a producer
submits at a steady pace to two queues, a worker drains one as fast as it can and the other one
job at a time with pauses, and /metrics and /stats then say, per queue, how many jobs were
leased and how long they waited (a Prometheus histogram with one series per queue), how fast
each queue drains, and how old its oldest runnable job is. Counts are compared, never times."""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.conftest import ServerFactory

pytestmark = pytest.mark.slow

PACE_S = 0.02
SUBMITS = 100


def samples(metrics: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric's samples."""
    found = {}
    for line in metrics.splitlines():
        match = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def test_latency_metrics_under_a_paced_load(jq_server_factory: ServerFactory) -> None:
    server = jq_server_factory("--lease-check-interval", "200ms")
    with server.client(server.admin_key) as client:
        client.put("/queues/slow", json={"max_latency_ms": 3_600_000})
    leased = {"fast": 0, "slow": 0}
    stop = threading.Event()

    def produce() -> None:
        with server.client(server.client_key) as client:
            for i in range(SUBMITS):
                for queue in ("fast", "slow"):
                    client.post("/jobs", json={"payload": str(i), "queue": queue})
                time.sleep(PACE_S)

    def work(queue: str, pause: float) -> None:
        with server.client(server.worker_key, timeout=10) as client:
            while not stop.is_set():
                answer = client.post("/jobs/lease", json={"queue": queue, "wait_ms": 200})
                if answer.status_code != 200:
                    continue
                job = answer.json()
                client.post(f"/jobs/{job['job_id']}/ack",
                            json={"lease_id": job["lease_id"], "result": "ok"})  # fmt: skip
                leased[queue] += 1
                time.sleep(pause)

    threads = [threading.Thread(target=produce), threading.Thread(target=work, args=("fast", 0)),
               threading.Thread(target=work, args=("slow", 0.1))]  # fmt: skip
    for thread in threads:
        thread.start()
    threads[0].join(60)
    deadline = time.monotonic() + 60
    while leased["fast"] < SUBMITS:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    for thread in threads[1:]:
        thread.join(10)

    with server.client(server.admin_key) as client:
        metrics = client.get("/metrics").text
        stats = client.get("/stats").json()
    counts = samples(metrics, "jq_queue_wait_seconds_count")
    assert counts['{queue="fast"}'] == SUBMITS
    assert counts['{queue="slow"}'] == leased["slow"] < SUBMITS  # some still wait
    for queue in ("fast", "slow"):
        buckets = [v for k, v in samples(metrics, "jq_queue_wait_seconds_bucket").items()
                   if f'queue="{queue}"' in k]  # fmt: skip
        assert buckets == sorted(buckets) and buckets[-1] == counts[f'{{queue="{queue}"}}']
        assert samples(metrics, "jq_queue_wait_seconds_sum")[f'{{queue="{queue}"}}'] >= 0
        assert samples(metrics, "jq_queue_drain_per_second")[f'{{queue="{queue}"}}'] > 0
    oldest = samples(metrics, "jq_queue_oldest_runnable_age_seconds")
    assert oldest['{queue="slow"}'] >= 0 and oldest['{queue="fast"}'] == 0  # fast is empty
    assert samples(metrics, "jq_queue_max_latency_seconds") == {'{queue="slow"}': 3600.0}
    assert samples(metrics, "jq_queue_latency_breached") == {'{queue="slow"}': 0.0}

    slow = stats["latency"]["slow"]
    assert slow["leased"] == leased["slow"] and slow["max_latency_s"] == 3600.0
    assert slow["oldest_runnable_age_s"] is not None
    assert slow["wait_p50_s"] <= slow["wait_p95_s"] <= slow["wait_p99_s"]
    fast = stats["latency"]["fast"]
    assert fast["leased"] == SUBMITS and fast["oldest_runnable_age_s"] is None
