"""OpenAI Chat Completions (`/v1/chat/completions`) and every server that speaks it.

One parser serves OpenAI, Azure OpenAI, OpenRouter, Groq, Mistral, DeepSeek, xAI, Together,
Fireworks, Cerebras and local servers: they share the shape and differ in a few usage fields,
all read here. Usage convention (the OpenAI one, which is ours): prompt_tokens already includes
prompt_tokens_details.cached_tokens and completion_tokens already includes
completion_tokens_details.reasoning_tokens. Variants: DeepSeek reports cache hits as
prompt_cache_hit_tokens, Mistral as num_cached_tokens (or prompt_tokens_details.cached_tokens);
OpenRouter reports its charge as usage.cost (see common.openrouter_cost); Groq puts stream usage in
x_groq.usage; Mistral sends usage in the last chunk without stream_options; xAI has reported
reasoning tokens outside completion_tokens (recognised by total_tokens = prompt + completion +
reasoning). A stream's usage is the last usage object seen. The stream is complete when `[DONE]`
or a finish_reason arrived. Azure's model comes from the response; the deployment in the path
stands for the requested model when the body names none.
"""

import json

from analysis.parsers import common
from analysis.parsers.exchange import Exchange, Parsed, Usage, new_parsed
from analysis.parsers.hashing import canonical_request

SYSTEM_ROLES = ("system", "developer")


def parse(exchange: Exchange) -> Parsed:
    parsed = read_request(exchange)
    read_response(exchange, parsed)
    return parsed


def read_request(exchange: Exchange) -> Parsed:
    """The request-side facts, from the request's path and body only."""
    return parse_request(common.request_json(exchange), exchange)


def read_response(exchange: Exchange, parsed: Parsed, read_text: bool = True) -> None:
    """Fill the response-side facts (JSON or SSE) and settle the usage. `read_text=False`: a
    JSON answer's text (response_text, finish_reasons) is left unread when the usage the
    provider reported makes it unneeded (see analysis.parsers.parse)."""
    common.read_response(exchange, parsed, _read_stream, _read_json if read_text else _read_json_usage)


def parse_request(request: dict, exchange: Exchange) -> Parsed:
    """The request-side facts of a chat completion (also used by the legacy completions)."""
    parsed = new_parsed()
    model = common.as_str(request.get("model"))
    if model is None:
        model = common.azure_deployment(exchange.path)
    parsed.model_requested = model
    parsed.stream = request.get("stream") is True
    messages = request.get("messages")
    if not isinstance(messages, list):
        messages = []
    system, conversation = [], []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role") or "user")
        text = _message_text(message)
        if role in SYSTEM_ROLES:
            if text:
                system.append(text)
        else:
            conversation.append((role, text))
    parsed.system_prompt = "\n".join(system)
    parsed.prompt_text = common.role_lines(conversation)
    parsed.canonical_request = canonical_request(request, model=model)
    parsed.temperature = common.as_float(request.get("temperature"))
    parsed.n = common.as_int(request.get("n"))
    parsed.has_tools = bool(request.get("tools") or request.get("functions"))
    parsed.has_images = common.contains_image(messages)
    parsed.service_tier = common.as_str(request.get("service_tier"))
    user = request.get("user") or request.get("safety_identifier")
    parsed.attribution = common.attribution_from(user, request.get("metadata"))
    return parsed


def _message_text(message: dict) -> str:
    text = common.content_text(message.get("content"))
    calls = message.get("tool_calls")
    function_call = message.get("function_call")
    if not isinstance(function_call, dict) and not calls:
        return text  # most messages: their text alone (this runs on every message of a request)
    parts = [text]
    calls = calls if isinstance(calls, list) else []
    if isinstance(function_call, dict):
        calls = [*calls, {"function": function_call}]
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(f"{function.get('name', '')}({function.get('arguments', '')})")
    return "\n".join([p for p in parts if p])


def _read_json(exchange: Exchange, parsed: Parsed) -> str:
    """Fill the response-side facts from a JSON body; returns the reasoning text."""
    body = _read_json_facts(exchange, parsed)
    return "" if body is None else _read_choices(body, parsed)


def _read_json_usage(exchange: Exchange, parsed: Parsed) -> str:
    """`_read_json` but for the answer's text when the provider reported a usage (nearly every
    answer): settling a call in enforce mode, on the proxy's event loop, reads no text, and its
    choices were a sixth of the Python calls it made. A call whose usage is to be
    estimated from its text (common.settle_usage) has it read."""
    body = _read_json_facts(exchange, parsed)
    if body is None or (parsed.usage.source == "provider" and parsed.complete):
        return ""
    return _read_choices(body, parsed)


def _read_json_facts(exchange: Exchange, parsed: Parsed) -> dict | None:
    """Fill the response-side facts of a JSON body but its choices' (error, model, service tier,
    usage); returns the body when it is an object."""
    body = common.response_object(exchange, parsed)
    if body is None:
        return None
    if parsed.error is None and body.get("error"):  # OpenRouter: errors inside a 200 body
        parsed.error = common.error_message(body)
    parsed.model = common.as_str(body.get("model")) or parsed.model_requested
    parsed.service_tier = common.as_str(body.get("service_tier")) or parsed.service_tier
    _apply_usage(parsed, body.get("usage"))
    return body


def _read_choices(body: dict, parsed: Parsed) -> str:
    """Fill the finish reasons and response text of a JSON body's choices; returns the reasoning text."""
    texts, reasoning, reasons = [], [], []
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("finish_reason"), str) and choice["finish_reason"]:
            reasons.append(choice["finish_reason"])
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        if not message and isinstance(choice.get("text"), str):  # legacy completions
            texts.append(choice["text"])
            continue
        texts.append(_message_text(message))
        reasoning.append(_reasoning_text(message))
    parsed.finish_reasons = reasons  # a new list: the facts' own may be a request side's (analysis.parsers._fresh)
    parsed.response_text = "\n".join([t for t in texts if t])
    return "\n".join([r for r in reasoning if r])


def _reasoning_text(message_or_delta: dict) -> str:
    for key in ("reasoning_content", "reasoning"):  # DeepSeek / OpenRouter, Groq, vLLM
        if isinstance(message_or_delta.get(key), str):
            return message_or_delta[key]
    return ""


class _ChoiceText:
    """Text and tool-call arguments of one streamed choice, in arrival order."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, list[str]] = {}

    def add(self, delta: dict) -> bool:
        """Take one delta; True when it carried output."""
        carried = False
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str) and delta[key]:
                self.content.append(delta[key])
                carried = True
        reasoning = _reasoning_text(delta)
        if reasoning:
            self.reasoning.append(reasoning)
            carried = True
        calls = delta.get("tool_calls") if isinstance(delta.get("tool_calls"), list) else []
        if isinstance(delta.get("function_call"), dict):
            calls = [*calls, {"index": 0, "function": delta["function_call"]}]
        for position, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            index = common.as_int(call.get("index"))
            pieces = self.tool_calls.setdefault(position if index is None else index, [])
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str) and function[key]:
                    pieces.append(function[key] + ("(" if key == "name" else ""))
                    carried = True
        return carried

    def text(self) -> str:
        calls = []
        for pieces in self.tool_calls.values():
            call = "".join(pieces)
            calls.append(call + ")" if "(" in call else call)
        return "\n".join(t for t in ("".join(self.content), *calls) if t)


def _read_stream(exchange: Exchange, parsed: Parsed) -> str:
    """Fill the response-side facts from an SSE body; returns the reasoning text."""
    choices: dict[int, _ChoiceText] = {}
    reasons: dict[int, str] = {}  # choice index -> its finish_reason
    usage = None
    done = finished = False
    for event in common.sse_events(exchange, parsed):
        if event.data.strip() == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(event.data)
        except json.JSONDecodeError:
            continue  # a keep-alive or a line we do not understand
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):  # OpenRouter sends errors mid-stream, even beside choices
            parsed.error = common.error_message(chunk) or "error event in stream"
        parsed.model = common.as_str(chunk.get("model")) or parsed.model
        parsed.service_tier = common.as_str(chunk.get("service_tier")) or parsed.service_tier
        x_groq = chunk.get("x_groq") if isinstance(chunk.get("x_groq"), dict) else {}
        for candidate in (chunk.get("usage"), x_groq.get("usage")):
            if isinstance(candidate, dict):
                usage = candidate
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = common.as_int(choice.get("index")) or 0
            state = choices.setdefault(index, _ChoiceText())
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            carried = state.add(delta)
            if isinstance(choice.get("text"), str) and choice["text"]:  # legacy completions
                state.content.append(choice["text"])
                carried = True
            if carried and parsed.first_token_at is None:
                parsed.first_token_at = common.chunk_time(exchange, event.chunk_index)
            if choice.get("finish_reason"):
                finished = True
                reasons[index] = str(choice["finish_reason"])
    parsed.model = parsed.model or parsed.model_requested
    parsed.complete = done or finished
    parsed.finish_reasons = [reasons[i] for i in sorted(reasons)]
    ordered = [choices[i] for i in sorted(choices)]
    parsed.response_text = "\n".join(t for t in (c.text() for c in ordered) if t)
    _apply_usage(parsed, usage)
    return "\n".join(r for r in ("".join(c.reasoning) for c in ordered) if r)


def _apply_usage(parsed: Parsed, usage: object) -> None:
    if not isinstance(usage, dict):
        return
    parsed.usage = usage_from_openai(usage)
    parsed.provider_cost_usd = common.openrouter_cost(usage)


def usage_from_openai(usage: dict) -> Usage:
    """Our Usage from an OpenAI-style usage object (prompt_tokens / completion_tokens)."""
    prompt = common.count(usage.get("prompt_tokens"))
    completion = common.count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    # Counts absent from most answers are looked up only where present (`in`, no call), and
    # the Usage is built from positional values (keywords cost a third more to bind): enforce
    # mode reads a usage object for every call it settles, on the proxy's event loop.
    cached = common.count(prompt_details["cached_tokens"]) if "cached_tokens" in prompt_details else 0
    if not cached and "prompt_cache_hit_tokens" in usage:  # DeepSeek
        cached = common.count(usage["prompt_cache_hit_tokens"])
    if not cached and "num_cached_tokens" in usage:  # Mistral
        cached = common.count(usage["num_cached_tokens"])
    cache_write = 0
    if "cache_write_tokens" in prompt_details:  # OpenRouter
        cache_write = common.count(prompt_details["cache_write_tokens"])
    reasoning = 0
    if "reasoning_tokens" in completion_details:
        reasoning = common.count(completion_details["reasoning_tokens"])
    if not reasoning and "reasoning_tokens" in usage:
        reasoning = common.count(usage["reasoning_tokens"])
    if reasoning and common.as_int(usage.get("total_tokens")) == prompt + completion + reasoning:
        completion += reasoning  # reasoning reported outside completion_tokens (xAI)
    audio_in = common.count(prompt_details["audio_tokens"]) if "audio_tokens" in prompt_details else 0
    audio_out = common.count(completion_details["audio_tokens"]) if "audio_tokens" in completion_details else 0
    image_in = common.count(prompt_details["image_tokens"]) if "image_tokens" in prompt_details else 0
    image_out = common.count(completion_details["image_tokens"]) if "image_tokens" in completion_details else 0
    return Usage(
        prompt,  # input_tokens
        completion,  # output_tokens
        cached,  # cached_input_tokens
        cache_write,  # cache_write_tokens
        0,  # cache_write_1h_tokens
        reasoning,  # reasoning_tokens
        audio_in,  # audio_input_tokens
        audio_out,  # audio_output_tokens
        image_in,  # image_input_tokens
        image_out,  # image_output_tokens
        "provider",  # source
    )
