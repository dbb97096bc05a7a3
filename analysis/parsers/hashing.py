"""prompt_hash: one fingerprint for requests that ask the same thing.

A parser reduces a request body to its `canonical_request` (`canonical_request()` below): the
body minus the fields that do not change the answer (who asks, whether it streams, billing and
storage hints). `prompt_hash` serialises that dict canonically (sorted keys, compact
separators, UTF-8 kept as is) and hashes it, so two requests that differ only in key order,
whitespace or those fields hash the same, and any change to the model, the messages or a
sampling parameter (temperature, top_p, max_tokens, tools, tool_choice, response_format, seed,
stop, n, ...) gives another hash. Dropping fields rather than listing the kept ones means a
parameter we have never heard of still counts as changing the answer.
"""

import hashlib
import json
from _json import make_encoder  # json.encoder's C encoder (c_make_encoder)

try:
    # CPython's own sha256 (HACL*), not OpenSSL's: enforce mode hashes every request's prompt on
    # the proxy's event loop, where caches are cold, and there OpenSSL's EVP sha256 (a digest
    # looked up by name, a context made and freed) took twice as long (15 us against 7, measured
    # after polluting the caches; 8.7 us of a live proxy's request hook). Same digest;
    # `_sha2` is a private module, absent from some builds: hashlib's then.
    from _sha2 import sha256 as _sha256
except ImportError:  # pragma: no cover - CPython builds without it
    _sha256 = hashlib.sha256

# Request fields that do not change what the model answers.
NOT_ANSWER_CHANGING = frozenset(
    {
        "user",
        "safety_identifier",
        "stream",
        "stream_options",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "background",
        "labels",  # Gemini / Vertex billing labels
    }
)

HASH_LENGTH = 32  # hex characters (128 bits)


def canonical_request(request: dict, model: str | None = None) -> dict:
    """The request without the fields in NOT_ANSWER_CHANGING, plus `model` (e.g. the model
    named in a URL) when the body names none."""
    canonical = {k: v for k, v in request.items() if k not in NOT_ANSWER_CHANGING}
    if model is not None and canonical.get("model") is None:
        canonical["model"] = model
    return canonical


# One encoder for every call (json.dumps with options makes a new one each time).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# JSONEncoder.encode builds its C encoder (CPython's _json.make_encoder) anew on every call: a
# third of a prompt hash's work, and enforce mode hashes every request on the proxy's event loop.
# Built once here, with the arguments JSONEncoder.iterencode gives it, so it writes the same text;
# without a cycle check (markers None: no state shared between the threads that hash), as a
# canonical request is decoded JSON, which has no cycles.
_ENCODER = make_encoder(
    None,
    _CANONICAL.default,
    json.encoder.encode_basestring,
    None,
    _CANONICAL.key_separator,
    _CANONICAL.item_separator,
    _CANONICAL.sort_keys,
    _CANONICAL.skipkeys,
    _CANONICAL.allow_nan,
)


def canonical_json(value: object) -> str:
    """`value` as JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes it."""
    return "".join(_ENCODER(value, 0))


def prompt_hash(canonical: dict) -> str:
    """sha256 of the canonical JSON of `canonical`, as HASH_LENGTH hex characters."""
    digest = _sha256(canonical_json(canonical).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:HASH_LENGTH]
