"""What every wire-format parser needs: reading bodies, error messages, text, usage fallback.

The parsers differ in where a provider puts things; reading a JSON body, finding an error
message, joining "role: text" lines, turning a chunk index into a time and, above all, deciding
when our own token count replaces the provider's, are the same everywhere and live here.

Usage fallback (`settle_usage`): a successful response whose usage never arrived (a stream
without include_usage) or whose stream was cut short (complete=False) gets usage counted by
analysis.parsers.tokens from the request text and the text that passed, with source="estimated".
Figures the provider did report in a cut stream (Anthropic's message_start input tokens) are
kept, and the output becomes the larger of the reported and the counted value. An error
response is not estimated (nothing was generated), but a 2xx stream that broke off with an
error event is: its input was read and some output may have passed.
"""

import json
import re

from analysis.parsers import tokens
from analysis.parsers.exchange import Exchange, Parsed, Usage
from analysis.parsers.sse import SseDecoder, SseEvent

CHARS_PER_TOKEN = 4  # stands in for a count of stream events too large to read (see sse_events)
ERROR_TEXT_LIMIT = 500  # characters of a non-JSON error body kept as the error
_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")


def request_json(exchange: Exchange) -> dict:
    """The request body as a dict; {} when empty or not a JSON object."""
    value = body_json(exchange.request_body)
    return value if isinstance(value, dict) else {}


def response_json(exchange: Exchange) -> object | None:
    """The response body decoded as JSON; None when empty or not JSON."""
    return body_json(exchange.response_body)


_JSON_DECODER = json.JSONDecoder()  # what json.loads decodes with
_SCAN_JSON = _JSON_DECODER.scan_once  # what its raw_decode calls
_JSON_SPACES = " \t\n\r"  # the white space JSON allows around a value


def body_json(body: bytes) -> object | None:
    """A request or response body decoded as JSON, as json.loads decodes it; None when empty or
    not JSON."""
    if not body or body.isspace():  # not body.strip(), which copies the body
        return None
    try:
        # Decoded as UTF-8 and given to the decoder itself: json.loads(body) detects the
        # encoding and skips the spaces around the value with two regular expressions, which
        # took nearly half of json.loads's time on a settled call, and a fifth of reading a
        # request (enforce mode: both on the event loop).
        # A body this does not read as json.loads would (another encoding: a BOM, or UTF-16/32,
        # whose NULs no JSON text has; spaces before the value; more after it) is left to
        # json.loads below, which reads it as before.
        # Its scanner is called as raw_decode(text) calls it, without that Python frame around
        # it: StopIteration is raw_decode's "Expecting value" (no value at the start).
        text = body.decode("utf-8", "surrogatepass")
        value, end = _SCAN_JSON(text, 0)
        if end == len(text) or not text[end:].strip(_JSON_SPACES):
            return value
    except (json.JSONDecodeError, UnicodeDecodeError, StopIteration):
        pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_error_status(exchange: Exchange) -> bool:
    return exchange.status is not None and exchange.status >= 400


def is_success_status(exchange: Exchange) -> bool:
    return exchange.status is not None and 200 <= exchange.status < 300


def is_stream_response(exchange: Exchange, stream_requested: bool) -> bool:
    """The response is an event stream: said by its content type, or requested and not
    answered with a JSON body or an error (servers that omit the content type exist)."""
    if exchange.is_event_stream:
        return True
    if not stream_requested or is_error_status(exchange):
        return False
    return exchange.response_body.lstrip()[:1] not in (b"{", b"[")


def error_from_body(exchange: Exchange, body: object | None) -> str:
    """A short message for an error response: the provider's message, else the body text."""
    message = error_message(body)
    if message:
        return message
    text = exchange.response_body.decode("utf-8", errors="replace").strip()
    if text:
        return text[:ERROR_TEXT_LIMIT]
    return f"HTTP {exchange.status}"


def error_message(body: object | None) -> str | None:
    """The message of an error object in any provider's shape, or None."""
    if isinstance(body, list) and body:  # Gemini sometimes wraps the error in a list
        body = body[0]
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message") or error.get("msg")
        kind = error.get("type") or error.get("code") or error.get("status")
        if message and kind:
            return f"{kind}: {message}"
        if message or kind:
            return str(message or kind)
        return json.dumps(error)[:ERROR_TEXT_LIMIT]
    if isinstance(error, str) and error:
        return error
    for key in ("message", "detail"):
        if isinstance(body.get(key), str) and body[key]:
            return body[key]
    return None


def azure_deployment(path: str) -> str | None:
    """The deployment named in an Azure OpenAI path (it stands for the model there)."""
    match = _AZURE_DEPLOYMENT.search(path)
    return match.group(1) if match else None


def sse_events(exchange: Exchange, parsed: Parsed) -> list[SseEvent]:
    """The events of a streamed response; events over the size cap are skipped and counted in
    parsed.skipped_events / skipped_chars (see analysis.parsers.sse.MAX_EVENT_CHARS)."""
    decoder = SseDecoder()
    events: list[SseEvent] = []
    index = -1
    for index, (_, chunk) in enumerate(exchange.response_chunks):
        events.extend(decoder.feed(chunk, index))
    events.extend(decoder.close(max(index, 0)))
    parsed.skipped_events += decoder.skipped_events
    parsed.skipped_chars += decoder.skipped_chars
    return events


def chunk_time(exchange: Exchange, chunk_index: int) -> float | None:
    if 0 <= chunk_index < len(exchange.response_chunks):
        return exchange.response_chunks[chunk_index][0]
    return None


# The number types as a tuple, not `int | float`, which would build a new union on every call:
# these run on every usage field of every call (enforce mode reads them on the event loop).
_NUMBER = (int, float)


def as_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        return None
    return float(value)


def as_int(value: object) -> int | None:
    if type(value) is int:  # the common case, tested first (a bool's type is bool, not int)
        return value
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        return None
    return int(value)


def count(value: object) -> int:
    """A token count field as an int; 0 when absent or not a number. A usage object has a dozen
    counts, read on every settled call (enforce mode: on the proxy's event loop), so an int,
    the common case, is returned at once (a bool's type is bool, not int), and so is an absent one."""
    if type(value) is int:
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        return 0
    return int(value)


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def role_lines(pairs: list[tuple[str, str]]) -> str:
    """ "role: text" lines, one message per line group, empty texts left out."""
    return "\n".join([f"{role}: {text}" for role, text in pairs if text])


def attribution_from(user: object, metadata: object) -> dict[str, str]:
    """Attribution from a `user` field and a `metadata` object's team/feature/user keys."""
    attribution: dict[str, str] = {}
    if isinstance(user, str) and user:
        attribution["user"] = user
    if isinstance(metadata, dict):
        for key in ("team", "feature", "user"):
            if isinstance(metadata.get(key), str) and metadata[key]:
                attribution[key] = metadata[key]
    return attribution


def finish(parsed: Parsed, exchange: Exchange, extra_output_text: str = "") -> None:
    """The last step of every parser: an error status always has an error, and the usage is
    settled (see settle_usage)."""
    status = exchange.status
    if status is not None and status >= 400 and not parsed.error:  # is_error_status, without its call
        parsed.error = error_from_body(exchange, response_json(exchange))
    settle_usage(parsed, exchange, extra_output_text)


def keep_parts_within_whole(usage: Usage) -> None:
    """Clamp reported parts so they never exceed their whole.

    Providers occasionally report parts larger than the total (OpenRouter has reported the same
    tokens as both read from and written to the cache, and more reasoning than completion
    tokens); cost arithmetic needs cached + cache_write <= input, 1h <= cache_write and
    reasoning <= output.
    """
    # Compared, not min()-ed: every parsed call passes here (enforce mode: on the event loop)
    # and nearly every one is within its whole already.
    if usage.input_tokens is not None:
        if usage.cached_input_tokens > usage.input_tokens:
            usage.cached_input_tokens = usage.input_tokens
        room = usage.input_tokens - usage.cached_input_tokens
        if usage.cache_write_tokens > room:
            usage.cache_write_tokens = room
    if usage.cache_write_1h_tokens > usage.cache_write_tokens:
        usage.cache_write_1h_tokens = usage.cache_write_tokens
    if usage.output_tokens is not None and usage.reasoning_tokens > usage.output_tokens:
        usage.reasoning_tokens = usage.output_tokens


def settle_usage(parsed: Parsed, exchange: Exchange, extra_output_text: str = "") -> None:
    """Fill parsed.usage with our own counts when the provider's is missing or partial.

    `extra_output_text` is output text that is not part of response_text (reasoning text);
    it counts as output and as reasoning tokens.
    """
    keep_parts_within_whole(parsed.usage)
    usage = parsed.usage
    if usage.source == "provider" and parsed.complete:
        return
    if not is_success_status(exchange) or (parsed.error and parsed.complete):
        return  # nothing was generated (a stream that failed midway still counts)
    model = parsed.model or parsed.model_requested
    input_estimate = tokens.estimate_input_tokens(parsed, model)
    reasoning_estimate = tokens.estimate_output_tokens(extra_output_text, model)
    output_estimate = tokens.estimate_output_tokens(parsed.response_text, model)
    output_estimate += reasoning_estimate + parsed.skipped_chars // CHARS_PER_TOKEN
    if usage.source == "provider":  # cut stream: keep what the provider said, complete the rest
        parsed.usage = Usage(
            input_tokens=usage.input_tokens if usage.input_tokens else input_estimate,
            output_tokens=max(usage.output_tokens or 0, output_estimate),
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=max(usage.reasoning_tokens, reasoning_estimate),
            source="estimated",
        )
        return
    if not input_estimate and not output_estimate:
        return  # nothing to count: source stays "none"
    parsed.usage = Usage(
        input_tokens=input_estimate,
        output_tokens=output_estimate,
        reasoning_tokens=reasoning_estimate,
        source="estimated",
    )


IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


def content_text(content: object) -> str:
    """The text of a message's content in any provider's shape.

    A string is itself; a list of parts gives the texts of its parts joined with newlines
    (text parts, nested tool results, tool-call arguments); images and files give nothing.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (content_text(part) for part in content) if t)
    if isinstance(content, dict):
        if isinstance(content.get("text"), str):
            return content["text"]
        if "content" in content:  # tool results (Anthropic tool_result, Responses items)
            return content_text(content["content"])
        if "input" in content and content.get("type") == "tool_use":
            return json.dumps(content["input"], ensure_ascii=False)
        if isinstance(content.get("arguments"), str):  # function calls
            return content["arguments"]
    return ""


_CONTAINERS = (list, dict)  # a tuple, not `list | dict`, which would build a union for every value
_BLOB_KEYS = frozenset({"inlineData", "inline_data", "fileData", "file_data"})  # Gemini's inline and file parts


def contains_image(value: object) -> bool:
    """True when a request part anywhere in `value` is an image. Runs on every message of
    every request (enforce mode: on the event loop, before the call is sent), so it walks
    with plain loops: any() over a generator cost a message of one string 2 us in-process."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, _CONTAINERS) and contains_image(item):
                return True
        return False
    if not isinstance(value, dict):
        return False
    if value.get("type") in IMAGE_PART_TYPES:
        return True
    for key, item in value.items():
        if isinstance(item, dict):
            if key in _BLOB_KEYS and _is_image_blob(item):
                return True
            if contains_image(item):
                return True
        elif isinstance(item, list) and contains_image(item):
            return True
    return False


def _is_image_blob(blob: dict) -> bool:
    mime = blob.get("mimeType") or blob.get("mime_type") or ""
    return isinstance(mime, str) and mime.startswith("image/")


def response_object(exchange: Exchange, parsed: Parsed) -> dict | None:
    """The JSON response body when it is an object, else None; on the way, sets parsed.error
    from an error status's body, or to "unreadable response body" for a 2xx that is not JSON."""
    body = body_json(exchange.response_body)  # response_json's body, without its call (a settlement reads one)
    status = exchange.status
    if status is not None and status >= 400:  # is_error_status, likewise
        parsed.error = error_from_body(exchange, body)
    if not isinstance(body, dict):
        if exchange.response_body and parsed.error is None and is_success_status(exchange):
            parsed.error = "unreadable response body"
        return None
    return body


def read_response(exchange: Exchange, parsed: Parsed, read_stream, read_json) -> None:
    """Fill the response-side facts with `read_stream` when the answer is a stream, else with
    `read_json` (an error answered in JSON to a streaming request is not a stream); each
    returns the reasoning text. Then settle the usage (`finish`)."""
    if is_stream_response(exchange, parsed.stream):
        parsed.stream = True
        reasoning = read_stream(exchange, parsed)
    else:
        parsed.stream = False
        reasoning = read_json(exchange, parsed)
    finish(parsed, exchange, reasoning)


def openrouter_cost(usage: dict) -> float | None:
    """What an OpenRouter call cost the user, from its usage block; None when not reported.

    `usage.cost` is what OpenRouter charged the account. With the user's own provider key
    (`is_byok: true`) that is only OpenRouter's fee (often 0), and the provider billed the key
    `cost_details.upstream_inference_cost` besides: the call cost the sum. Without BYOK,
    upstream_inference_cost repeats (part of) `cost` and is not added.
    (https://openrouter.ai/docs/use-cases/usage-accounting)
    """
    if "cost" not in usage:  # every other provider: asked of every usage object read
        return None
    cost = as_float(usage["cost"])
    if cost is None:
        return None
    details = usage.get("cost_details") if isinstance(usage.get("cost_details"), dict) else {}
    upstream = as_float(details.get("upstream_inference_cost"))
    if usage.get("is_byok") is True and upstream is not None:
        return cost + upstream
    return cost
