"""Incremental decoders for the two ways providers stream a response body.

`SseDecoder` reads Server-Sent Events (OpenAI, Anthropic, Gemini with `?alt=sse`, and every
OpenAI-compatible server). It is fed the body chunk by chunk exactly as the network delivered
it: a chunk may end inside a UTF-8 sequence, inside a `\\r\\n` pair or in the middle of a line,
so the decoder keeps an incremental UTF-8 decoder and a text buffer, and only interprets a line
once its terminator (`\\n`, `\\r\\n` or a lone `\\r`) has been seen. Each event remembers the
index of the chunk that completed it, which is how the parsers turn events into times
(`Exchange.response_chunks[i][0]`). It follows the WHATWG rules (comments, multi-line `data`,
one leading space stripped, a BOM at the start) with one leniency: at the end of the body an
event that lacks its final blank line is still delivered, because servers that close the
connection right after the last `data:` line exist and their last event carries the usage.

`JsonArrayStreamDecoder` reads Gemini's `streamGenerateContent` without `alt=sse`, which is one
JSON array sent in pieces: it yields each top-level element as soon as its closing brace has
arrived.
"""

import codecs
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")

# Characters of one event (its data lines together) that are read; a longer event is counted
# and skipped (`SseDecoder.skipped_events`), never held whole. Providers' events are a few KB.
MAX_EVENT_CHARS = 1024 * 1024


@dataclass(frozen=True)
class SseEvent:
    event: str  # the `event:` field; "message" when the event named none
    data: str  # the `data:` lines joined with "\n"
    chunk_index: int  # index of the chunk that completed the event
    id: str | None = None


class SseDecoder:
    """Feed bytes with `feed`, call `close` once at the end; both return completed events.

    Linear in the bytes fed: each chunk is scanned once, and an unfinished line is kept as a
    list of pieces, joined once its terminator arrives. An event longer than `max_event_chars`
    stops being kept as soon as it passes the cap; when it ends it is counted in
    `skipped_events` (its length in `skipped_chars`) instead of being delivered."""

    def __init__(self, max_event_chars: int = MAX_EVENT_CHARS) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.max_event_chars = max_event_chars
        self._at_start = True
        self._after_cr = False  # the last text ended with "\r": a "\n" next belongs to it
        self._pieces: list[str] = []  # the unfinished line
        self._line_chars = 0
        self._event = ""
        self._data: list[str] = []
        self._event_chars = 0
        self._oversize = False
        self._id: str | None = None
        self._last_id: str | None = None
        self.skipped_events = 0
        self.skipped_chars = 0

    def feed(self, chunk: bytes, chunk_index: int) -> list[SseEvent]:
        events: list[SseEvent] = []
        self._take(self._utf8.decode(chunk), chunk_index, events)
        return events

    def close(self, chunk_index: int) -> list[SseEvent]:
        events: list[SseEvent] = []
        self._take(self._utf8.decode(b"", final=True), chunk_index, events, final=True)
        if self._pieces:  # a last line without a terminator
            self._end_line(chunk_index, events)
        self._dispatch(chunk_index, events)  # lenient: an unterminated last event counts
        return events

    def _take(self, text: str, chunk_index: int, events: list[SseEvent], final: bool = False) -> None:
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = False
        if self._after_cr and (text or final):
            # The line ended with "\r" at the end of the last text; it ends now (a "\n" that
            # follows is part of the same line end).
            self._after_cr = False
            self._end_line(chunk_index, events)
            if text[:1] == "\n":
                text = text[1:]
        pos = 0
        for match in _LINE_END.finditer(text):
            self._add_piece(text[pos : match.start()])
            pos = match.end()
            if match.group() == "\r" and pos == len(text) and not final:
                self._after_cr = True  # the "\n" of a "\r\n" may be in the next chunk
                return
            self._end_line(chunk_index, events)
        self._add_piece(text[pos:])

    def _add_piece(self, piece: str) -> None:
        if not piece:
            return
        self._line_chars += len(piece)
        if self._event_chars + self._line_chars > self.max_event_chars:
            self._oversize = True
            self._pieces = [piece[:16]] if not self._pieces else self._pieces[:1]  # enough for the field name
        else:
            self._pieces.append(piece)

    def _end_line(self, chunk_index: int, events: list[SseEvent]) -> None:
        line = "".join(self._pieces)
        length = self._line_chars
        self._pieces = []
        self._line_chars = 0
        if not length:
            self._dispatch(chunk_index, events)
            return
        if line.startswith(":"):
            return  # comment (keep-alive)
        self._event_chars += length
        if self._oversize:
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value

    def _dispatch(self, chunk_index: int, events: list[SseEvent]) -> None:
        if self._id is not None:
            self._last_id = self._id
            self._id = None
        if self._oversize:
            self.skipped_events += 1
            self.skipped_chars += self._event_chars
        elif self._data:
            data = "\n".join(self._data)
            events.append(SseEvent(self._event or "message", data, chunk_index, self._last_id))
        self._event = ""
        self._data = []
        self._event_chars = 0
        self._oversize = False


def decode_sse(chunks: Iterable[bytes]) -> list[SseEvent]:
    """All events of a body given as chunks (the chunk index is the position in `chunks`)."""
    decoder = SseDecoder()
    events: list[SseEvent] = []
    index = -1
    for index, chunk in enumerate(chunks):
        events.extend(decoder.feed(chunk, index))
    events.extend(decoder.close(max(index, 0)))
    return events


@dataclass(frozen=True)
class JsonElement:
    value: object  # one decoded element of the top-level array
    chunk_index: int


class JsonArrayStreamDecoder:
    """Yields the elements of a top-level JSON array as the chunks carrying them arrive."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._scan = 0  # next character of _text to look at
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._element_start: int | None = None

    def feed(self, chunk: bytes, chunk_index: int) -> list[JsonElement]:
        self._text += self._utf8.decode(chunk)
        return self._drain(chunk_index)

    def close(self, chunk_index: int) -> list[JsonElement]:
        self._text += self._utf8.decode(b"", final=True)
        return self._drain(chunk_index)

    @property
    def pending(self) -> bool:
        """An element has started and not ended: the array was cut."""
        return self._element_start is not None

    def _drain(self, chunk_index: int) -> list[JsonElement]:
        elements: list[JsonElement] = []
        text = self._text
        i = self._scan
        while i < len(text):
            char = text[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "[{":
                if self._depth == 1 and self._element_start is None:
                    self._element_start = i
                self._depth += 1
            elif char in "]}":
                self._depth -= 1
                if self._depth == 1 and self._element_start is not None:
                    raw = text[self._element_start : i + 1]
                    elements.append(JsonElement(_loads(raw), chunk_index))
                    self._element_start = None
            i += 1
        # Keep only the unfinished element (if any); scanning resumes where it stopped.
        keep_from = self._element_start if self._element_start is not None else i
        self._text = text[keep_from:]
        self._scan = i - keep_from
        if self._element_start is not None:
            self._element_start = 0
        return elements


def _loads(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"unreadable element in a streamed JSON array: {e}") from e
