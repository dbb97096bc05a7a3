"""Credentials never reach a segment: what is taken out of bodies and messages before storing.

Headers carrying keys are dropped before anything else sees them (`capture.split_secrets`), but
credentials turn up elsewhere too: inside a JSON request body (an SDK option serialised by
mistake, a tool's config), in a provider's error message that quotes the key it refused, in a
prompt that pastes one. Two nets catch them:

- `redact_json`: the value of any field whose name says credential (`SECRET_FIELDS`, compared
  case-insensitively, `-` and `_` alike) becomes `REDACTED`, at any depth;
- `redact_text`: anything shaped like a provider's key (`KEY_SHAPES`: OpenAI, Anthropic,
  Google, Groq, xAI, Hugging Face, Replicate, AWS access key ids, bearer tokens, `key=` in a
  URL) becomes `REDACTED` in any stored text.

Both err on the side of redacting: a stored prompt that lost a key-shaped string is a small
loss; a stored key is a leak.
"""

import re

REDACTED = "[redacted]"

SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "key",
        "secret",
        "client_secret",
        "secret_key",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "auth_token",
        "password",
        "passwd",
        "authorization",
        "private_key",
        "aws_secret_access_key",
        "aws_session_token",
        "credentials",
    }
)

KEY_SHAPES = re.compile(
    r"""
    \b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}          # OpenAI, Anthropic (sk-ant-), OpenRouter (sk-or-), DeepSeek
    | \bAIza[0-9A-Za-z_\-]{30,}                 # Google API keys
    | \bya29\.[0-9A-Za-z_\-]{20,}               # Google OAuth access tokens
    | \b(?:gsk|xai|hf|r8)_[A-Za-z0-9]{16,}      # Groq, Hugging Face, Replicate
    | \bxai-[A-Za-z0-9]{16,}                    # xAI
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b              # AWS access key ids
    | (?<=[Bb]earer\ )[A-Za-z0-9._~+/=\-]{8,}   # bearer tokens
    | (?<=[?&]key=)[^&\s"']+                    # ?key= in a URL
    | (?<=[?&]api[-_]key=)[^&\s"']+
    """,
    re.VERBOSE,
)


# Every key shape above contains one of these; text without any of them (most text) is left as
# is without running KEY_SHAPES, which costs a regex attempt at every character.
KEY_ANCHORS = (
    "sk-",
    "pk-",
    "rk-",
    "AIza",
    "ya29.",
    "gsk_",
    "xai_",
    "xai-",
    "hf_",
    "r8_",
    "AKIA",
    "ASIA",
    "earer ",
    "key=",
)


def _field_name(name: str) -> str:
    return name.lower().replace("-", "_")


def redact_json(value: object) -> object:
    """`value` (decoded JSON) with every credential field's value replaced by REDACTED."""
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _field_name(k) in SECRET_FIELDS and v else redact_json(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value


def redact_text(text: str | None) -> str | None:
    """`text` with every key-shaped string replaced by REDACTED."""
    if not text or not any(anchor in text for anchor in KEY_ANCHORS):
        return text
    return KEY_SHAPES.sub(REDACTED, text)
