"""etcd's gRPC API for the two calls on cluster mode's hot path: a put and a watch.

Everything else EtcdClient (engine/etcd_client.py) sends goes through etcd's JSON gateway. The
gateway is a grpc-gateway inside each member: it decodes the JSON, calls the member's own gRPC
server over a loopback connection and encodes the answer (and every watched event, its value in
base64) back into JSON. Measured here (3 members on 2 cores, 1.5 KB values, 8 puts in flight, a
watch on each member): the members spent ~1,800 µs of CPU per put through the gateway and
~1,150 µs over gRPC, the calling process ~310 µs against ~630 µs (grpc's Python layer costs
more than our HTTP/1.1 client). In bench/cluster_bench.py (6 alternating pairs) the members'
CPU per replicated submit fell from 151 to 122 µs and the nodes' rose from 181 to 207 µs, the
same in all; the cluster's submits/s rose (median of the pairs 1.15x; against the same run's
single node 0.72x -> 0.90x on a busy machine): a put and its watched event come back sooner.

Messages are etcd's own (etcd_rpc.proto, with etcd's field numbers; etcd_rpc_pb2.py is
generated from it, see the .proto for how). Channels are made on first use, inside the running
loop, and reconnect quickly after a member restarts (grpc's default back-off grows to 2 min).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

# The engine forks: snapshot children (engine/forked_snapshot.py) and the etcd member's start.
# Neither child touches gRPC, but grpc's own fork handlers, on by default, run in the child and
# crashed it (SIGSEGV, about 1 fork in 5 while puts and a watch were in flight; see
# tests/cluster/test_etcd_grpc.py): they are for processes that go on using gRPC after a fork,
# which ours never do. grpc reads this switch from the C environment when it is imported, so it
# is set there first (putenv: the server's own settings, read from os.environ, are not touched).
os.putenv("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
import grpc.aio  # noqa: E402

from jq_tool.engine import etcd_rpc_pb2 as pb

_OPTIONS = [
    # A member that restarts is back within a second: look for it that often, not after
    # grpc's back-off of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Loopback and cluster addresses never go through an HTTP proxy named in the environment.
    ("grpc.enable_http_proxy", 0),
    # A watch answer may carry many batches at once (a node catching up).
    ("grpc.max_receive_message_length", -1),
]

# Failures of a call whose request never reached etcd: the channel had no connection.
_NOT_CONNECTED = ("failed to connect", "connection refused", "connections to all backends failing")
# Statuses of a call etcd refused outright (it did nothing): the caller's mistake, not the
# endpoint's trouble.
_REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
)


class CallFailed(Exception):
    """A gRPC call to a member failed. `sent`: its request may have reached the member (False
    only when the channel had no connection); `refused`: etcd refused it outright; `details`:
    etcd's message (such as "etcdserver: no leader")."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.details = error.details() or ""
        code = error.code()
        super().__init__(f"{code.name}: {self.details[:200]}")
        self.sent = not (
            code == grpc.StatusCode.UNAVAILABLE
            and any(marker in self.details.lower() for marker in _NOT_CONNECTED)
        )
        self.refused = code in _REFUSED


class GrpcEndpoint:
    """One member's gRPC address (its client URL's host and port) and a channel to it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = f"{parts.hostname}:{parts.port or 80}"
        self._channel: grpc.aio.Channel | None = None
        self._put: grpc.aio.UnaryUnaryMultiCallable | None = None

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=_OPTIONS)
        return self._channel

    async def put(self, key: bytes, value: bytes, lease: int, timeout: float) -> int:
        """Put key; returns the revision. Raises CallFailed."""
        if self._put is None:
            self._put = self.channel().unary_unary(
                "/etcdserverpb.KV/Put",
                request_serializer=pb.PutRequest.SerializeToString,
                response_deserializer=pb.PutResponse.FromString,
            )
        request = pb.PutRequest(key=key, value=value, lease=lease)
        try:
            answer = await self._put(request, timeout=max(timeout, 0.001))
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(exc) from exc
        return int(answer.header.revision)

    async def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[pb.WatchResponse]:
        """The watch's answers, the first (`created`) included, until the stream ends. Raises
        CallFailed when it breaks or cannot be made."""
        stream = self.channel().stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=pb.WatchRequest.SerializeToString,
            response_deserializer=pb.WatchResponse.FromString,
        )
        call = stream()
        try:
            create = pb.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=start_revision
            )
            await call.write(pb.WatchRequest(create_request=create))
            while True:
                answer = await call.read()
                if answer is grpc.aio.EOF:
                    return
                yield answer
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(exc) from exc
        finally:
            call.cancel()

    async def close(self) -> None:
        channel, self._channel, self._put = self._channel, None, None
        if channel is not None:
            await channel.close()
