"""The incremental decoders: chunk boundaries anywhere must not change what is decoded."""

import json

from analysis.parsers.sse import JsonArrayStreamDecoder, SseDecoder, SseEvent, decode_sse

# One body with every framing feature: LF, CRLF and lone CR line ends, a comment, a multi-line
# data field, a named event, an id, a field without a space after the colon, multi-byte UTF-8
# (2, 3 and 4 bytes), and an event whose data is empty lines only.
BODY = (
    ": keep-alive comment\r\n"
    "event: message_start\r\n"
    'data: {"text": "h\u00e9llo \u65e5\u672c \U0001f389"}\r\n'
    "\r\n"
    "data: first line\n"
    "data:second line\n"
    "id: 7\n"
    "\n"
    "event: ping\r"
    "data: cr only \u00fc\r"
    "\r"
    "data\n"
    "\n"
    "data: [DONE]\n\n"
).encode("utf-8")

EXPECTED = [
    ("message_start", '{"text": "h\u00e9llo \u65e5\u672c \U0001f389"}', None),
    ("message", "first line\nsecond line", "7"),
    ("ping", "cr only \u00fc", "7"),
    ("message", "", "7"),
    ("message", "[DONE]", "7"),
]


def events_of(chunks: list[bytes]) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.data, e.id) for e in decode_sse(chunks)]


def test_whole_body():
    assert events_of([BODY]) == EXPECTED


def test_every_single_split_point_gives_the_same_events():
    for cut in range(len(BODY) + 1):
        assert events_of([BODY[:cut], BODY[cut:]]) == EXPECTED, f"split at byte {cut}"


def test_every_pair_of_split_points_gives_the_same_events():
    for first in range(0, len(BODY) + 1, 3):
        for second in range(first, len(BODY) + 1, 5):
            chunks = [BODY[:first], BODY[first:second], BODY[second:]]
            assert events_of(chunks) == EXPECTED, f"split at {first} and {second}"


def test_byte_by_byte():
    assert events_of([BODY[i : i + 1] for i in range(len(BODY))]) == EXPECTED


def test_split_inside_a_multibyte_character():
    body = "data: \U0001f389\n\n".encode()
    start = body.index(b"\xf0")
    for cut in range(start + 1, start + 4):  # inside the 4-byte sequence
        assert events_of([body[:cut], body[cut:]]) == [("message", "\U0001f389", None)]


def test_crlf_split_between_cr_and_lf_is_one_line_end():
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r\n\r", 0) == []
    # The "\n" completing "\r\n" must not be read as a second, empty line.
    events = decoder.feed(b"\ndata: b\r\n\r\n", 1)
    assert [(e.data, e.chunk_index) for e in events] == [("a", 1), ("b", 1)]


def test_chunk_index_is_the_chunk_that_completed_the_event():
    decoder = SseDecoder()
    assert decoder.feed(b"data: one\n", 0) == []
    assert decoder.feed(b"\ndata: tw", 1) == [SseEvent("message", "one", 1)]
    assert decoder.feed(b"o\n", 2) == []
    assert decoder.feed(b"\n", 3) == [SseEvent("message", "two", 3)]


def test_an_unterminated_last_event_is_delivered_at_close():
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"usage": 1}', 0) == []
    assert decoder.close(0) == [SseEvent("message", '{"usage": 1}', 0)]


def test_byte_order_mark_is_ignored():
    assert events_of([b"\xef\xbb", b"\xbfdata: x\n\n"]) == [("message", "x", None)]


def test_comments_only_give_no_event():
    assert events_of([b": ping\n\n: ping\r\n\r\n"]) == []


ARRAY_ELEMENTS = [
    {"candidates": [{"content": {"parts": [{"text": 'brace } and ] and "quote" \\ ok'}]}}]},
    {"usageMetadata": {"promptTokenCount": 5}, "text": "\u00e9\U0001f389 [x]"},
    {"nested": [[1, 2], {"a": {}}]},
]
ARRAY_BODY = ("[" + ",\r\n".join(json.dumps(e, ensure_ascii=False) for e in ARRAY_ELEMENTS) + "]").encode()


def array_elements(chunks: list[bytes]) -> list[object]:
    decoder = JsonArrayStreamDecoder()
    found = []
    for index, chunk in enumerate(chunks):
        found.extend(decoder.feed(chunk, index))
    found.extend(decoder.close(len(chunks)))
    return [e.value for e in found]


def test_json_array_stream_every_split_point():
    for cut in range(len(ARRAY_BODY) + 1):
        assert array_elements([ARRAY_BODY[:cut], ARRAY_BODY[cut:]]) == ARRAY_ELEMENTS, cut


def test_json_array_stream_yields_each_element_when_it_closes():
    first_end = 1 + len(json.dumps(ARRAY_ELEMENTS[0], ensure_ascii=False).encode())
    decoder = JsonArrayStreamDecoder()
    assert decoder.feed(ARRAY_BODY[: first_end - 1], 0) == []
    assert decoder.pending
    ready = decoder.feed(ARRAY_BODY[first_end - 1 : first_end], 1)
    assert [(e.value, e.chunk_index) for e in ready] == [(ARRAY_ELEMENTS[0], 1)]
    assert not decoder.pending


def test_json_array_stream_cut_inside_an_element_leaves_it_pending():
    decoder = JsonArrayStreamDecoder()
    elements = decoder.feed(ARRAY_BODY[: len(ARRAY_BODY) // 2], 0)
    elements += decoder.close(0)
    assert [e.value for e in elements] == [ARRAY_ELEMENTS[0]]
    assert decoder.pending


def test_an_event_over_the_cap_is_skipped_and_counted_and_the_next_is_read():
    decoder = SseDecoder(max_event_chars=100)
    body = b"data: small\n\n" + b"data: " + b"x" * 1000 + b"\ndata: more\n\n" + b"event: last\ndata: end\n\n"
    events = []
    for i in range(0, len(body), 7):  # the big line arrives in many pieces
        events += decoder.feed(body[i : i + 7], i)
        assert sum(len(p) for p in decoder._pieces) <= 100  # never held whole
    events += decoder.close(len(body))
    assert [(e.event, e.data) for e in events] == [("message", "small"), ("last", "end")]
    assert (decoder.skipped_events, decoder.skipped_chars) == (1, len("data: ") + 1000 + len("data: more"))


def test_a_skipped_event_still_counts_as_estimated_output():
    from analysis.parsers import common, openai_chat
    from analysis.parsers.exchange import Exchange

    big = "data: " + json.dumps({"choices": [{"delta": {"content": "word " * 400_000}}]}) + "\n\n"
    body = b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n' + big.encode() + b"data: [DONE]\n\n"
    exchange = Exchange(
        provider="openai",
        endpoint="chat",
        wire_format="openai_chat",
        method="POST",
        host="api.openai.com",
        path="/v1/chat/completions",
        request_body=b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}',
        status=200,
        response_headers={"content-type": "text/event-stream"},
        response_chunks=[(0.1, body[i : i + 65536]) for i in range(0, len(body), 65536)],
    )
    parsed = openai_chat.parse(exchange)
    assert (parsed.skipped_events, parsed.usage.source) == (1, "estimated")
    assert parsed.usage.output_tokens >= parsed.skipped_chars // common.CHARS_PER_TOKEN > 400_000
