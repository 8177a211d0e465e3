"""The SSE decoder wait_for_completion and events() listen with: any sequence of events written in
the text/event-stream format (as the server writes them, with comments and CRLFs mixed in) parses
back to the same events, however the bytes are split between reads; and the typed events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jq_tool.sdk import JobEvent, JobState, Stats
from jq_tool.sdk.sse import SseDecoder, SseEvent, finished_event_for, server_event

names = st.sampled_from(["job", "stats", "message"])
lines = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)))
events = st.lists(st.tuples(names, st.lists(lines, min_size=1, max_size=3)), max_size=8)


def written(events: list[tuple[str, list[str]]], end: str) -> list[str]:
    stream: list[str] = [": keep-alive"]
    for name, data in events:
        stream.append(f"event: {name}")
        stream.extend(f"data: {line}" for line in data)
        stream.append("")
    return [line + end for line in stream]


@given(events, st.sampled_from(["\n", "\r\n", "\r"]))
def test_stream_round_trip(written_events: list[tuple[str, list[str]]], end: str) -> None:
    decoder = SseDecoder()
    parsed = [
        event for line in written(written_events, end) for event in decoder.feed(line.encode())
    ]
    assert parsed == [SseEvent(name, "\n".join(data)) for name, data in written_events]


@given(events, st.sampled_from(["\n", "\r\n", "\r"]), st.lists(st.integers(1, 40), max_size=30))
def test_any_split_of_the_bytes_parses_the_same(
    written_events: list[tuple[str, list[str]]], end: str, cuts: list[int]
) -> None:
    data = "".join(written(written_events, end)).encode()
    decoder = SseDecoder()
    parsed: list[SseEvent] = []
    start = 0
    for size in cuts:
        parsed.extend(decoder.feed(data[start : start + size]))
        start += size
    parsed.extend(decoder.feed(data[start:]))
    assert parsed == [SseEvent(name, "\n".join(data)) for name, data in written_events]


def test_fields_as_the_standard_reads_them() -> None:
    decoder = SseDecoder()
    stream = (
        b"\xef\xbb\xbfretry: 2000\n\n"  # a BOM, then a retry field alone: no event
        b"id: 7\nevent: job\ndata\ndata:x:y\n\n"  # `data` without colon is an empty line
        b"event: dropped\n\n"  # no data: nothing dispatched, and the name is forgotten
        b"data: plain\n\n"
        b"data: unfinished"  # no blank line yet: not an event
    )
    assert decoder.feed(stream) == [SseEvent("job", "\nx:y"), SseEvent("message", "plain")]


def test_typed_events() -> None:
    job = server_event(SseEvent("job", '{"job_id":"a","state":"DEAD","queue":"q","attempts":2}'))
    assert job == JobEvent(job_id="a", state=JobState.DEAD, queue="q", attempts=2)
    stats = server_event(SseEvent("stats", '{"runnable":3,"queues":{},"role":"single"}'))
    assert isinstance(stats, Stats) and stats.runnable == 3
    assert server_event(SseEvent("future-kind", "{}")) is None
    assert server_event(SseEvent("job", '{"job_id":1}')) is None


def test_finished_event_for_one_job() -> None:
    done = SseEvent("job", '{"job_id":"a","queue":"q","state":"ACKED","previous":"RUNNING",'
                    '"attempts":1,"priority":0,"at":"2026-01-01T00:00:00.000Z"}')  # fmt: skip
    assert finished_event_for(server_event(done), "a")
    assert not finished_event_for(server_event(done), "b")
    running = SseEvent("job", '{"job_id":"a","state":"RUNNING"}')
    assert not finished_event_for(server_event(running), "a")
    assert not finished_event_for(
        server_event(SseEvent("stats", '{"job_id":"a","state":"DEAD"}')), "a"
    )
    assert not finished_event_for(server_event(SseEvent("job", "not json")), "a")
