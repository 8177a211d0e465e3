"""The chaos harness behind `jq chaos`: `options` (the run's configuration and flag spellings),
`target` (the server under test, spawned or external, and how it is killed and restarted),
`ledger` (what the server acknowledged), `harness` (load, workers, kills, final reads) and
`report` (the verdict: lost, duplicates, latency, `ZERO LOSS ✓`). See docs/chaos.md.
"""
