"""A WAL appender under load, to be SIGKILLed by tests/e2e/test_wal_kill.py.

It opens the WAL in DIR (recovering whatever a previous kill left), prints `ready <next_index>`,
then appends batches forever and prints the index of each batch's last record only after
`append` returned, i.e. after the fdatasync: every printed index is a promise that the record is
durable. Record bodies are derived from their index (`body_for`) so a checker can tell a wrong
record from a right one; now and then it writes a snapshot whose bytes derive from its index.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from jq_tool.core.wal import RECORD_COMMAND, WAL

SEGMENT_BYTES = 256 << 10
SNAPSHOT_EVERY = 3000


def body_for(index: int) -> bytes:
    # Mostly small records, and now and then a big one so a kill can land inside a long write.
    size = 50_000 if index % 97 == 0 else 64 + (index * 7919) % 400
    return (b"rec-%d|" % index * (size // 8 + 1))[:size]


def snapshot_for(index: int) -> bytes:
    return b"snapshot-before-%d" % index


def main() -> None:
    directory = Path(sys.argv[1])
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else None)
    wal = WAL(directory, segment_bytes=SEGMENT_BYTES)
    wal.open()
    print(f"ready {wal.next_index}", flush=True)
    next_snapshot = wal.next_index + SNAPSHOT_EVERY
    while True:
        start = wal.next_index
        batch = [(RECORD_COMMAND, body_for(i)) for i in range(start, start + rng.randint(1, 32))]
        last = wal.append(batch)
        print(last, flush=True)
        if wal.next_index >= next_snapshot:
            wal.write_snapshot(wal.next_index, snapshot_for(wal.next_index))
            next_snapshot = wal.next_index + SNAPSHOT_EVERY


if __name__ == "__main__":
    main()
