"""Benchmarks of jq, and of jq side by side with the queues people use today.

`python -m bench` (see bench/README.md) runs the comparison and writes docs/benchmarks.md;
the older scripts beside this file (core_bench, http_bench, worker_bench, wal_bench) still run
on their own as `python bench/<name>.py`.
"""
