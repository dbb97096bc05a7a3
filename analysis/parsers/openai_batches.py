"""OpenAI Batch API (`/v1/batches`, `/v1/batches/{id}`, `/v1/batches/{id}/cancel`).

These calls create, poll, list or cancel a batch; the prompts themselves live in an uploaded
file, so there is no prompt text and usually no usage. Every call is recorded with batch=True.
A batch object may carry a `usage` block (Responses-style input/output tokens, reported once the
batch has run): it is taken when present. A client polling a finished batch sees that usage on
every poll, so it is named by `usage_key` and only the first call reporting it keeps it.
"""

from analysis.parsers import common
from analysis.parsers.exchange import Exchange, Parsed
from analysis.parsers.openai_responses import usage_from_responses


def parse(exchange: Exchange) -> Parsed:
    request = common.request_json(exchange)
    parsed = Parsed(batch=True)
    parsed.attribution = common.attribution_from(None, request.get("metadata"))
    body = common.response_json(exchange)
    if common.is_error_status(exchange):
        parsed.error = common.error_from_body(exchange, body)
        return parsed
    if not isinstance(body, dict):
        return parsed
    batch = body if body.get("object") == "batch" else None
    if batch is None:
        return parsed  # a list of batches
    parsed.model = common.as_str(batch.get("model"))
    parsed.model_requested = parsed.model
    if not parsed.attribution:
        parsed.attribution = common.attribution_from(None, batch.get("metadata"))
    usage = batch.get("usage")
    if isinstance(usage, dict) and any(usage.get(k) for k in ("input_tokens", "output_tokens")):
        parsed.usage = usage_from_responses(usage)
        if batch.get("id"):
            parsed.usage_key = f"openai-batch:{batch['id']}"
    common.keep_parts_within_whole(parsed.usage)
    errors = batch.get("errors")
    if isinstance(errors, dict) and errors.get("data"):
        first = errors["data"][0]
        if isinstance(first, dict):
            parsed.error = common.as_str(first.get("message")) or "batch errors"
    return parsed
