"""OpenAI Responses API (`/v1/responses`), also served by Azure, OpenRouter and DeepSeek.

The request carries `instructions` (the system prompt) and `input` (a string, or a list of
items: messages, function calls and their outputs, reasoning). The response is a `response`
object whose `output` items hold the text, tool calls and reasoning, and whose usage follows
our convention already: input_tokens includes input_tokens_details.cached_tokens (and the
cache_write_tokens OpenRouter reports there) and output_tokens includes
output_tokens_details.reasoning_tokens. OpenRouter's charge (usage.cost) is read as in the chat
parser (common.openrouter_cost). `POST /v1/responses/compact` answers a `response.compaction`
object (id, output, usage; no model: the requested one stands) read the same way. Streamed, the events are typed
(`response.output_text.delta`, ...) and the full response object, usage included, comes in the
terminal event: `response.completed`, `response.incomplete` or `response.failed` (the last two
still end the stream; `failed` carries an error). A stream that never reached one of them is
incomplete, and its text is rebuilt from the deltas that passed.
"""

import json

from analysis.parsers import common
from analysis.parsers.exchange import Exchange, Parsed, Usage, new_parsed
from analysis.parsers.hashing import canonical_request

TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# Delta events that carry output, and whether their text is reasoning.
OUTPUT_DELTAS = {
    "response.output_text.delta": False,
    "response.refusal.delta": False,
    "response.function_call_arguments.delta": False,
    "response.custom_tool_call_input.delta": False,
    "response.code_interpreter_call_code.delta": False,
    "response.mcp_call_arguments.delta": False,
    "response.reasoning_text.delta": True,
    "response.reasoning_summary_text.delta": True,
}
SYSTEM_ROLES = ("system", "developer")


def parse(exchange: Exchange) -> Parsed:
    request = common.request_json(exchange)
    parsed = _parse_request(request)
    common.read_response(exchange, parsed, _read_stream, _read_json)
    return parsed


def _parse_request(request: dict) -> Parsed:
    parsed = new_parsed()
    parsed.model_requested = common.as_str(request.get("model"))
    parsed.stream = request.get("stream") is True
    system = [common.content_text(request.get("instructions"))]
    conversation: list[tuple[str, str]] = []
    items = request.get("input")
    if isinstance(items, str):
        conversation.append(("user", items))
    elif isinstance(items, list):
        for item in items:
            role, text = _input_item(item)
            if role in SYSTEM_ROLES:
                system.append(text)
            else:
                conversation.append((role, text))
    parsed.system_prompt = "\n".join(t for t in system if t)
    parsed.prompt_text = common.role_lines(conversation)
    parsed.canonical_request = canonical_request(request)
    parsed.temperature = common.as_float(request.get("temperature"))
    parsed.has_tools = bool(request.get("tools"))
    parsed.has_images = common.contains_image(items)
    parsed.service_tier = common.as_str(request.get("service_tier"))
    user = request.get("user") or request.get("safety_identifier")
    parsed.attribution = common.attribution_from(user, request.get("metadata"))
    return parsed


def _input_item(item: object) -> tuple[str, str]:
    """(role, text) of one input item."""
    if isinstance(item, str):
        return "user", item
    if not isinstance(item, dict):
        return "user", ""
    kind = item.get("type")
    if kind in ("function_call", "custom_tool_call"):
        arguments = item.get("arguments") if kind == "function_call" else item.get("input")
        return "assistant", f"{item.get('name', '')}({arguments or ''})"
    if kind in ("function_call_output", "custom_tool_call_output"):
        return "tool", common.content_text(item.get("output"))
    if kind == "reasoning":
        return "assistant", ""  # encrypted or summarised reasoning is not prompt text
    return str(item.get("role") or "user"), common.content_text(item.get("content"))


def _read_json(exchange: Exchange, parsed: Parsed) -> str:
    body = common.response_object(exchange, parsed)
    if body is None:
        return ""
    return _read_response_object(body, parsed)


def _read_response_object(response: dict, parsed: Parsed) -> str:
    """Model, text, usage and error of a `response` object; returns its reasoning text."""
    parsed.model = common.as_str(response.get("model")) or parsed.model or parsed.model_requested
    parsed.service_tier = common.as_str(response.get("service_tier")) or parsed.service_tier
    if parsed.error is None and response.get("error"):
        parsed.error = common.error_message(response) or "response failed"
    if response.get("status") in ("completed", "incomplete", "failed"):  # not queued / in_progress
        details = response.get("incomplete_details") if isinstance(response.get("incomplete_details"), dict) else {}
        parsed.finish_reasons = [common.as_str(details.get("reason")) or response["status"]]
    texts, reasoning = [], []
    for item in response.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "reasoning":
            reasoning.append(common.content_text(item.get("content")))
            reasoning.append(common.content_text(item.get("summary")))
        elif item.get("type") == "message":
            texts.append(common.content_text(item.get("content")))
        elif item.get("type") in ("function_call", "custom_tool_call", "mcp_call"):
            arguments = item.get("arguments") if "arguments" in item else item.get("input")
            texts.append(f"{item.get('name', '')}({arguments or ''})")
        elif item.get("type") == "code_interpreter_call" and isinstance(item.get("code"), str):
            texts.append(item["code"])
    if texts or reasoning:
        parsed.response_text = "\n".join(t for t in texts if t)
    if isinstance(response.get("usage"), dict):
        parsed.usage = usage_from_responses(response["usage"])
        parsed.provider_cost_usd = common.openrouter_cost(response["usage"])
    return "\n".join(r for r in reasoning if r)


def usage_from_responses(usage: dict) -> Usage:
    input_details = usage.get("input_tokens_details")
    input_details = input_details if isinstance(input_details, dict) else {}
    output_details = usage.get("output_tokens_details")
    output_details = output_details if isinstance(output_details, dict) else {}
    return Usage(
        input_tokens=common.count(usage.get("input_tokens")),
        output_tokens=common.count(usage.get("output_tokens")),
        cached_input_tokens=common.count(input_details.get("cached_tokens")),
        cache_write_tokens=common.count(input_details.get("cache_write_tokens")),
        reasoning_tokens=common.count(output_details.get("reasoning_tokens")),
        audio_input_tokens=common.count(input_details.get("audio_tokens")),
        audio_output_tokens=common.count(output_details.get("audio_tokens")),
        image_input_tokens=common.count(input_details.get("image_tokens")),
        image_output_tokens=common.count(output_details.get("image_tokens")),
        source="provider",
    )


def _read_stream(exchange: Exchange, parsed: Parsed) -> str:
    texts: dict[str, list[str]] = {}  # output item key -> pieces, in arrival order
    call_keys: set[str] = set()  # items that are tool calls: name( arguments )
    reasoning: list[str] = []
    final: dict | None = None
    for event in common.sse_events(exchange, parsed):
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        kind = data.get("type") if isinstance(data.get("type"), str) else event.event
        response = data.get("response") if isinstance(data.get("response"), dict) else None
        if response is not None:
            parsed.model = common.as_str(response.get("model")) or parsed.model
        if kind in TERMINAL_EVENTS and response is not None:
            final = response
        elif kind == "error":
            parsed.error = common.error_message(data) or "error event in stream"
        elif kind == "response.output_item.added" and isinstance(data.get("item"), dict):
            item = data["item"]
            if item.get("type") in ("function_call", "custom_tool_call", "mcp_call"):
                call_keys.add(_item_key(data))
                texts.setdefault(_item_key(data), []).append(f"{item.get('name', '')}(")
                if parsed.first_token_at is None:  # the call's name is its first output
                    parsed.first_token_at = common.chunk_time(exchange, event.chunk_index)
        elif kind in OUTPUT_DELTAS and isinstance(data.get("delta"), str) and data["delta"]:
            if OUTPUT_DELTAS[kind]:
                reasoning.append(data["delta"])
            else:
                texts.setdefault(_item_key(data), []).append(data["delta"])
            if parsed.first_token_at is None:
                parsed.first_token_at = common.chunk_time(exchange, event.chunk_index)
    parsed.complete = final is not None
    pieces = ["".join(p) + (")" if key in call_keys else "") for key, p in texts.items()]
    parsed.response_text = "\n".join(p for p in pieces if p)
    reasoning_text = "".join(reasoning)
    if final is not None:
        final_reasoning = _read_response_object(final, parsed)
        reasoning_text = final_reasoning or reasoning_text
    parsed.model = parsed.model or parsed.model_requested
    return reasoning_text


def _item_key(data: dict) -> str:
    item = data.get("item") if isinstance(data.get("item"), dict) else {}
    key = data.get("item_id") or item.get("id")
    return str(key) if key else f"#{data.get('output_index')}"
