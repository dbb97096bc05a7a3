"""Which model a name means: a served (dated) name and the alias a policy names are one model.

Providers answer with the snapshot they served (`gpt-4o-mini-2024-07-18`, `claude-sonnet-4-5-20250929`,
`gemini-2.0-flash-001`) while clients and policies name the alias (`gpt-4o-mini`,
`claude-sonnet-4-5`, `gemini-2.0-flash`). A routing rule or a budget downgrade that sends a
request to the model it is already on changes nothing and saves nothing, so the simulator
compares models by `model_identity`, the alias the providers' naming rules reduce a name to
(the same rules the price table uses to find a dated name's price, analysis.pricing.table):

- OpenAI snapshot dates `-YYYY-MM-DD` and short snapshots `-0613`;
- Anthropic and Vertex dates `-YYYYMMDD` / `@YYYYMMDD`, both orders of Claude's family and
  version (`claude-3-5-sonnet` is `claude-sonnet-3-5`), `claude-sonnet-4-0` is `claude-sonnet-4`;
- Gemini stable versions `-001` and preview dates; `-latest`; `models/`, `~` and OpenRouter
  variants; Azure's `gpt-35` spelling; case.

`serves_endpoint` says whether a model of a price-table mode can answer a request made to an
endpoint: an embedding model answers embeddings only, a chat model anything but embeddings.
"""

import re

from analysis.pricing.names import clean_model_name

_REDUCTIONS = [
    (re.compile(r"-\d{4}-\d{2}-\d{2}$"), ""),  # OpenAI snapshot date
    (re.compile(r"[-@]\d{8}$"), ""),  # Anthropic / Vertex snapshot date
    (re.compile(r"-\d{4}$"), ""),  # short snapshot (gpt-4-0613)
    (re.compile(r"-latest$"), ""),
    (re.compile(r"-0\d\d$"), ""),  # Gemini stable version (gemini-2.0-flash-001)
    (re.compile(r"(-preview)-\d{2}-\d{2,4}$"), r"\1"),  # Gemini preview date (-preview-05-20)
]
_CLAUDE_NUMBER_FIRST = re.compile(r"^claude-(\d+(?:[.-]\d{1,2}(?!\d))?)-(opus|sonnet|haiku)(.*)$")
_CLAUDE_ZERO = re.compile(r"^(claude-(?:opus|sonnet|haiku)-\d+)-0$")
EMBEDDING_ENDPOINTS = frozenset({"embeddings"})


def model_identity(name: str | None) -> str | None:
    """The alias `name` is a snapshot or spelling of (lower case); None for no name."""
    if not name:
        return None
    identity = clean_model_name(name).lower()
    if "/" in identity:  # openai/gpt-4o on OpenRouter, publishers/... on Vertex: the model part
        identity = identity.rsplit("/", 1)[1]
    if match := _CLAUDE_NUMBER_FIRST.match(identity):
        version, family, rest = match.groups()
        identity = f"claude-{family}-{version}{rest}"
    if identity.startswith("claude-"):
        identity = identity.replace(".", "-")
    changed = True
    while changed:
        changed = False
        for pattern, replacement in _REDUCTIONS:
            reduced = pattern.sub(replacement, identity)
            if reduced and reduced != identity:
                identity, changed = reduced, True
    identity = _CLAUDE_ZERO.sub(r"\1", identity)
    if identity.startswith("gpt-35"):
        identity = "gpt-3.5" + identity[len("gpt-35") :]
    return identity


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two names mean the same model (a served snapshot and its alias do)."""
    return a is not None and b is not None and model_identity(a) == model_identity(b)


def serves_endpoint(mode: str | None, endpoint: str | None) -> bool:
    """Whether a model of price-table `mode` (chat, responses, embedding, ...) can answer a
    request made to `endpoint` (analysis.parsers.detect); an unknown endpoint is not refused."""
    if endpoint is None:
        return True
    is_embedding_model = mode == "embedding"
    return is_embedding_model == (endpoint in EMBEDDING_ENDPOINTS)
