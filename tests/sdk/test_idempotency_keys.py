"""The idempotency key the SDK makes for every submit: a version 4 UUID, never repeated, not
within a process, not across threads, and not between a process and a child it forks (the
random bytes are fetched in chunks: a child must not hand out what its parent still holds)."""

from __future__ import annotations

import os
import threading
import uuid

from jq_tool.sdk.calls import new_idempotency_key


def test_keys_are_version_4_uuids_and_distinct() -> None:
    keys = [new_idempotency_key() for _ in range(20_000)]  # several 4 KiB chunks
    assert len(set(keys)) == len(keys)
    for key in keys[:2000]:
        parsed = uuid.UUID(key)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == key


def test_threads_never_share_a_key() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def make(into: list[str]) -> None:
        into.extend(new_idempotency_key() for _ in range(3000))

    threads = [threading.Thread(target=make, args=(keys,)) for keys in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [key for keys in made for key in keys]
    assert len(set(everything)) == len(everything) == 8 * 3000


def test_a_forked_child_does_not_repeat_its_parent() -> None:
    new_idempotency_key()  # the parent holds the rest of a chunk now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next keys, to the parent
        try:
            os.close(read)
            os.write(write, "\n".join(new_idempotency_key() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = [new_idempotency_key() for _ in range(50)]
    assert len(child) == 50
    assert not set(child) & set(parent)
