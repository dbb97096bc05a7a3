"""Google Gemini (`generativelanguage.googleapis.com` and Vertex AI's `.../publishers/google/...`).

Endpoints: `models/NAME:generateContent`, `:streamGenerateContent` (SSE with `?alt=sse`,
otherwise one JSON array sent in pieces), `:embedContent` / `:batchEmbedContents` and
`:batchGenerateContent` (batch=True). The model is named in the URL path; the response's
modelVersion says which one served.

usageMetadata: promptTokenCount already includes cachedContentTokenCount; candidatesTokenCount
EXCLUDES thoughtsTokenCount, so output_tokens = candidates + thoughts and reasoning_tokens =
thoughts; toolUsePromptTokenCount (what built-in tools such as search fed back) is input and is
added to it (the reported total is prompt + tool use + candidates + thoughts). Streamed chunks
carry cumulative usage: the last one wins. A stream is complete once a candidate has a
finishReason. The REST API accepts camelCase and snake_case field names; both are read.
"""

import json
import re

from analysis.parsers import common
from analysis.parsers.exchange import Exchange, Parsed, Usage, new_parsed
from analysis.parsers.hashing import canonical_request
from analysis.parsers.sse import JsonArrayStreamDecoder

_MODEL_IN_PATH = re.compile(r"models/([^/:]+):(\w+)")
TRAFFIC_TYPE_TIERS = {"ON_DEMAND_FLEX": "flex", "PROVISIONED_THROUGHPUT": "provisioned"}


def parse(exchange: Exchange) -> Parsed:
    request = common.request_json(exchange)
    match = _MODEL_IN_PATH.search(exchange.path)
    model, method = (match.group(1), match.group(2)) if match else (None, "")
    parsed = _parse_request(request, model)
    parsed.batch = method.startswith("batch") and "Embed" not in method
    if common.is_error_status(exchange):
        parsed.error = common.error_from_body(exchange, common.response_json(exchange))
    # An error is answered in one JSON body even to a streaming request: not a stream.
    streaming_method = method == "streamGenerateContent" and parsed.error is None
    parsed.stream = exchange.is_event_stream or streaming_method
    if parsed.stream and not parsed.error:
        thoughts = _read_stream(exchange, parsed)
    else:
        thoughts = _read_json(exchange, parsed)
    parsed.model = parsed.model or parsed.model_requested
    common.finish(parsed, exchange, thoughts)
    return parsed


def _get(mapping: dict, camel: str) -> object:
    """A field by its camelCase name or its snake_case twin."""
    if camel in mapping:
        return mapping[camel]
    return mapping.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


def _parse_request(request: dict, model: str | None) -> Parsed:
    parsed = new_parsed()
    parsed.model_requested = model or common.as_str(request.get("model"))
    system = _get(request, "systemInstruction")
    parsed.system_prompt = _parts_text(system.get("parts")) if isinstance(system, dict) else ""
    contents = request.get("contents")
    if isinstance(request.get("content"), dict):  # embedContent
        contents = [request["content"]]
    if isinstance(request.get("requests"), list):  # batchEmbedContents / batchGenerateContent
        contents = [
            _get(r, "content") or (_get(r, "request") or {}).get("contents")
            for r in request["requests"]
            if isinstance(r, dict)
        ]
        contents = [c for group in contents for c in (group if isinstance(group, list) else [group])]
    contents = contents if isinstance(contents, list) else []
    parsed.prompt_text = common.role_lines(
        [(str(c.get("role") or "user"), _parts_text(c.get("parts"))) for c in contents if isinstance(c, dict)]
    )
    parsed.canonical_request = canonical_request(request, model=parsed.model_requested)
    config = _get(request, "generationConfig")
    config = config if isinstance(config, dict) else {}
    parsed.temperature = common.as_float(config.get("temperature"))
    parsed.n = common.as_int(_get(config, "candidateCount"))
    parsed.has_tools = bool(request.get("tools"))
    parsed.has_images = common.contains_image(contents)
    parsed.attribution = common.attribution_from(None, request.get("labels"))
    return parsed


def _parts_text(parts: object, thoughts: bool = False) -> str:
    """Text of a list of parts: texts and function calls/results; thought parts only when
    `thoughts` (and then only them)."""
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if bool(part.get("thought")) != thoughts:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = _get(part, "functionCall")
        if isinstance(call, dict):
            texts.append(f"{call.get('name', '')}({json.dumps(call.get('args'), ensure_ascii=False)})")
        result = _get(part, "functionResponse")
        if isinstance(result, dict):
            texts.append(json.dumps(result.get("response"), ensure_ascii=False))
        code = _get(part, "executableCode")
        if isinstance(code, dict) and isinstance(code.get("code"), str):
            texts.append(code["code"])
    return "\n".join(t for t in texts if t)


def _read_json(exchange: Exchange, parsed: Parsed) -> str:
    body = common.response_json(exchange)
    if isinstance(body, list):  # a streamed array read whole
        thoughts = [_read_response(item, parsed) for item in body if isinstance(item, dict)]
        return "".join(thoughts)
    if not isinstance(body, dict):
        if exchange.response_body and parsed.error is None and common.is_success_status(exchange):
            parsed.error = "unreadable response body"
        return ""
    if parsed.error is None and body.get("error"):
        parsed.error = common.error_message(body)
    parsed.response_text = ""
    return _read_response(body, parsed)


def _read_response(response: dict, parsed: Parsed) -> str:
    """Add one GenerateContentResponse (a whole one or a stream chunk) to `parsed`.

    Text is appended; usage replaced (it is cumulative). Returns the thought text.
    """
    served = common.as_str(_get(response, "modelVersion"))
    parsed.model = served.removeprefix("models/") if served else parsed.model
    texts, thoughts = [], []
    for position, candidate in enumerate(response.get("candidates") or []):
        if not isinstance(candidate, dict):
            continue
        content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
        texts.append(_parts_text(content.get("parts")))
        thoughts.append(_parts_text(content.get("parts"), thoughts=True))
        if _get(candidate, "finishReason"):
            parsed.complete = True
            index = common.as_int(candidate.get("index"))
            _set_reason(
                parsed,
                index if index is not None and 0 <= index < 64 else position,
                str(_get(candidate, "finishReason")),
            )
    text = "".join(t for t in texts if t)
    if text:
        parsed.response_text += text
    usage = _get(response, "usageMetadata")
    if isinstance(usage, dict) and _has_counts(usage):
        parsed.usage = usage_from_gemini(usage)
        tier = common.as_str(_get(usage, "serviceTier"))
        tier = tier or TRAFFIC_TYPE_TIERS.get(str(_get(usage, "trafficType")))
        parsed.service_tier = tier or parsed.service_tier
    feedback = _get(response, "promptFeedback")
    if isinstance(feedback, dict) and _get(feedback, "blockReason") and parsed.error is None:
        parsed.error = f"prompt blocked: {_get(feedback, 'blockReason')}"
    return "".join(t for t in thoughts if t)


def _has_counts(usage: dict) -> bool:
    return any(
        _get(usage, key) is not None for key in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")
    )


def usage_from_gemini(usage: dict) -> Usage:
    prompt = common.count(_get(usage, "promptTokenCount"))
    tool_use = common.count(_get(usage, "toolUsePromptTokenCount"))
    candidates = common.count(_get(usage, "candidatesTokenCount"))
    thoughts = common.count(_get(usage, "thoughtsTokenCount"))
    prompt_by_modality = _by_modality(_get(usage, "promptTokensDetails"))
    cached_by_modality = _by_modality(_get(usage, "cacheTokensDetails"))
    output_by_modality = _by_modality(_get(usage, "candidatesTokensDetails"))
    return Usage(
        input_tokens=prompt + tool_use,
        output_tokens=candidates + thoughts,
        cached_input_tokens=common.count(_get(usage, "cachedContentTokenCount")),
        reasoning_tokens=thoughts,
        # Audio is priced apart (the audio track of a video included: Gemini reports it as AUDIO);
        # image and video input cost what text costs. Cached audio pays the cache-read rate.
        audio_input_tokens=max(prompt_by_modality.get("AUDIO", 0) - cached_by_modality.get("AUDIO", 0), 0),
        audio_output_tokens=output_by_modality.get("AUDIO", 0),
        image_output_tokens=output_by_modality.get("IMAGE", 0),
        source="provider",
    )


def _by_modality(details: object) -> dict[str, int]:
    """Gemini's [{modality, tokenCount}, ...] as {modality: tokens}."""
    totals: dict[str, int] = {}
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict) and isinstance(item.get("modality"), str):
            totals[item["modality"]] = totals.get(item["modality"], 0) + common.count(_get(item, "tokenCount"))
    return totals


def _set_reason(parsed: Parsed, index: int, reason: str) -> None:
    """Candidate `index`'s finish reason (a stream names each candidate's once, in any order)."""
    reasons = parsed.finish_reasons
    while len(reasons) <= index:
        reasons.append("")
    reasons[index] = reason


def _read_stream(exchange: Exchange, parsed: Parsed) -> str:
    parsed.complete = False  # until a finishReason arrives
    thoughts = []
    for response, chunk_index in _stream_responses(exchange, parsed):
        if response.get("error"):
            parsed.error = common.error_message(response) or "error in stream"
            continue
        before = len(parsed.response_text)
        thought = _read_response(response, parsed)
        thoughts.append(thought)
        carried = len(parsed.response_text) > before or bool(thought)
        if carried and parsed.first_token_at is None:
            parsed.first_token_at = common.chunk_time(exchange, chunk_index)
    return "".join(thoughts)


def _stream_responses(exchange: Exchange, parsed: Parsed) -> list[tuple[dict, int]]:
    """The response objects of a stream, SSE or JSON array, with their chunk index."""
    chunks = [chunk for _, chunk in exchange.response_chunks]
    if exchange.response_body.lstrip()[:1] == b"[":
        decoder = JsonArrayStreamDecoder()
        elements = []
        try:
            for index, chunk in enumerate(chunks):
                elements.extend(decoder.feed(chunk, index))
            elements.extend(decoder.close(max(len(chunks) - 1, 0)))
        except ValueError:
            pass  # a damaged element ends what can be read; the stream counts as cut
        return [(e.value, e.chunk_index) for e in elements if isinstance(e.value, dict)]
    found = []
    for event in common.sse_events(exchange, parsed):
        try:
            value = json.loads(event.data)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append((value, event.chunk_index))
    return found
