"""The SSE parser wait_for_completion listens with: any sequence of events written in the
text/event-stream format (as the server writes them, with comments and CRLFs mixed in) parses
back to the same events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jq_tool.sdk.client import SseEvent, SseParser, finished_event_for

names = st.sampled_from(["job", "stats", "message"])
lines = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)))
events = st.lists(st.tuples(names, st.lists(lines, min_size=1, max_size=3)), max_size=8)


@given(events, st.booleans())
def test_stream_round_trip(written: list[tuple[str, list[str]]], crlf: bool) -> None:
    end = "\r\n" if crlf else "\n"
    stream: list[str] = [": keep-alive"]
    for name, data in written:
        stream.append(f"event: {name}")
        stream.extend(f"data: {line}" for line in data)
        stream.append("")
    parser = SseParser()
    parsed = [event for line in stream if (event := parser.feed(line + end)) is not None]
    assert parsed == [SseEvent(name, "\n".join(data)) for name, data in written]


def test_finished_event_for_one_job() -> None:
    done = SseEvent("job", '{"job_id":"a","queue":"q","state":"ACKED","previous":"RUNNING",'
                    '"attempts":1,"priority":0,"at":"2026-01-01T00:00:00.000Z"}')  # fmt: skip
    assert finished_event_for(done, "a")
    assert not finished_event_for(done, "b")
    running = SseEvent("job", '{"job_id":"a","state":"RUNNING"}')
    assert not finished_event_for(running, "a")
    assert not finished_event_for(SseEvent("stats", '{"job_id":"a","state":"DEAD"}'), "a")
    assert not finished_event_for(SseEvent("job", "not json"), "a")
