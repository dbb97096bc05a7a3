"""What an LLM call cost: the provider's published price applied to the tokens it reported.

A `PriceTable` is the bundled snapshot (analysis/pricing/snapshot/snapshot.json, built from LiteLLM's
community price map; see SOURCE.txt there) plus what the user imported into
<data>/prices/ (a newer LiteLLM map replacing the bundled one, and an override file with
custom or negotiated prices; see analysis/pricing/overrides.py and docs/pricing.md). Its
`version` names exactly that combination, and every `Cost` carries it, so a row says which
table priced it.

`resolve` finds the price of a model the way users and APIs write its name (dated
snapshots, provider and vendor prefixes, OpenRouter slugs, Azure deployments, `-latest`
aliases, Gemini version suffixes); results are cached because the recorder asks once per
call. `cost` applies it to a `Usage`:

    uncached text input x input + audio input x audio input + image input x image input
    + cached x cache read + 5-minute writes x cache write + 1-hour writes x 1-hour cache write
    + text output x output + reasoning x reasoning output + audio output x audio output
    + image output x image output

with the rate set chosen by service (batch / priority / flex / standard) and by prompt size
(the `above_<N>k` tier whose threshold the prompt's input_tokens exceed). A rate the table
does not give falls back as `ModelPrice.effective_rates` and docs/pricing.md say (another
service or tier's rate first, then cache read -> input, reasoning -> output, cache write ->
input; Claude's cache writes -> 1.25x / 2x the input rate the call pays).
A cost the provider reported itself (OpenRouter's usage.cost) wins over the table. A model
the table does not know is never $0: its cost is None with cost_source "unpriced", and a
warning is logged once per model. A call without any token count has cost None and
cost_source "none" (nothing known to be billed).
"""

import functools
import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.parsers.exchange import Usage
from analysis.pricing.litellm import KINDS, SERVICES, parse_rate_set_key, rate_set_key

log = logging.getLogger(__name__)

SNAPSHOT_PATH = Path(__file__).resolve().parent / "snapshot" / "snapshot.json"
PRICES_DIR_NAME = "prices"  # under the data directory
BASE_FILE_NAME = "base.json"  # an imported LiteLLM map, trimmed like the bundled snapshot
OVERRIDES_FILE_NAME = "overrides.json"  # the user's override document (see price_overrides)

RESOLVE_CACHE_SIZE = 10_000

# Anthropic's published cache-write multipliers of the base input price.
ANTHROPIC_CACHE_WRITE_5M = 1.25
ANTHROPIC_CACHE_WRITE_1H = 2.0

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
_BORROWS_FROM_VENDOR = {"openrouter", "openai_compatible", None}
_FALLBACK_PROVIDERS = {"azure": ("openai",)}

# OpenRouter routing variants of a slug: same model, same price (":free" is handled apart).
_OPENROUTER_VARIANTS = re.compile(r":(nitro|floor|beta|extended|thinking|online|exacto)$")
_DATED = re.compile(r"^(?P<base>.+)[-@](?P<date>\d{8}|\d{4}-\d{2}-\d{2})$")
_PREVIEW_DATED = re.compile(r"^(?P<base>.+-preview)-(?P<month>\d{2})-(?P<when>\d{2}|\d{4})$")

SERVICE_ORDER = list(SERVICES)
# Audio and image rates, and the rate each falls back to when the table gives none.
_SPECIAL_KINDS = {
    "input_audio": "input",
    "output_audio": "output",
    "input_image": "input",
    "output_image": "output",
}
_SERVICE_TIERS = {"priority": "priority", "flex": "flex", "batch": "batch"}


class PriceFileError(ValueError):
    """A price or override file is unreadable or malformed; the message says which and why."""


@dataclass(frozen=True)
class Cost:
    cost_usd: float | None
    cost_source: str  # "computed" | "provider" | "unpriced" | "none" (no token counts)
    price_version: str
    priced_as: str | None = None  # "<provider>/<model>" of the price used, when one was


@dataclass(frozen=True, eq=False)
class ModelPrice:
    """One model's prices: rate sets keyed (service, above_tokens), USD per million tokens."""

    provider: str
    name: str
    mode: str
    source: str  # where the numbers came from: "litellm:<key>", "override", ...
    rates: Mapping[tuple[str, int], Mapping[str, float]]

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.name}"

    @functools.cached_property
    def thresholds(self) -> tuple[int, ...]:
        return tuple(sorted({above for _, above in self.rates if above}))

    def tier_for(self, input_tokens: int) -> int:
        """The largest above-N tier this prompt size exceeds (0: the base prices)."""
        tier = 0
        for threshold in self.thresholds:
            if input_tokens > threshold:
                tier = threshold
        return tier

    def effective_rates(self, service: str = "standard", input_tokens: int = 0) -> dict[str, float]:
        """Every kind's rate for this service and prompt size, fallbacks applied.

        A kind the call's own rate set lacks is taken from the next set of the chain
        (service at this tier, standard at this tier, service base, standard base), then
        derived: cache read -> input, reasoning -> output, cache write -> input (1-hour
        write -> the 5-minute one). Claude's cache writes are the exception: Anthropic
        publishes them as multiples of the input price the call pays (1.25x for 5 minutes,
        2x for 1 hour, batch discount included), so a write rate missing from the call's
        own rate set is that multiple of its input rate.
        """
        tier = self.tier_for(input_tokens)
        chain = list(dict.fromkeys([(service, tier), ("standard", tier), (service, 0), ("standard", 0)]))

        def from_chain(kind: str) -> float | None:
            for key in chain:
                value = self.rates.get(key, {}).get(kind)
                if value is not None:
                    return value
            return None

        input_rate = from_chain("input")
        if input_rate is None:  # validated away when tables load; kept for hand-built prices
            raise ValueError(f"{self.label} has no input price")
        output_rate = from_chain("output")
        output_rate = 0.0 if output_rate is None else output_rate  # embeddings: no output
        cached = from_chain("cached_input")
        reasoning = self._rate_or_base(chain, "reasoning_output", "output")
        if self.provider == "anthropic" or self.name.startswith("claude"):
            own = self.rates.get(next((k for k in chain if k in self.rates), ("standard", 0)), {})
            write = own.get("cache_write", input_rate * ANTHROPIC_CACHE_WRITE_5M)
            write_1h = own.get("cache_write_1h", input_rate * ANTHROPIC_CACHE_WRITE_1H)
        else:
            write = from_chain("cache_write")
            write = input_rate if write is None else write
            write_1h = from_chain("cache_write_1h")
            write_1h = write if write_1h is None else write_1h
        rates = {
            "input": input_rate,
            "cached_input": input_rate if cached is None else cached,
            "cache_write": write,
            "cache_write_1h": write_1h,
            "output": output_rate,
            "reasoning_output": output_rate if reasoning is None else reasoning,
        }
        for kind, base in _SPECIAL_KINDS.items():
            special = self._rate_or_base(chain, kind, base)
            rates[kind] = rates[base] if special is None else special
        return rates

    def _rate_or_base(self, chain: list[tuple[str, int]], kind: str, base: str) -> float | None:
        """A rate that is a special case of `base` (reasoning of output, audio of input, ...):
        the first rate set of the chain that prices `base` gives it, its `kind` rate if it
        names one apart, else its `base` rate. (Taking the first `kind` rate of the chain
        instead would bill a flex or batch call's reasoning at the standard rate whenever only
        the standard set names reasoning apart.)"""
        for key in chain:
            rates = self.rates.get(key, {})
            if kind in rates:
                return rates[kind]
            if base in rates:
                return rates[base]
        return None


def rate_rows(price: ModelPrice) -> list[dict[str, Any]]:
    """One row per rate set the model has (standard first): every kind's effective rate in
    USD per million tokens, and `derived`, the kinds the table does not give for that set."""
    keys = sorted(price.rates, key=lambda k: (k[1], SERVICE_ORDER.index(k[0])))
    if ("standard", 0) not in keys:
        keys.insert(0, ("standard", 0))
    rows = []
    for service, above in keys:
        rates = price.effective_rates(service, above + 1 if above else 0)
        given = price.rates.get((service, above), {})
        rows.append(
            {
                "rates": rate_set_key(service, above),
                **rates,
                "derived": [kind for kind in KINDS if kind not in given],
            }
        )
    return rows


def service_of(service_tier: str | None, batch: bool) -> str:
    """The rate set a call pays: batch, priority, flex or standard."""
    if batch:
        return "batch"
    return _SERVICE_TIERS.get((service_tier or "").strip().lower(), "standard")


def compute_cost_usd(price: ModelPrice, usage: Usage, service: str = "standard") -> float:
    """The published price of these tokens, in USD (see the module docstring)."""
    cached = usage.cached_input_tokens or 0
    writes = usage.cache_write_tokens or 0
    writes_1h = min(usage.cache_write_1h_tokens or 0, writes)
    input_tokens = usage.input_tokens if usage.input_tokens is not None else cached + writes
    output_tokens = usage.output_tokens or 0
    reasoning = min(usage.reasoning_tokens or 0, output_tokens)
    uncached = max(input_tokens - cached - writes, 0)
    audio_in = min(usage.audio_input_tokens or 0, uncached)
    image_in = min(usage.image_input_tokens or 0, uncached - audio_in)
    audio_out = min(usage.audio_output_tokens or 0, output_tokens - reasoning)
    image_out = min(usage.image_output_tokens or 0, output_tokens - reasoning - audio_out)
    rates = price.effective_rates(service, input_tokens)
    usd_times_million = (
        (uncached - audio_in - image_in) * rates["input"]
        + audio_in * rates["input_audio"]
        + image_in * rates["input_image"]
        + cached * rates["cached_input"]
        + (writes - writes_1h) * rates["cache_write"]
        + writes_1h * rates["cache_write_1h"]
        + (output_tokens - reasoning - audio_out - image_out) * rates["output"]
        + reasoning * rates["reasoning_output"]
        + audio_out * rates["output_audio"]
        + image_out * rates["output_image"]
    )
    return round(usd_times_million / 1_000_000, 12)


# --- names ---------------------------------------------------------------------------------

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


class _NameIndex:
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


# --- the table -----------------------------------------------------------------------------


class PriceTable:
    """Prices by provider and model, with the version string that names them."""

    def __init__(
        self,
        version: str,
        prices: Mapping[str, Mapping[str, ModelPrice]],
        override_prices: Mapping[str, Mapping[str, ModelPrice]] | None = None,
        azure_deployments: Mapping[str, str] | None = None,
    ):
        self.version = version
        self._base = {provider: _NameIndex(models) for provider, models in prices.items()}
        # Overrides are keyed by provider, "*" for those that name none (any provider).
        self._overrides = {provider: _NameIndex(models) for provider, models in (override_prices or {}).items()}
        self.azure_deployments = dict(azure_deployments or {})
        self._resolved: dict[tuple[str, str | None], ModelPrice | None] = {}
        self._warned: set[tuple[str | None, str]] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, data_dir: Path | None = None) -> "PriceTable":
        """The bundled snapshot, or the LiteLLM map imported into <data_dir>/prices/, plus
        the override file imported there. Raises PriceFileError when a stored file is bad."""
        from analysis.pricing.overrides import load_stored_overrides

        prices_dir = Path(data_dir) / PRICES_DIR_NAME if data_dir is not None else None
        base_path = prices_dir / BASE_FILE_NAME if prices_dir else None
        if base_path is not None and base_path.exists():
            version, prices = read_snapshot(base_path)
        else:
            version, prices = bundled_snapshot()
        table = cls(version, prices)
        if prices_dir is not None and (prices_dir / OVERRIDES_FILE_NAME).exists():
            overrides = load_stored_overrides(prices_dir / OVERRIDES_FILE_NAME, table)
            table = cls(
                f"{version}+{overrides.digest}",
                prices,
                overrides.prices,
                overrides.azure_deployments,
            )
        return table

    def base_price(self, model: str, provider: str | None) -> ModelPrice | None:
        """`resolve` on the base table alone, overrides ignored (what an override inherits)."""
        return self._search(model, provider, overrides=False)

    def resolve(self, model: str | None, provider: str | None) -> ModelPrice | None:
        """The price of this model as this provider sells it, or None when unknown."""
        if not model:
            return None
        key = (model, provider)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        found = self._search(model, provider, overrides=True)
        with self._lock:
            if len(self._resolved) >= RESOLVE_CACHE_SIZE:  # bound memory if names never repeat
                self._resolved.clear()
            self._resolved[key] = found
        return found

    def _search(self, model: str, provider: str | None, *, overrides: bool) -> ModelPrice | None:
        name = model.strip()
        if provider == "azure":
            name = self.azure_deployments.get(name, name)
        name = clean_model_name(name)
        vendor, _, rest = name.partition("/")
        vendor_provider = VENDOR_PROVIDERS.get(vendor.lower()) if rest else None
        names = [name, rest] if vendor_provider else [name]

        searches: list[tuple[_NameIndex, str]] = []
        own = provider if provider in self._base or provider in self._overrides else None
        if overrides:
            for key in ("*", own):
                if key in self._overrides:
                    searches += [(self._overrides[key], n) for n in names]
        if own in self._base:
            searches += [(self._base[own], n) for n in names]
        borrowed: list[tuple[str, str]] = []
        if provider in _FALLBACK_PROVIDERS:
            borrowed += [(p, name) for p in _FALLBACK_PROVIDERS[provider]]
        if own is None or provider in _BORROWS_FROM_VENDOR:
            if vendor_provider:
                borrowed.append((vendor_provider, rest))
            elif home := home_provider(name):
                borrowed.append((home, name))
        for other, other_name in borrowed:
            if overrides and other in self._overrides:
                searches.append((self._overrides[other], other_name))
            if other in self._base:
                searches.append((self._base[other], other_name))

        for index, candidate in searches:
            for variant in name_variants(candidate):
                if (found := index.find(variant)) is not None:
                    return found
        if provider == "openrouter" and model.strip().endswith(":free"):
            return ModelPrice(
                "openrouter",
                model.strip(),
                "chat",
                "openrouter ':free' variant",
                {("standard", 0): {"input": 0.0, "output": 0.0}},
            )
        return None

    def cost(
        self,
        *,
        provider: str | None,
        model: str | None,
        usage: Usage,
        service_tier: str | None = None,
        batch: bool = False,
        provider_cost_usd: float | None = None,
        model_requested: str | None = None,
        warn_unpriced: bool = True,
        other_models: Sequence[tuple[str, Usage]] = (),
    ) -> Cost:
        """The call's cost: the provider's own figure if it gave one, else the table's price
        of `model` (or of `model_requested` when `model` is unknown), else unpriced (logged
        once per model unless `warn_unpriced` is false: a caller that sums them up says so).

        `other_models`: tokens the call spent on other models (Anthropic's advisor), each
        priced at its own model's price and added; if one of them has no price the whole call
        is unpriced (a partial sum would understate it).

        A call with neither input nor output token counts (an error before any output, a body
        we could not read) gets cost None and cost_source "none": nothing is known to have
        been billed, and that is not the same as a model without a price. One count missing
        and the other present counts the missing one as 0.
        """
        if provider_cost_usd is not None:
            return Cost(float(provider_cost_usd), "provider", self.version)
        if usage.input_tokens is None and usage.output_tokens is None:
            return Cost(None, "none", self.version)
        price = self.resolve(model, provider)
        if price is None and model_requested and model_requested != model:
            price = self.resolve(model_requested, provider)
        if price is None:
            if warn_unpriced:
                self._warn_unpriced(provider, model or model_requested)
            return Cost(None, "unpriced", self.version)
        service = service_of(service_tier, batch)
        usd = compute_cost_usd(price, usage, service)
        for other_model, other_usage in other_models:
            other_price = self.resolve(other_model, provider)
            if other_price is None:
                if warn_unpriced:
                    self._warn_unpriced(provider, other_model)
                return Cost(None, "unpriced", self.version)
            usd = round(usd + compute_cost_usd(other_price, other_usage, service), 12)
        return Cost(usd, "computed", self.version, price.label)

    def _warn_unpriced(self, provider: str | None, model: str | None) -> None:
        key = (provider, model or "")
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(
            "no price for model %r (provider %s): its calls are recorded unpriced; "
            "add a price with `llm-shadow prices import`",
            model,
            provider,
        )


# --- snapshot files ------------------------------------------------------------------------


def prices_from_snapshot(data: Any, origin: str) -> tuple[str, dict[str, dict[str, ModelPrice]]]:
    """(version, prices by provider and name) of a snapshot document; PriceFileError if bad."""
    try:
        version = data["version"]
        models = data["models"]
        prices: dict[str, dict[str, ModelPrice]] = {}
        for provider, entries in models.items():
            table = prices.setdefault(provider, {})
            for name, record in entries.items():
                rates = {
                    parse_rate_set_key(key): {k: float(v) for k, v in kinds.items() if k in KINDS}
                    for key, kinds in record["rates"].items()
                }
                if "input" not in rates.get(("standard", 0), {}):
                    raise ValueError(f"{provider}/{name} has no standard input price")
                table[name] = ModelPrice(
                    provider, name, record.get("mode", "chat"), f"litellm:{record.get('from', name)}", rates
                )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise PriceFileError(f"{origin}: not a price snapshot ({e})") from e
    if not isinstance(version, str) or not version:
        raise PriceFileError(f"{origin}: snapshot has no version")
    return version, prices


def read_snapshot(path: Path) -> tuple[str, dict[str, dict[str, ModelPrice]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read ({e})") from e
    return prices_from_snapshot(data, str(path))


@functools.cache
def bundled_snapshot() -> tuple[str, dict[str, dict[str, ModelPrice]]]:
    """The snapshot shipped with llm-shadow, parsed once per process (it is never mutated)."""
    return read_snapshot(SNAPSHOT_PATH)
