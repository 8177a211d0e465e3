"""The server's pure pieces: settings parsing, body decoding, the error table, SSE framing."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from jq_tool.auth import KeyStoreUnavailable
from jq_tool.core.model import ErrorCode, JobState
from jq_tool.engine.base import CommandRejected, EngineUnavailable, JobEvent, StorageFull
from jq_tool.server.errors import ApiError, to_response
from jq_tool.server.events import job_event_body, sse_frame
from jq_tool.server.requests import decode
from jq_tool.server.validation import LeaseBody, SubmitBody
from jq_tool.server.wire import parse_rfc3339, rfc3339
from jq_tool.settings import SettingsError, build_settings
from jq_tool.units import parse_duration_ms, parse_size


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30s", 30_000), ("200ms", 200), ("5m", 300_000), ("7d", 604_800_000), ("2h", 7_200_000),
     ("1.5s", 1500), ("10", 10_000)],
)  # fmt: skip
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "s", "5 years", "-1s", "1e3s", "30 s s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1MiB", 1 << 20),
        ("512KiB", 512 << 10),
        ("2000", 2000),
        ("1mb", 1_000_000),
        ("1GiB", 1 << 30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_settings_from_flags_env_and_defaults() -> None:
    defaults = build_settings({}, env={})
    assert defaults.host == "127.0.0.1" and defaults.port == 8080
    assert defaults.data_dir == Path("./data") and defaults.lease_ms == 30_000
    assert defaults.lease_check_interval_ms == 5_000 and defaults.redis_url is None
    assert defaults.max_payload == 1 << 20 and defaults.seed_keys is True
    assert defaults.retention_ms == 7 * 86_400_000
    env = {"PORT": "9000", "WAL_DIR": "/tmp/w", "LEASE_DURATION": "1m", "JQ_SEED_KEYS": "false",
           "REDIS_URL": "redis://localhost:6379/3", "JQ_MAX_PAYLOAD": "512KiB"}  # fmt: skip
    from_env = build_settings({}, env=env)
    assert from_env.port == 9000 and from_env.data_dir == Path("/tmp/w")
    assert from_env.lease_ms == 60_000 and from_env.seed_keys is False
    assert from_env.redis_url == "redis://localhost:6379/3" and from_env.max_payload == 512 << 10
    flags_win = build_settings({"port": "9100", "seed_keys": True}, env=env)
    assert flags_win.port == 9100 and flags_win.seed_keys is True


def test_settings_errors_name_flag_and_env() -> None:
    with pytest.raises(SettingsError, match="--lease-duration.*LEASE_DURATION"):
        build_settings({"lease_ms": "later"}, env={})
    with pytest.raises(SettingsError, match="JQ_SEED_KEYS"):
        build_settings({}, env={"JQ_SEED_KEYS": "maybe"})


def test_decode_names_the_field() -> None:
    with pytest.raises(ApiError) as info:
        decode(b'{"priority": "x"}', SubmitBody)
    assert (info.value.status, info.value.code, info.value.field) == (
        400,
        "invalid_field",
        "priority",
    )
    with pytest.raises(ApiError) as info:
        decode(b"[1]", SubmitBody)
    assert info.value.code == "invalid_json"
    assert decode(b"", LeaseBody) == LeaseBody()
    assert decode(b'{"queue": "a", "extra": {"deep": [1]}}', LeaseBody).queue == "a"


def test_error_table() -> None:
    cases = [
        (CommandRejected(ErrorCode.NOT_FOUND, "no job"), 404, "not_found"),
        (CommandRejected(ErrorCode.LEASE_MISMATCH, "stale"), 409, "lease_mismatch"),
        (CommandRejected(ErrorCode.INVALID_STATE, "state"), 409, "invalid_state"),
        (CommandRejected(ErrorCode.INVALID, "bad"), 400, "invalid"),
        (CommandRejected(ErrorCode.NOT_OWNER, "elsewhere"), 421, "not_owner"),
        (CommandRejected(ErrorCode.QUEUE_MOVING, "moving"), 503, "queue_moving"),
        (StorageFull("disk full"), 507, "storage_full"),
        (EngineUnavailable("fsync failed"), 503, "unavailable"),
        (KeyStoreUnavailable("redis down"), 503, "unavailable"),
        (ApiError(413, "payload_too_large", "big", "payload"), 413, "payload_too_large"),
        (RuntimeError("bug"), 500, "internal"),
    ]
    for exc, status, code in cases:
        response = to_response(exc)
        assert response.status_code == status
        body = json.loads(bytes(response.body))
        assert body["code"] == code and body["error"]
    assert "redis down" not in bytes(to_response(KeyStoreUnavailable("redis down")).body).decode()
    moving = to_response(CommandRejected(ErrorCode.QUEUE_MOVING, "moving"))
    assert moving.headers["Retry-After"] == "1"


def test_times_round_trip() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_795_000_000_123) == "2026-11-18T11:06:40.123Z"
    assert parse_rfc3339("2026-11-18T11:06:40.123Z") == 1_795_000_000_123
    assert parse_rfc3339("2026-11-18T13:06:40.123+02:00") == 1_795_000_000_123
    assert rfc3339(None) is None


def test_sse_frame() -> None:
    event = JobEvent("j1", "q", JobState.RUNNING, JobState.READY, 1, 0, 1_795_000_000_123)
    frame = sse_frame("job", msgspec.json.encode(job_event_body(event)))
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 3
    name, data = frame.decode().strip().split("\n")
    assert name == "event: job"
    assert json.loads(data.removeprefix("data: ")) == {
        "job_id": "j1", "queue": "q", "state": "RUNNING", "previous": "READY", "attempts": 1,
        "priority": 0, "at": "2026-11-18T11:06:40.123Z", "run_at": None, "worker": None,
        "error_class": None, "error_message": None,
    }  # fmt: skip


def test_a_stream_ticket_is_signed_and_any_change_spoils_it(tmp_path: Path) -> None:
    """A ticket holds its key id and expiry under an HMAC of the key store's secret: it redeems
    to its key id until it expires, on any TicketBook over a store with the same secret, and
    any other string (a changed key id, expiry, nonce or MAC; cut, empty, odd Unicode) does
    not."""
    import asyncio

    from jq_tool.auth import ApiKey, KeyType, Scope
    from jq_tool.auth.embedded_store import EmbeddedKeyStore
    from jq_tool.server import events

    key = ApiKey("client_0123456789abcdef", "client_abc…", "n", "o", KeyType.CLIENT,
                 (Scope.JOBS_READ,), 0)  # fmt: skip

    async def run() -> None:
        store = EmbeddedKeyStore(tmp_path / "one")
        book = events.TicketBook(60_000, store)
        ticket, expires_at = await book.issue(key)
        assert expires_at.endswith("Z")
        assert await book.redeem(ticket) == key.key_id
        assert await book.redeem(ticket) == key.key_id  # reusable: EventSource reconnects
        other, _ = await book.issue(key)
        assert other != ticket and await book.redeem(other) == key.key_id
        key_id, expiry, nonce, mac = ticket.split(".")
        later = f"{int(expiry, 16) + 3_600_000:x}"
        spoiled = [
            f"client_0123456789abcdee.{expiry}.{nonce}.{mac}",
            f"{key_id}.{later}.{nonce}.{mac}",
            f"{key_id}.{expiry}.{nonce}x.{mac}",
            f"{key_id}.{expiry}.{nonce}.{mac[:-1]}A" if mac[-1] != "A" else ticket[:-1] + "B",
            f"{key_id}.{expiry}.{nonce}",
            ticket[:-1],
            "",
            "...",
            f"{key_id}.{expiry}.{nonce}.{mac[:-1]}\u00e9",
            f"{key_id}.zz.{nonce}.{mac}",
            f"{key_id}.{'f' * 40}.{nonce}.{mac}",
        ]
        for forged in spoiled:
            assert await book.redeem(forged) is None, forged
        # Another store (another server's data dir) has another secret.
        elsewhere = events.TicketBook(60_000, EmbeddedKeyStore(tmp_path / "two"))
        assert await elsewhere.redeem(ticket) is None
        # The same store reopened (a restart) has the same secret.
        await store.close()
        reopened = EmbeddedKeyStore(tmp_path / "one")
        assert await events.TicketBook(60_000, reopened).redeem(ticket) == key.key_id
        expired, _ = await events.TicketBook(-1, reopened).issue(key)
        assert await events.TicketBook(60_000, reopened).redeem(expired) is None
        await reopened.close()

    asyncio.run(run())
