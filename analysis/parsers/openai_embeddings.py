"""OpenAI-style embeddings (`/v1/embeddings`, Azure deployments, compatible servers).

The request's `input` is a string, a list of strings or token ids; the response reports
usage.prompt_tokens (and total_tokens, which is the same number). Embeddings produce no output
tokens: output_tokens is 0. Without a usage block the input is counted from the request text.
"""

from analysis.parsers import common
from analysis.parsers.exchange import Exchange, Parsed, Usage, new_parsed
from analysis.parsers.hashing import canonical_request


def parse(exchange: Exchange) -> Parsed:
    request = common.request_json(exchange)
    parsed = new_parsed()
    model = common.as_str(request.get("model"))
    if model is None:
        model = common.azure_deployment(exchange.path)
    parsed.model_requested = model
    parsed.prompt_text = common.role_lines([("user", _input_text(request.get("input")))])
    parsed.canonical_request = canonical_request(request, model=model)
    parsed.attribution = common.attribution_from(request.get("user"), None)
    body = common.response_json(exchange)
    if common.is_error_status(exchange):
        parsed.error = common.error_from_body(exchange, body)
    elif not isinstance(body, dict) and exchange.response_body:
        parsed.error = "unreadable response body"
    if isinstance(body, dict):
        parsed.model = common.as_str(body.get("model"))
        usage = body.get("usage")
        if isinstance(usage, dict):
            prompt = common.as_int(usage.get("prompt_tokens"))
            if prompt is None:
                prompt = common.as_int(usage.get("total_tokens"))
            parsed.usage = Usage(input_tokens=prompt or 0, output_tokens=0, source="provider")
    parsed.model = parsed.model or parsed.model_requested
    common.finish(parsed, exchange)
    if parsed.usage.source == "estimated":
        parsed.usage.output_tokens = 0
    return parsed


def _input_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(v for v in value if isinstance(v, str))
    return ""  # token ids
