"""The policy file: one TOML file, read into frozen dataclasses, every mistake reported with
its line and key.

The same file drives the simulator and, later, enforce mode, so its reading is strict: an
unknown key is an error (a typo must not silently disable a rule), every value is checked for
type and range, and every error reads `policy.toml:12: [[routing]] "to": expected a model
name`. Policies apply in a fixed order, documented in docs/simulator.md: exact cache, semantic
cache, routing rules (the first that matches), batch, budgets, rate limits. Fallback rules
(`[[fallback]]`: retries, timeouts and a chain of other models or upstreams) take no part in
that order: they act when an answer fails (analysis.simulate.fallback). Each policy has a
`name` that results are attributed to; names are unique within a file.

Matching conditions are shared by routing, batch, budgets, rate limits and fallback (see `Match`): all
given conditions must hold; a list means any of its values; text values are shell-style
patterns (`gpt-4o*`); `system_prompt_regex` is a Python regular expression searched in the
system prompt.
"""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from analysis.simulate.tomlpos import describe, key_line

SCOPES = ("global", "key_id", "team", "feature", "user")
WINDOWS = ("hour", "day", "month")
BUDGET_ACTIONS = ("block", "downgrade")
# A policy entry's own mode in enforce mode: "shadow" keeps it deciding and logging only.
ENTRY_MODES = ("enforce", "shadow")
EMBEDDERS = ("hashing", "wordllama", "minilm", "auto", "openai")
# The column of `requests` a scope groups by ("global" groups everything together).
SCOPE_COLUMNS = {"key_id": "key_id", "team": "team", "feature": "feature", "user": "user"}
# Older names still accepted in policy files: `key` is the column key_id (scope and condition).
ALIASES = {"key": "key_id"}
DEFAULT_OBSERVE_FOR = 14 * 86400
DEFAULT_SWEEP = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.99)

# What a fallback rule reacts to: a 429, any 5xx (or one 5xx status), a timeout, a connection
# that could not be made.
FALLBACK_ON = ("429", "5xx", "timeout", "connect_error")
_FALLBACK_STATUS = re.compile(r"^5\d\d$")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PolicyError(ValueError):
    """A policy file that cannot be read or applied, with the line and key at fault."""

    def __init__(self, file: str, line: int, where: str, message: str):
        self.file, self.line, self.where, self.message = file, line, where, message
        super().__init__(f"{file}:{line}: {where}: {message}" if where else f"{file}:{line}: {message}")


# Text conditions: policy key -> column of `requests` it matches.
TEXT_CONDITIONS = {
    "model": "model",
    "provider": "provider",
    "endpoint": "endpoint",
    "team": "team",
    "feature": "feature",
    "key_id": "key_id",
    "user": "user",
}
BOOL_CONDITIONS = {"has_tools": "has_tools", "has_images": "has_images"}
MATCH_KEYS = (
    *TEXT_CONDITIONS,
    *ALIASES,
    *BOOL_CONDITIONS,
    "min_input_tokens",
    "max_input_tokens",
    "system_prompt_regex",
)


@dataclass(frozen=True)
class Match:
    """Conditions on a request; an empty Match matches every request.

    `text` maps a policy key (model, team, ...) to its patterns; `model` is matched against
    the model the client asked for (model_requested, else model).
    """

    text: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flags: tuple[tuple[str, bool], ...] = ()
    min_input_tokens: int | None = None
    max_input_tokens: int | None = None
    system_prompt_regex: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (
            self.text
            or self.flags
            or self.min_input_tokens is not None
            or self.max_input_tokens is not None
            or self.system_prompt_regex is not None
        )


@dataclass(frozen=True)
class Origin:
    """Where a policy sits in its file, to report errors found after reading."""

    table: tuple[str | int, ...]


@dataclass(frozen=True)
class CacheRules:
    """Which requests a cache may answer. By default only deterministic ones: temperature 0
    (unset counts as sampling, except for embeddings), n 1 or unset, no tools (a tool call has
    effects), not streamed."""

    allow_sampling: bool = False
    allow_unset_temperature: bool = False
    allow_tools: bool = False
    allow_streaming: bool = False


@dataclass(frozen=True)
class ExactCachePolicy:
    KIND: ClassVar[str] = "exact_cache"  # the name results and reports use for this kind of policy

    name: str
    ttl_seconds: int
    scope: str
    max_entries: int
    rules: CacheRules
    origin: Origin = field(compare=False, default=Origin(("cache", "exact")))
    mode: str = "enforce"  # enforce mode: "shadow" keeps this entry deciding without acting


@dataclass(frozen=True)
class SemanticCachePolicy:
    KIND: ClassVar[str] = "semantic_cache"  # the name results and reports use for this kind of policy

    name: str
    threshold: float
    ttl_seconds: int
    scope: str
    max_entries: int
    rules: CacheRules
    embedder: str = "wordllama"
    embedder_url: str | None = None
    embedder_model: str | None = None
    embedder_api_key_env: str | None = None
    sweep: tuple[float, ...] = DEFAULT_SWEEP
    sample_pairs: int = 20
    answer_threshold: float = 0.8  # answers whose embeddings are this similar agree (analysis.simulate.agreement)
    lsh_bits: int = 10
    lsh_tables: int = 16
    bucket_size: int = 64
    # Shadow and enforce mode: how long a call waits for its prompt's embedding (made in a
    # thread); longer, the call is decided without the semantic cache (semantic_lookup_timeout).
    lookup_timeout_ms: int = 20
    origin: Origin = field(compare=False, default=Origin(("cache", "semantic")))
    mode: str = "enforce"  # enforce mode: "shadow" keeps this entry deciding without acting


@dataclass(frozen=True)
class RoutingRule:
    KIND: ClassVar[str] = "routing"  # the name results and reports use for this kind of policy

    name: str
    match: Match
    to: str
    to_provider: str | None
    origin: Origin = field(compare=False, default=Origin(("routing", 0)))
    mode: str = "enforce"  # enforce mode: "shadow" keeps this entry deciding without acting
    to_url: str | None = None  # enforce mode: send the call to this upstream (same wire format) ...
    to_api_key_env: str | None = None  # ... with the API key in this environment variable
    mirror: float = 0.0  # shadow mode: the share of the requests it routes also sent to `to`, off the client's path
    mirror_max_spend_usd: float = 1.0  # ... until the mirrored answers have cost this much (per proxy run)


@dataclass(frozen=True)
class BatchPolicy:
    KIND: ClassVar[str] = "batch"  # the name results and reports use for this kind of policy

    name: str
    match: Match
    discount: float | None  # None: the price table's batch price
    origin: Origin = field(compare=False, default=Origin(("batch", 0)))
    mode: str = "enforce"  # enforce mode: "shadow" keeps this entry deciding without acting


@dataclass(frozen=True)
class Budget:
    KIND: ClassVar[str] = "budget"  # the name results and reports use for this kind of policy

    name: str
    scope: str
    window: str
    limit_usd: float
    action: str
    to: str | None
    to_provider: str | None
    match: Match
    origin: Origin = field(compare=False, default=Origin(("budget", 0)))
    mode: str = "enforce"  # enforce mode: "shadow" keeps this entry deciding without acting
    alert_at: tuple[float, ...] = ()  # shares of limit_usd that fire an alert, once per window and scope value
    alert_webhook_env: str | None = None  # environment variable holding the webhook URL alerts are POSTed to


@dataclass(frozen=True)
class RateLimit:
    KIND: ClassVar[str] = "rate_limit"  # the name results and reports use for this kind of policy

    name: str
    scope: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    match: Match
    origin: Origin = field(compare=False, default=Origin(("rate_limit", 0)))
    mode: str = "enforce"  # enforce mode: "shadow" keeps this entry deciding without acting


@dataclass(frozen=True)
class ChainTarget:
    """One step of a fallback chain: another model, on the same upstream or on another one
    speaking the same wire format (`to_url`, with the key in `to_api_key_env`)."""

    to: str
    to_provider: str | None = None
    to_url: str | None = None
    to_api_key_env: str | None = None


@dataclass(frozen=True)
class FallbackRule:
    KIND: ClassVar[str] = "fallback"  # the name results and reports use for this kind of policy

    name: str
    match: Match
    on: tuple[str, ...]  # FALLBACK_ON values, or a single 5xx status such as "503"
    retries: int  # attempts again on the same upstream and model, before the chain
    backoff_ms: int  # wait before the first retry; doubled for each next one, with jitter
    timeout_s: float  # each attempt the proxy sends itself gives up after this long
    chain: tuple[ChainTarget, ...]
    origin: Origin = field(compare=False, default=Origin(("fallback", 0)))
    mode: str = "enforce"  # enforce mode: "shadow" keeps this entry deciding without acting


@dataclass(frozen=True)
class Policy:
    exact_cache: ExactCachePolicy | None = None
    semantic_cache: SemanticCachePolicy | None = None
    routing: tuple[RoutingRule, ...] = ()
    batch: tuple[BatchPolicy, ...] = ()
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    fallbacks: tuple[FallbackRule, ...] = ()  # act when an answer fails: outside the order of `in_order`
    name: str | None = None
    description: str | None = None
    observe_for_seconds: int = DEFAULT_OBSERVE_FOR  # enforce mode wants this much recorded traffic first
    text: str = field(default="", compare=False)
    file: str = field(default="<policy>", compare=False)

    def error(self, origin: Origin, key: str | None, message: str) -> PolicyError:
        """A PolicyError pointing at `key` of the policy at `origin` in this file."""
        path = origin.table + (tuple(key.split(".")) if key else ())
        return PolicyError(self.file, key_line(self.text, path), describe(origin.table, key), message)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.in_order()]

    def in_order(self) -> list[Any]:
        """Every policy of the file in the order they apply."""
        found: list[Any] = [self.exact_cache, self.semantic_cache]
        return [p for p in found if p is not None] + [
            *self.routing,
            *self.batch,
            *self.budgets,
            *self.rate_limits,
        ]

    @property
    def needs_contents(self) -> bool:
        """Whether simulating this policy reads the `contents` relation (prompt texts)."""
        return self.semantic_cache is not None or any(
            p.match.system_prompt_regex is not None
            for p in (*self.routing, *self.batch, *self.budgets, *self.rate_limits, *self.fallbacks)
        )


class _Reader:
    """Typed access to one TOML table, raising PolicyError with the line of the key."""

    def __init__(self, file: str, text: str, table: tuple[str | int, ...], data: dict):
        self.file, self.text, self.table, self.data = file, text, table, data
        self.used: set[str] = set()

    def error(self, key: str | None, message: str) -> PolicyError:
        path = self.table + (tuple(key.split(".")) if key else ())
        return PolicyError(self.file, key_line(self.text, path), describe(self.table, key), message)

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def text_value(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._get(key, None)
        if value is None:
            if required:
                raise self.error(None, f'missing "{key}"')
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "expected a non-empty string")
        return value.strip()

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        """The value, one of `choices` (an older name in ALIASES gives its current one)."""
        value = self._get(key, default)
        if value is None:
            raise self.error(None, f'missing "{key}" (one of {", ".join(choices)})')
        if isinstance(value, str) and ALIASES.get(value) in choices:
            value = ALIASES[value]
        if value not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        value = self._get(key, default)
        if value is not None and not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int = 0) -> int | None:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: float | None = None, *, low: float, high: float | None = None) -> float | None:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise self.error(key, f"expected a number {bounds}, got {value}")
        return float(value)

    def duration(self, key: str, default: int) -> int:
        value = self._get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if isinstance(value, str):
            found = _DURATION.match(value)
            if found and int(found.group(1)) > 0:
                return int(found.group(1)) * _DURATION_UNITS[found.group(2)]
        raise self.error(key, f'expected a duration such as "90s", "15m", "1h", "7d" or seconds, got {value!r}')

    def patterns(self, key: str) -> tuple[str, ...] | None:
        value = self._get(key, None)
        if value is None:
            return None
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise self.error(key, "expected a string or a list of strings")
        return tuple(values)

    def finish(self) -> None:
        """Reject keys this table does not know (typos)."""
        for key in self.data:
            if key not in self.used:
                raise self.error(key, "unknown key")


def _match(reader: _Reader) -> Match:
    text = []
    for key in TEXT_CONDITIONS:
        values = reader.patterns(key)
        for alias in (old for old, new in ALIASES.items() if new == key):
            if (old_values := reader.patterns(alias)) is not None:
                if values is not None:
                    raise reader.error(alias, f"is {key} under its older name; give one of them")
                values = old_values
        if values is not None:
            text.append((key, values))
    flags = []
    for key in BOOL_CONDITIONS:
        value = reader.boolean(key)
        if value is not None:
            flags.append((key, value))
    low = reader.integer("min_input_tokens")
    high = reader.integer("max_input_tokens")
    if low is not None and high is not None and low > high:
        raise reader.error("max_input_tokens", f"is below min_input_tokens ({high} < {low})")
    regex = reader.text_value("system_prompt_regex")
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as e:
            raise reader.error("system_prompt_regex", f"not a valid regular expression: {e}") from e
    return Match(tuple(text), tuple(flags), low, high, regex)


def _entry_mode(reader: _Reader) -> str:
    return reader.choice("mode", ENTRY_MODES, "enforce")


def _cache_rules(reader: _Reader) -> CacheRules:
    return CacheRules(
        allow_sampling=reader.boolean("allow_sampling", False),
        allow_unset_temperature=reader.boolean("allow_unset_temperature", False),
        allow_tools=reader.boolean("allow_tools", False),
        allow_streaming=reader.boolean("allow_streaming", False),
    )


def _exact_cache(reader: _Reader) -> ExactCachePolicy:
    policy = ExactCachePolicy(
        name=reader.text_value("name", "exact-cache"),
        ttl_seconds=reader.duration("ttl", 3600),
        scope=reader.choice("scope", SCOPES, "global"),
        max_entries=reader.integer("max_entries", 100_000, minimum=1),
        rules=_cache_rules(reader),
        origin=Origin(reader.table),
        mode=_entry_mode(reader),
    )
    reader.finish()
    return policy


def _semantic_cache(reader: _Reader) -> SemanticCachePolicy:
    threshold = reader.number("threshold", None, low=0.0, high=1.0)
    if threshold is None:
        raise reader.error(None, 'missing "threshold" (a cosine similarity, e.g. 0.95)')
    sweep_value = reader._get("sweep", list(DEFAULT_SWEEP))
    if (
        not isinstance(sweep_value, list)
        or not sweep_value
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in sweep_value)
    ):
        raise reader.error("sweep", "expected a list of similarities between 0 and 1")
    embedder = reader.choice("embedder", EMBEDDERS, "wordllama")
    url = reader.text_value("embedder_url")
    model = reader.text_value("embedder_model")
    key_env = reader.text_value("embedder_api_key_env")
    if embedder == "openai":
        if url is None:
            raise reader.error(
                "embedder", 'the "openai" embedder needs "embedder_url" (e.g. "http://localhost:8000/v1")'
            )
        if model is None:
            raise reader.error("embedder", 'the "openai" embedder needs "embedder_model"')
    policy = SemanticCachePolicy(
        name=reader.text_value("name", "semantic-cache"),
        threshold=threshold,
        ttl_seconds=reader.duration("ttl", 3600),
        scope=reader.choice("scope", SCOPES, "global"),
        max_entries=reader.integer("max_entries", 100_000, minimum=1),
        rules=_cache_rules(reader),
        embedder=embedder,
        embedder_url=url,
        embedder_model=model,
        embedder_api_key_env=key_env,
        sweep=tuple(sorted({float(v) for v in sweep_value} | {threshold})),
        sample_pairs=reader.integer("sample_pairs", 20),
        answer_threshold=reader.number("answer_threshold", 0.8, low=0.0, high=1.0),
        lsh_bits=reader.integer("lsh_bits", 10, minimum=1),
        lsh_tables=reader.integer("lsh_tables", 16, minimum=1),
        bucket_size=reader.integer("bucket_size", 64, minimum=1),
        lookup_timeout_ms=reader.integer("lookup_timeout_ms", 20, minimum=0),
        origin=Origin(reader.table),
        mode=_entry_mode(reader),
    )
    if policy.lsh_bits > 30:
        raise reader.error("lsh_bits", "expected at most 30")
    reader.finish()
    return policy


def _routing(reader: _Reader) -> RoutingRule:
    name = reader.text_value("name", required=True)
    to = reader._get("to", None)
    if not isinstance(to, str) or not to.strip():
        raise reader.error("to" if "to" in reader.data else None, "expected a model name")
    to_url = reader.text_value("to_url")
    if to_url is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", to_url):
        raise reader.error("to_url", f"expected a URL such as https://api.groq.com/openai, got {to_url!r}")
    key_env = reader.text_value("to_api_key_env")
    if key_env is not None and to_url is None:
        raise reader.error("to_api_key_env", 'only a rule with "to_url" takes a key')
    rule = RoutingRule(
        name,
        _match(reader),
        to.strip(),
        reader.text_value("to_provider"),
        Origin(reader.table),
        _entry_mode(reader),
        to_url.rstrip("/") if to_url else None,
        key_env,
        reader.number("mirror", 0.0, low=0.0, high=1.0) or 0.0,
        reader.number("mirror_max_spend", 1.0, low=0.0) or 0.0,
    )
    reader.finish()
    return rule


def _batch(reader: _Reader) -> BatchPolicy:
    name = reader.text_value("name", required=True)
    discount = reader.number("discount", None, low=0.0, high=1.0)
    match = _match(reader)
    if match.is_empty:
        raise reader.error(
            None, "needs at least one condition (feature, team, ...) naming the latency-tolerant traffic"
        )
    policy = BatchPolicy(name, match, discount, Origin(reader.table), _entry_mode(reader))
    reader.finish()
    return policy


def _budget(reader: _Reader) -> Budget:
    name = reader.text_value("name", required=True)
    scope = reader.choice("scope", SCOPES, "global")
    window = reader.choice("window", WINDOWS)
    limit = reader.number("limit_usd", None, low=0.0)
    if limit is None:
        raise reader.error(None, 'missing "limit_usd"')
    action = reader.choice("action", BUDGET_ACTIONS, "block")
    to = reader.text_value("to")
    if action == "downgrade" and to is None:
        raise reader.error("action", 'a downgrade needs "to" (the model to downgrade to)')
    if action == "block" and to is not None:
        raise reader.error("to", 'only a "downgrade" action takes a model')
    budget = Budget(
        name,
        scope,
        window,
        limit,
        action,
        to,
        reader.text_value("to_provider"),
        _match(reader),
        Origin(reader.table),
        _entry_mode(reader),
        *_alerts(reader),
    )
    reader.finish()
    return budget


def _alerts(reader: _Reader) -> tuple[tuple[float, ...], str | None]:
    """`alert_at` (shares of the limit, each above 0 and at most 1) and `alert_webhook_env`
    (the name of the environment variable holding the webhook URL; it is read when a proxy
    starts, see analysis.enforce.alerts)."""
    value = reader._get("alert_at", None)
    shares: tuple[float, ...] = ()
    if value is not None:
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1 for v in value)
        ):
            raise reader.error(
                "alert_at", "expected a list of shares of limit_usd above 0 and at most 1, e.g. [0.8, 0.95]"
            )
        shares = tuple(sorted({float(v) for v in value}))
    env = reader.text_value("alert_webhook_env")
    if env is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise reader.error("alert_webhook_env", f"expected the name of an environment variable, got {env!r}")
        if not shares:
            raise reader.error("alert_webhook_env", 'a webhook needs "alert_at" (the shares of the limit that alert)')
    return shares, env


def _rate_limit(reader: _Reader) -> RateLimit:
    name = reader.text_value("name", required=True)
    scope = reader.choice("scope", SCOPES, "global")
    rpm = reader.integer("requests_per_minute", minimum=1)
    tpm = reader.integer("tokens_per_minute", minimum=1)
    if rpm is None and tpm is None:
        raise reader.error(None, 'needs "requests_per_minute" or "tokens_per_minute"')
    limit = RateLimit(name, scope, rpm, tpm, _match(reader), Origin(reader.table), _entry_mode(reader))
    reader.finish()
    return limit


def _url(reader: _Reader, key: str) -> str | None:
    url = reader.text_value(key)
    if url is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
        raise reader.error(key, f"expected a URL such as https://api.groq.com/openai, got {url!r}")
    return url.rstrip("/") if url else None


def _chain_target(reader: _Reader) -> ChainTarget:
    to = reader.text_value("to")
    if to is None:
        raise reader.error(None, 'missing "to" (the model this step sends the call to)')
    url = _url(reader, "to_url")
    key_env = reader.text_value("to_api_key_env")
    if key_env is not None and url is None:
        raise reader.error("to_api_key_env", 'only a step with "to_url" takes a key')
    target = ChainTarget(to, reader.text_value("to_provider"), url, key_env)
    reader.finish()
    return target


def _fallback(reader: _Reader) -> FallbackRule:
    name = reader.text_value("name", required=True)
    on = reader.patterns("on") or FALLBACK_ON
    for value in on:
        if value not in FALLBACK_ON and not _FALLBACK_STATUS.match(value):
            raise reader.error("on", f"expected values among {', '.join(FALLBACK_ON)} or a 5xx status, got {value!r}")
    retries = reader.integer("retries", 2)
    if retries > 10:
        raise reader.error("retries", f"expected at most 10, got {retries}")
    backoff = reader.integer("backoff_ms", 500)
    timeout = reader.number("timeout_s", 60.0, low=0.001)
    chain_value = reader._get("chain", [])
    if not isinstance(chain_value, list) or not all(isinstance(e, dict) for e in chain_value):
        raise reader.error("chain", 'expected a list of tables such as [{ to = "gpt-4o-mini" }]')
    chain = tuple(
        _chain_target(_Reader(reader.file, reader.text, (*reader.table, "chain"), entry)) for entry in chain_value
    )
    if retries == 0 and not chain:
        raise reader.error(None, 'does nothing: give "retries" or a "chain" of models to fall back to')
    rule = FallbackRule(
        name, _match(reader), tuple(on), retries, backoff, timeout, chain, Origin(reader.table), _entry_mode(reader)
    )
    reader.finish()
    return rule


_ARRAYS = {
    "routing": _routing,
    "batch": _batch,
    "budget": _budget,
    "rate_limit": _rate_limit,
    "fallback": _fallback,
}


def parse_policy(text: str, file: str = "<policy>") -> Policy:
    """Read policy TOML `text`; `file` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        found = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(found.group(1)) if found else getattr(e, "lineno", 1)
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", getattr(e, "msg", str(e)))
        raise PolicyError(file, line, "", f"TOML syntax: {message}") from e

    top = _Reader(file, text, (), data)
    name = top.text_value("name")
    description = top.text_value("description")
    observe_for = top.duration("observe_for", DEFAULT_OBSERVE_FOR)
    exact = semantic = None
    cache = top._get("cache", {})
    if not isinstance(cache, dict):
        raise top.error("cache", "expected a table ([cache.exact] / [cache.semantic])")
    cache_reader = _Reader(file, text, ("cache",), cache)
    for kind, reader_fn in (("exact", _exact_cache), ("semantic", _semantic_cache)):
        table = cache_reader._get(kind, None)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise cache_reader.error(kind, f"expected a table [cache.{kind}]")
        if kind == "exact":
            exact = reader_fn(_Reader(file, text, ("cache", kind), table))
        else:
            semantic = reader_fn(_Reader(file, text, ("cache", kind), table))
    cache_reader.finish()

    arrays: dict[str, tuple] = {}
    for key, reader_fn in _ARRAYS.items():
        entries = top._get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise top.error(key, f"expected [[{key}]] tables")
        arrays[key] = tuple(reader_fn(_Reader(file, text, (key, i), e)) for i, e in enumerate(entries))
    top.finish()

    policy = Policy(
        exact_cache=exact,
        semantic_cache=semantic,
        routing=arrays["routing"],
        batch=arrays["batch"],
        budgets=arrays["budget"],
        rate_limits=arrays["rate_limit"],
        fallbacks=arrays["fallback"],
        name=name,
        description=description,
        observe_for_seconds=observe_for,
        text=text,
        file=file,
    )
    seen: dict[str, Origin] = {}
    for item in (*policy.in_order(), *policy.fallbacks):
        if item.name in seen:
            raise policy.error(
                item.origin, "name", f"name {item.name!r} is used twice; names attribute results and must be unique"
            )
        seen[item.name] = item.origin
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read the policy file at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(str(path), 0, "", f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise PolicyError(str(path), 0, "", "not UTF-8 text") from e
    return parse_policy(text, path.name)
