"""Anthropic Messages API (`/v1/messages`) and its batches (`/v1/messages/batches...`).

Anthropic's input_tokens EXCLUDES the cached parts, so ours is the sum: input_tokens =
input_tokens + cache_read_input_tokens + cache_creation_input_tokens, with cached_input_tokens =
cache_read_input_tokens, cache_write_tokens = cache_creation_input_tokens and
cache_write_1h_tokens = cache_creation.ephemeral_1h_input_tokens. output_tokens already
includes thinking; Anthropic does not report thinking separately, except for newer models'
output_tokens_details.thinking_tokens, which becomes reasoning_tokens when present.

Iterations: when a request samples more than once (server-side compaction, the advisor tool),
usage.iterations lists each sampling step's usage in the same shape (`type` message, compaction,
advisor_message). The top level counts only the `message` iterations: a compaction iteration
(billed, at the request's model, per Anthropic's compaction docs) and an advisor iteration
(billed at the advisor's model, which the iteration names in `model`) are not in it. So with
iterations present the call's tokens are the sum of every iteration without a `model` of its
own, and each iteration naming another model goes to Parsed.other_models, priced at that
model's rates (see docs/pricing.md, "Iterations").

Streamed, message_start carries the first usage and every message_delta carries a cumulative
usage that may revise any field (input_tokens grows when server tools run): the LAST value of
each field wins, nothing is summed. message_stop ends a complete stream.

Batches: creating, listing or retrieving a batch is recorded with batch=True and no usage;
downloading its results (JSON lines, one message per request) reports their summed usage.
"""

import json
import re

from analysis.parsers import common
from analysis.parsers.exchange import Exchange, Parsed, Usage, new_parsed
from analysis.parsers.hashing import canonical_request

_MODEL_IN_PATH = re.compile(r"/models/([^/:]+):(?:rawPredict|streamRawPredict)$")


def parse(exchange: Exchange) -> Parsed:
    if "/batches" in exchange.path:
        return _parse_batch(exchange)
    request = common.request_json(exchange)
    parsed = parse_request(request)
    if parsed.model_requested is None and (in_path := _MODEL_IN_PATH.search(exchange.path)):
        parsed.model_requested = in_path.group(1)  # Claude on Vertex AI names it in the URL
        if parsed.canonical_request is not None:
            parsed.canonical_request["model"] = parsed.model_requested
    common.read_response(exchange, parsed, _read_stream, _read_json)
    return parsed


def parse_request(request: dict) -> Parsed:
    parsed = new_parsed()
    parsed.model_requested = common.as_str(request.get("model"))
    parsed.stream = request.get("stream") is True
    parsed.system_prompt = common.content_text(request.get("system"))
    messages = request.get("messages") if isinstance(request.get("messages"), list) else []
    parsed.prompt_text = common.role_lines(
        [(str(m.get("role") or "user"), common.content_text(m.get("content"))) for m in messages if isinstance(m, dict)]
    )
    parsed.canonical_request = canonical_request(request)
    parsed.temperature = common.as_float(request.get("temperature"))
    parsed.has_tools = bool(request.get("tools"))
    parsed.has_images = common.contains_image(messages) or common.contains_image(request.get("system"))
    parsed.service_tier = common.as_str(request.get("service_tier"))
    metadata = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
    parsed.attribution = common.attribution_from(metadata.get("user_id"), None)
    return parsed


def _read_json(exchange: Exchange, parsed: Parsed) -> str:
    body = common.response_object(exchange, parsed)
    if body is None:
        return ""
    if parsed.error is None and body.get("type") == "error":
        parsed.error = common.error_message(body)
    return _read_message(body, parsed)


def _read_message(message: dict, parsed: Parsed) -> str:
    """Model, text and usage of a message object; returns its thinking text."""
    parsed.model = common.as_str(message.get("model")) or parsed.model_requested
    if isinstance(message.get("stop_reason"), str):
        parsed.finish_reasons = [message["stop_reason"]]
    texts, thinking = [], []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") in ("thinking", "redacted_thinking"):
            thinking.append(block.get("thinking") or "")
        elif block.get("type") in ("tool_use", "server_tool_use", "mcp_tool_use"):
            arguments = json.dumps(block.get("input"), ensure_ascii=False)
            texts.append(f"{block.get('name', '')}({arguments})")
        elif isinstance(block.get("text"), str):
            texts.append(block["text"])
    parsed.response_text = "\n".join(t for t in texts if t)
    usage = message.get("usage")
    if isinstance(usage, dict):
        _apply_usage(parsed, usage)
    return "\n".join(t for t in thinking if t)


def _apply_usage(parsed: Parsed, usage: dict) -> None:
    parsed.usage = usage_from_anthropic(usage)
    parsed.other_models = other_model_iterations(usage)
    parsed.service_tier = common.as_str(usage.get("service_tier")) or parsed.service_tier


def _iterations(usage: dict) -> list[dict]:
    iterations = usage.get("iterations")
    return [i for i in iterations if isinstance(i, dict)] if isinstance(iterations, list) else []


def usage_from_anthropic(usage: dict) -> Usage:
    """The call's own tokens: the top level, or with iterations the sum of those without a model
    of their own (see the module docstring)."""
    own = [i for i in _iterations(usage) if not common.as_str(i.get("model"))]
    if not own:
        return _usage_of_block(usage)
    total = _usage_of_block(own[0])
    for iteration in own[1:]:
        total = _add(total, _usage_of_block(iteration))
    # Thinking is reported at the top level only, for the message iterations it sums.
    total.reasoning_tokens = min(_usage_of_block(usage).reasoning_tokens, total.output_tokens or 0)
    return total


def other_model_iterations(usage: dict) -> list[tuple[str, Usage]]:
    """Iterations run by another model (the advisor's), as (model, usage)."""
    return [(i["model"], _usage_of_block(i)) for i in _iterations(usage) if common.as_str(i.get("model")) is not None]


def _usage_of_block(usage: dict) -> Usage:
    uncached = common.count(usage.get("input_tokens"))
    cache_read = common.count(usage.get("cache_read_input_tokens"))
    cache_creation = common.count(usage.get("cache_creation_input_tokens"))
    creation = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    output_details = usage.get("output_tokens_details")
    output_details = output_details if isinstance(output_details, dict) else {}
    reasoning = common.count(output_details.get("thinking_tokens")) or common.count(
        output_details.get("reasoning_tokens")
    )
    return Usage(
        input_tokens=uncached + cache_read + cache_creation,
        output_tokens=common.count(usage.get("output_tokens")),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_creation,
        cache_write_1h_tokens=common.count(creation.get("ephemeral_1h_input_tokens")),
        reasoning_tokens=reasoning,
        source="provider",
    )


def _read_stream(exchange: Exchange, parsed: Parsed) -> str:
    blocks: dict[int, list[str]] = {}  # content block index -> text pieces
    calls: set[int] = set()
    thinking: list[str] = []
    usage: dict = {}
    parsed.complete = False  # until message_stop
    for event in common.sse_events(exchange, parsed):
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        kind = data.get("type") if isinstance(data.get("type"), str) else event.event
        carried = False
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            parsed.model = common.as_str(message.get("model")) or parsed.model
            _merge_usage(usage, message.get("usage"))
        elif kind == "message_delta":
            _merge_usage(usage, data.get("usage"))
            delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
            if isinstance(delta.get("stop_reason"), str):
                parsed.finish_reasons = [delta["stop_reason"]]
        elif kind == "message_stop":
            parsed.complete = True
        elif kind == "error":
            parsed.error = common.error_message(data) or "error event in stream"
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            block = data["content_block"]
            index = common.as_int(data.get("index")) or 0
            if block.get("type") in ("tool_use", "server_tool_use", "mcp_tool_use"):
                calls.add(index)
                blocks.setdefault(index, []).append(f"{block.get('name', '')}(")
                carried = True
            elif isinstance(block.get("text"), str) and block["text"]:
                blocks.setdefault(index, []).append(block["text"])
                carried = True
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            delta = data["delta"]
            index = common.as_int(data.get("index")) or 0
            if isinstance(delta.get("thinking"), str) and delta["thinking"]:
                thinking.append(delta["thinking"])
                carried = True
            for key in ("text", "partial_json"):
                if isinstance(delta.get(key), str) and delta[key]:
                    blocks.setdefault(index, []).append(delta[key])
                    carried = True
        if carried and parsed.first_token_at is None:
            parsed.first_token_at = common.chunk_time(exchange, event.chunk_index)
    texts = ["".join(blocks[i]) + (")" if i in calls else "") for i in sorted(blocks)]
    parsed.response_text = "\n".join(t for t in texts if t)
    parsed.model = parsed.model or parsed.model_requested
    if usage:
        _apply_usage(parsed, usage)
    return "".join(thinking)


def _merge_usage(merged: dict, usage: object) -> None:
    """Later usage objects revise earlier ones field by field (nested objects too)."""
    if not isinstance(usage, dict):
        return
    for key, value in usage.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            _merge_usage(merged[key], value)
        else:
            merged[key] = dict(value) if isinstance(value, dict) else value


def _parse_batch(exchange: Exchange) -> Parsed:
    parsed = Parsed(batch=True)
    request = common.request_json(exchange)
    requests = request.get("requests") if isinstance(request.get("requests"), list) else []
    models = {r["params"].get("model") for r in requests if isinstance(r, dict) and isinstance(r.get("params"), dict)}
    if len(models) == 1:
        parsed.model_requested = common.as_str(models.pop())
        parsed.model = parsed.model_requested
    if common.is_error_status(exchange):
        parsed.error = common.error_from_body(exchange, common.response_json(exchange))
        return parsed
    if exchange.path.rstrip("/").endswith("/results"):
        _sum_results(exchange, parsed)
        batch_id = exchange.path.rstrip("/").split("/")[-2]
        if parsed.usage.source == "provider":
            parsed.usage_key = f"anthropic-batch:{batch_id}"  # downloaded again, counted once
    return parsed


def _sum_results(exchange: Exchange, parsed: Parsed) -> None:
    """Usage of a batch's results: the sum over its succeeded messages."""
    total: Usage | None = None
    served = set()
    for line in exchange.response_body.splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        message = (result.get("result") or {}).get("message") if isinstance(result, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
            continue
        usage = usage_from_anthropic(message["usage"])
        served.add(message.get("model"))
        total = usage if total is None else _add(total, usage)
    if total is not None:
        parsed.usage = total
    if len(served) == 1:
        parsed.model = common.as_str(served.pop()) or parsed.model


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=(a.input_tokens or 0) + (b.input_tokens or 0),
        output_tokens=(a.output_tokens or 0) + (b.output_tokens or 0),
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        cache_write_1h_tokens=a.cache_write_1h_tokens + b.cache_write_1h_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        source="provider",
    )
