"""OpenAI legacy Completions (`/v1/completions`) and the servers that still speak it.

The request has a `prompt` (a string, a list of strings, or token ids) instead of messages; the
response has `choices[].text` (streamed as `choices[].text` pieces). Everything else, usage
included, is the Chat Completions shape, so this module only reads the prompt and hands the
rest to analysis.parsers.openai_chat.
"""

from analysis.parsers import common, openai_chat
from analysis.parsers.exchange import Exchange, Parsed


def parse(exchange: Exchange) -> Parsed:
    request = common.request_json(exchange)
    parsed = openai_chat.parse_request(request, exchange)
    parsed.prompt_text = common.role_lines([("user", _prompt_text(request.get("prompt")))])
    parsed.system_prompt = ""
    openai_chat.read_response(exchange, parsed)
    return parsed


def _prompt_text(prompt: object) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return ""  # token ids: no text to show
