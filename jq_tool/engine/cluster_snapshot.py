"""The cluster snapshot in etcd: one node's snapshot, published for nodes that have none of their
own (a new node, or one whose data dir was wiped) once the log they would need is compacted away.

Layout (under the engine's key prefix, `jq/` unless sharded): the snapshot body in chunks under
`jq/snapshot/chunks/<revision>/<n>` (each below etcd's
1.5 MiB request limit), then a meta key `jq/snapshot/meta` naming the revision, the number of
chunks, the size and a CRC-32C of the body. The meta key is written last, so a reader never
finds a meta whose chunks are not all there; the chunks of the previous snapshot are deleted
after it. A reader checks size and CRC, since a publish may replace the chunks while it reads.
"""

from __future__ import annotations

import msgspec

from jq_tool.core.checksum import crc32c
from jq_tool.engine.etcd_client import EtcdClient, EtcdError

SNAPSHOT_META = b"jq/snapshot/meta"
SNAPSHOT_CHUNKS = b"jq/snapshot/chunks/"
DEFAULT_PREFIX = b"jq/"
SNAPSHOT_CHUNK_BYTES = 1 << 20  # below etcd's 1.5 MiB request limit


class SnapshotMeta(msgspec.Struct):
    revision: int
    chunks: int
    size: int
    crc: int


def _meta_key(prefix: bytes) -> bytes:
    return prefix + SNAPSHOT_META[len(DEFAULT_PREFIX) :]


def _chunks_prefix(revision: int, prefix: bytes = DEFAULT_PREFIX) -> bytes:
    return prefix + SNAPSHOT_CHUNKS[len(DEFAULT_PREFIX) :] + f"{revision:020d}/".encode()


async def publish_snapshot(
    etcd: EtcdClient, revision: int, body: bytes | memoryview, prefix: bytes = DEFAULT_PREFIX
) -> None:
    """Store the snapshot of the state at `revision` as the cluster snapshot (`body` may be a
    snapshot file's mapped view: each chunk is copied out as the bytes a put sends)."""
    chunks = [
        bytes(body[i : i + SNAPSHOT_CHUNK_BYTES]) for i in range(0, len(body), SNAPSHOT_CHUNK_BYTES)
    ] or [b""]
    base = _chunks_prefix(revision, prefix)
    for number, chunk in enumerate(chunks):
        await etcd.put(base + f"{number:06d}".encode(), chunk)
    meta = SnapshotMeta(revision=revision, chunks=len(chunks), size=len(body),
                        crc=crc32c(body))  # fmt: skip
    previous, _ = await etcd.range(_meta_key(prefix))
    await etcd.put(_meta_key(prefix), msgspec.json.encode(meta))
    if previous:
        old = msgspec.json.decode(previous[0].value, type=SnapshotMeta)
        if old.revision != revision:
            old_chunks = _chunks_prefix(old.revision, prefix)
            kvs, _ = await etcd.range(old_chunks, prefix=True, keys_only=True)
            await etcd.delete([kv.key for kv in kvs])


async def fetch_snapshot(
    etcd: EtcdClient, compact_revision: int, prefix: bytes = DEFAULT_PREFIX
) -> tuple[int, bytes]:
    """The published snapshot's revision and body. Raises EtcdError when there is none yet, it
    changed while being read, or it is older than `compact_revision` (the log between them is
    gone); msgspec.DecodeError when the meta key is not ours."""
    kvs, _ = await etcd.range(_meta_key(prefix))
    if not kvs:
        raise EtcdError("no cluster snapshot published yet")
    meta = msgspec.json.decode(kvs[0].value, type=SnapshotMeta)
    chunks, _ = await etcd.range(_chunks_prefix(meta.revision, prefix), prefix=True)
    body = b"".join(kv.value for kv in sorted(chunks, key=lambda kv: kv.key))
    if len(body) != meta.size or crc32c(body) != meta.crc:
        raise EtcdError("cluster snapshot changed while reading it")
    if meta.revision < compact_revision - 1:
        raise EtcdError("cluster snapshot older than the compaction")
    return meta.revision, body
