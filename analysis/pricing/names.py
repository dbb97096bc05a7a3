"""Finding a model's price by the names users and APIs write it.

Dated snapshots, provider and vendor prefixes, OpenRouter slugs and routing variants, Azure's
spellings, `-latest` aliases, Gemini version suffixes and Claude's two word orders all lead
to the same entry: `clean_model_name` strips what is not part of the name, `name_variants`
lists the spellings to try (most exact first), `NameIndex` finds one in a provider's models
(or the newest dated snapshot of a base name), and `home_provider` says who makes a family
when the host does not. `analysis.pricing.table.PriceTable.resolve` puts them together.
"""

import re
from collections.abc import Mapping

from analysis.pricing.rates import ModelPrice

# Vendor prefixes of model slugs ("anthropic/claude-sonnet-4.5" on OpenRouter).
VENDOR_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gemini",
    "gemini": "gemini",
    "x-ai": "xai",
    "xai": "xai",
    "mistralai": "mistral",
    "mistral": "mistral",
    "deepseek": "deepseek",
}
# First-party model families -> their maker, for calls whose host does not say who sells
# the model (an unknown OpenAI-compatible gateway) or whose slug has no vendor.
_HOME_FAMILIES = [
    (re.compile(r"^(gpt-|o\d|chatgpt-|text-embedding-|davinci|babbage|ft:|computer-use|codex)"), "openai"),
    (re.compile(r"^claude"), "anthropic"),
    (re.compile(r"^(gemini|gemma|learnlm)"), "gemini"),
    (re.compile(r"^grok"), "xai"),
    (re.compile(r"^(mistral|codestral|devstral|ministral|magistral|pixtral|open-mi[sx]tral)"), "mistral"),
    (re.compile(r"^deepseek"), "deepseek"),
]
# Providers whose list prices another provider's calls may borrow when it has none itself:
# Azure OpenAI charges OpenAI's list prices; OpenRouter passes its vendors' prices through.
BORROWS_FROM_VENDOR = {"openrouter", "openai_compatible", None}
FALLBACK_PROVIDERS = {"azure": ("openai",)}

# OpenRouter routing variants of a slug: same model, same price (":free" is handled apart).
_OPENROUTER_VARIANTS = re.compile(r":(nitro|floor|beta|extended|thinking|online|exacto)$")
_DATED = re.compile(r"^(?P<base>.+)[-@](?P<date>\d{8}|\d{4}-\d{2}-\d{2})$")
_PREVIEW_DATED = re.compile(r"^(?P<base>.+-preview)-(?P<month>\d{2})-(?P<when>\d{2}|\d{4})$")


_CLAUDE_NUMBER_FIRST = re.compile(r"^claude-(\d+(?:[.-]\d{1,2}(?!\d))?)-(opus|sonnet|haiku)(.*)$")
_CLAUDE_FAMILY_FIRST = re.compile(r"^claude-(opus|sonnet|haiku)-(\d+(?:[.-]\d{1,2}(?!\d))?)(.*)$")


def _claude_spellings(name: str) -> list[str]:
    """'claude-4.6-sonnet' -> also 'claude-sonnet-4-6' (and the other order, dashes for dots)."""
    if match := _CLAUDE_NUMBER_FIRST.match(name):
        version, family, rest = match.groups()
    elif match := _CLAUDE_FAMILY_FIRST.match(name):
        family, version, rest = match.groups()
    else:
        return []
    version = version.replace(".", "-")
    return [f"claude-{family}-{version}{rest}", f"claude-{version}-{family}{rest}"]


# (pattern, replacement): each makes a name less specific, tried after the exact spellings.
_REDUCTIONS = [
    (re.compile(r"-\d{4}-\d{2}-\d{2}$"), ""),  # OpenAI snapshot date
    (re.compile(r"[-@]\d{8}$"), ""),  # Anthropic / Vertex snapshot date
    (re.compile(r"-\d{4}$"), ""),  # short snapshot (gpt-4-0613, grok-4-0709)
    (re.compile(r"-latest$"), ""),  # alias of the newest snapshot
    (re.compile(r"-0\d\d$"), ""),  # Gemini stable version (gemini-2.0-flash-001)
    (re.compile(r"(-preview)-\d{2}-\d{2,4}$"), r"\1"),  # Gemini preview date (-preview-05-20)
    (re.compile(r"^(claude-(?:opus|sonnet|haiku)-\d+)-0$"), r"\1"),  # claude-sonnet-4-0
    (re.compile(r"^gpt-35"), "gpt-3.5"),  # Azure's spelling
]


def name_variants(name: str) -> list[str]:
    """Spellings to try for a model name, most exact first (all lower case)."""
    first = [name.lower()]
    first += _claude_spellings(first[0])
    seen = dict.fromkeys(first)
    frontier = list(seen)
    while frontier:
        next_frontier = []
        for variant in frontier:
            for pattern, replacement in _REDUCTIONS:
                reduced = pattern.sub(replacement, variant)
                if reduced and reduced not in seen:
                    seen[reduced] = None
                    next_frontier.append(reduced)
        frontier = next_frontier
    return list(seen)


def clean_model_name(model: str) -> str:
    """Strip what is not part of the model's name: 'models/', '~', routing variants, ft ids."""
    name = model.strip()
    name = name.removeprefix("models/").removeprefix("~")
    name = _OPENROUTER_VARIANTS.sub("", name)
    if name.startswith("ft:"):  # ft:gpt-4o-mini-2024-07-18:org:name:id -> ft:gpt-4o-mini-2024-07-18
        name = ":".join(name.split(":")[:2])
    return name


def home_provider(name: str) -> str | None:
    """The maker of a first-party model family, from its name; None for anything else."""
    lowered = name.lower()
    for pattern, provider in _HOME_FAMILIES:
        if pattern.match(lowered):
            return provider
    return None


class NameIndex:
    """One provider's models by lower-case name, plus the newest dated snapshot of each base."""

    def __init__(self, prices: Mapping[str, ModelPrice]):
        self.by_name = {name.lower(): price for name, price in prices.items()}
        newest: dict[str, tuple[str, ModelPrice]] = {}
        for name, price in self.by_name.items():
            if match := _DATED.match(name):
                base, date = match["base"], match["date"].replace("-", "")
            elif match := _PREVIEW_DATED.match(name):  # Gemini: -preview-09-2025, -preview-05-20
                base, month, day_or_year = match["base"], match["month"], match["when"]
                date = day_or_year + month if len(day_or_year) == 4 else "0000" + month + day_or_year
            else:
                continue
            if base not in newest or date > newest[base][0]:
                newest[base] = (date, price)
        self.newest_dated = {base: price for base, (_, price) in newest.items()}

    def find(self, variant: str) -> ModelPrice | None:
        return self.by_name.get(variant) or self.newest_dated.get(variant)
