"""What a model's tokens cost: rate sets, their fallbacks, and the arithmetic.

A `ModelPrice` holds a model's rate sets keyed (service, above_tokens), in USD per million
tokens. `compute_cost_usd` applies them to a `Usage`:

    uncached text input x input + audio input x audio input + image input x image input
    + cached x cache read + 5-minute writes x cache write + 1-hour writes x 1-hour cache write
    + text output x output + reasoning x reasoning output + audio output x audio output
    + image output x image output

with the rate set chosen by service (batch / priority / flex / standard) and by prompt size
(the `above_<N>k` tier whose threshold the prompt's input_tokens exceed). A rate the table
does not give falls back as `ModelPrice.effective_rates` and docs/pricing.md say (another
service or tier's rate first, then cache read -> input, reasoning -> output, cache write ->
input; Claude's cache writes -> 1.25x / 2x the input rate the call pays).
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.parsers.exchange import Usage
from analysis.pricing.litellm import KINDS, SERVICES, rate_set_key

# Anthropic's published cache-write multipliers of the base input price.
ANTHROPIC_CACHE_WRITE_5M = 1.25
ANTHROPIC_CACHE_WRITE_1H = 2.0

SERVICE_ORDER = list(SERVICES)
# Audio and image rates, and the rate each falls back to when the table gives none.
_SPECIAL_KINDS = {
    "input_audio": "input",
    "output_audio": "output",
    "input_image": "input",
    "output_image": "output",
}
_SERVICE_TIERS = {"priority": "priority", "flex": "flex", "batch": "batch"}


@dataclass(slots=True)  # not frozen: a frozen one costs 4x as much to build, and one is built per priced call
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

    @functools.cached_property  # every computed Cost carries it: made once, not per priced call
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

    @functools.cached_property
    def _effective(self) -> dict[tuple[str, int], dict[str, float]]:
        """effective_rates by (service, tier), each worked out once: enforce mode prices every
        call's settlement on the proxy's event loop, and working the fallbacks out on each call
        cost more than the rest of the arithmetic. Bounded by the services and the model's
        tiers; a reloaded or overridden table is made of new ModelPrice objects, and `rates` is
        never changed after construction."""
        return {}

    def effective_rates(self, service: str = "standard", input_tokens: int = 0) -> Mapping[str, float]:
        """Every kind's rate for this service and prompt size, fallbacks applied (never change
        it: the same mapping serves every call of this service and tier; see `_effective`).

        A kind the call's own rate set lacks is taken from the next set of the chain
        (service at this tier, standard at this tier, service base, standard base), then
        derived: cache read -> input, reasoning -> output, cache write -> input (1-hour
        write -> the 5-minute one). Claude's cache writes are the exception: Anthropic
        publishes them as multiples of the input price the call pays (1.25x for 5 minutes,
        2x for 1 hour, batch discount included), so a write rate missing from the call's
        own rate set is that multiple of its input rate.
        """
        key = (service, self.tier_for(input_tokens) if self.thresholds else 0)  # most models have one tier
        rates = self._effective.get(key)
        if rates is None:
            rates = self._effective[key] = self._rates(*key)
        return rates

    def _rates(self, service: str, tier: int) -> dict[str, float]:
        """effective_rates worked out for this service and tier (see there)."""
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
            given_write, given_write_1h = from_chain("cache_write"), from_chain("cache_write_1h")
            write = input_rate if given_write is None else given_write
            write_1h = write if given_write_1h is None else given_write_1h
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
    if not service_tier:  # most calls name none: no string to clean
        return "standard"
    return _tier_service(service_tier)


@functools.lru_cache(maxsize=64)  # the few tiers answers name ("default", "auto", ...), each cleaned once
def _tier_service(service_tier: str) -> str:
    return _SERVICE_TIERS.get(service_tier.strip().lower(), "standard")


def compute_cost_usd(price: ModelPrice, usage: Usage, service: str = "standard") -> float:
    """The published price of these tokens, in USD (see the module docstring)."""
    # Parts clamped to their wholes by comparison, not min() and max(): every priced call passes
    # here (enforce mode: on the event loop), nearly always within its wholes already.
    cached = usage.cached_input_tokens or 0
    writes = usage.cache_write_tokens or 0
    writes_1h = usage.cache_write_1h_tokens or 0
    if writes_1h > writes:
        writes_1h = writes
    input_tokens = usage.input_tokens if usage.input_tokens is not None else cached + writes
    output_tokens = usage.output_tokens or 0
    reasoning = usage.reasoning_tokens or 0
    if reasoning > output_tokens:
        reasoning = output_tokens
    uncached = input_tokens - cached - writes
    if uncached < 0:
        uncached = 0
    rates = price.effective_rates(service, input_tokens)
    if not (
        usage.audio_input_tokens or usage.image_input_tokens or usage.audio_output_tokens or usage.image_output_tokens
    ):
        # Text alone (most calls): the sum below without its four audio and image terms, each
        # 0.0, which adds nothing (the same float). Enforce mode prices every call on the
        # proxy's event loop, where those terms cost a third of this function.
        usd_times_million = (
            uncached * rates["input"]
            + cached * rates["cached_input"]
            + (writes - writes_1h) * rates["cache_write"]
            + writes_1h * rates["cache_write_1h"]
            + (output_tokens - reasoning) * rates["output"]
            + reasoning * rates["reasoning_output"]
        )
        return round(usd_times_million / 1_000_000, 12)
    audio_in = min(usage.audio_input_tokens or 0, uncached)
    image_in = min(usage.image_input_tokens or 0, uncached - audio_in)
    audio_out = min(usage.audio_output_tokens or 0, output_tokens - reasoning)
    image_out = min(usage.image_output_tokens or 0, output_tokens - reasoning - audio_out)
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
