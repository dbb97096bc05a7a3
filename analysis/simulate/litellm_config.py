"""A policy file as the LiteLLM proxy configuration that comes closest (`llm-shadow policy export
--to litellm`), for teams that already run LiteLLM as their gateway.

LiteLLM's `config.yaml` (https://docs.litellm.ai/docs/proxy/configs) holds `model_list`,
`litellm_settings` and `router_settings`; much of what a policy says has no place there, because
LiteLLM keeps team, user and tag budgets and limits in its database (set through its API), and
routes by model name only. So the translation is in two parts: the configuration, and the list
of what it does not express (with the closest thing LiteLLM has, when there is one). Nothing is
silently dropped: every policy entry is either in the configuration or in that list.

What maps:
- exact cache -> `litellm_settings.cache` and `cache_params` (`type: local`, `ttl`); a semantic
  cache alone -> `cache_params.type: redis-semantic` with `similarity_threshold`;
- routing rules that only name models -> `router_settings.model_group_alias`;
- fallback rules -> `router_settings.fallbacks` (by model) or `default_fallbacks` (every model),
  `num_retries` and `timeout`; a chain step with its own upstream -> a `model_list` deployment
  with that `api_base` and key;
- a global budget -> `litellm_settings.max_budget` and `budget_duration`; per-key budgets and
  rate limits -> `litellm_settings.default_key_generate_params` (keys created without their own);
- rate limits on named models -> that model's deployment `rpm` / `tpm`.
"""

import fnmatch
from dataclasses import dataclass, field

from analysis.simulate.policy import Budget, FallbackRule, Match, Policy, RateLimit

CACHED_CALL_TYPES = ["acompletion", "atext_completion", "aembedding", "aresponses"]
BUDGET_DURATIONS = {"hour": "1h", "day": "1d", "month": "30d"}
PROVIDER_KEYS = {  # LiteLLM provider prefix -> the environment variable its key is usually in
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "xai": "XAI_API_KEY",
}
_MODEL_PROVIDERS = (  # name pattern -> LiteLLM provider prefix, for models a policy names
    ("gpt-*", "openai"),
    ("chatgpt-*", "openai"),
    ("o[0-9]*", "openai"),
    ("text-embedding-*", "openai"),
    ("claude-*", "anthropic"),
    ("gemini-*", "gemini"),
    ("mistral-*", "mistral"),
    ("deepseek-*", "deepseek"),
    ("grok-*", "xai"),
)


@dataclass
class LiteLLMConfig:
    config: dict
    not_expressed: list[str] = field(default_factory=list)  # one line per thing LiteLLM's config cannot say


def to_litellm(policy: Policy) -> LiteLLMConfig:
    out = _Builder()
    out.cache(policy)
    for rule in policy.routing:
        out.routing(rule)
    for fallback in policy.fallbacks:
        out.fallback(fallback)
    for budget in policy.budgets:
        out.budget(budget)
    for limit in policy.rate_limits:
        out.rate_limit(limit)
    for batch in policy.batch:
        out.note(f"batch {batch.name!r}: LiteLLM's proxy does not move calls to a batch API by a rule")
    shadowed = [e.name for e in _entries(policy) if getattr(e, "mode", "enforce") == "shadow"]
    if shadowed:
        out.note(f'mode = "shadow" ({", ".join(shadowed)}): LiteLLM has no shadow mode; exported as acting')
    return LiteLLMConfig(out.finish(), out.notes)


def _entries(policy: Policy) -> list:
    caches = [c for c in (policy.exact_cache, policy.semantic_cache) if c is not None]
    return [*caches, *policy.routing, *policy.batch, *policy.budgets, *policy.rate_limits, *policy.fallbacks]


def litellm_model(name: str, provider: str | None = None) -> tuple[str, str | None]:
    """LiteLLM's `provider/model` for a model a policy names, and the key's environment variable."""
    provider = provider or next((p for pattern, p in _MODEL_PROVIDERS if fnmatch.fnmatchcase(name, pattern)), None)
    if provider is None:
        return name, None  # LiteLLM infers the provider of names it knows
    return f"{provider}/{name}", PROVIDER_KEYS.get(provider)


def _model_names(match: Match) -> tuple[list[str], list[str]] | None:
    """(exact model names, patterns) when a Match's only condition is the model; None otherwise
    (LiteLLM keys fallbacks, aliases and deployment limits by exact model names)."""
    text = dict(match.text)
    if set(text) != {"model"} or match.flags or match.system_prompt_regex:
        return None
    if match.min_input_tokens is not None or match.max_input_tokens is not None:
        return None
    models = list(text["model"])
    patterns = [m for m in models if any(c in m for c in "*?[")]
    return [m for m in models if m not in patterns], patterns


def _conditions(match: Match) -> str:
    parts = [f"{key} {' or '.join(values)}" for key, values in match.text]
    parts += [f"{key} = {str(value).lower()}" for key, value in match.flags]
    if match.min_input_tokens is not None:
        parts.append(f"min_input_tokens {match.min_input_tokens}")
    if match.max_input_tokens is not None:
        parts.append(f"max_input_tokens {match.max_input_tokens}")
    if match.system_prompt_regex:
        parts.append(f"system_prompt_regex {match.system_prompt_regex!r}")
    return ", ".join(parts)


class _Builder:
    def __init__(self) -> None:
        self.models: dict[str, dict] = {}  # model_name -> model_list entry
        self.litellm: dict = {}
        self.router: dict = {}
        self.key_defaults: dict = {}
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def literal_models(self, where: str, match: Match) -> list[str] | None:
        """The exact model names `match` stands for (noting the patterns left out), or None."""
        names = _model_names(match)
        if names is None or not names[0]:
            return None
        if names[1]:
            self.note(f"{where}: model patterns {', '.join(names[1])} left out (LiteLLM matches model names exactly)")
        return names[0]

    def model(self, name: str, provider: str | None = None) -> dict:
        if name not in self.models:
            model, key_env = litellm_model(name, provider)
            params = {"model": model}
            if key_env:
                params["api_key"] = f"os.environ/{key_env}"
            self.models[name] = {"model_name": name, "litellm_params": params}
        return self.models[name]

    # --- caches

    def cache(self, policy: Policy) -> None:
        exact, semantic = policy.exact_cache, policy.semantic_cache
        if exact is not None:
            self.litellm["cache"] = True
            self.litellm["cache_params"] = {
                "type": "local",
                "ttl": exact.ttl_seconds,
                "supported_call_types": CACHED_CALL_TYPES,
            }
            self.note(
                f"exact cache {exact.name!r}: `type: local` keeps answers in each LiteLLM worker; use `type: redis` "
                "(host, port, password) to share them"
            )
            self._cache_differences(exact.name, exact.scope, exact.max_entries, exact.rules)
        if semantic is not None and exact is None:
            self.litellm["cache"] = True
            self.litellm["cache_params"] = {
                "type": "redis-semantic",
                "similarity_threshold": semantic.threshold,
                "ttl": semantic.ttl_seconds,
                "redis_semantic_cache_embedding_model": semantic.embedder_model or "text-embedding-3-small",
                "supported_call_types": CACHED_CALL_TYPES,
            }
            self.note(
                f"semantic cache {semantic.name!r}: LiteLLM's redis-semantic cache needs Redis (host, port, password) "
                f"and embeds with a model of the model_list, not the {semantic.embedder!r} embedder; its similarities "
                "differ from llm-shadow's, so the threshold is a starting point"
            )
            self._cache_differences(semantic.name, semantic.scope, semantic.max_entries, semantic.rules)
        elif semantic is not None:
            self.note(
                f"semantic cache {semantic.name!r}: LiteLLM runs one cache; the exact cache was exported "
                f"(its `type: redis-semantic` with similarity_threshold {semantic.threshold} would replace it)"
            )

    def _cache_differences(self, name: str, scope: str, max_entries: int, rules) -> None:
        if scope != "global":
            self.note(f"cache {name!r} scope {scope!r}: LiteLLM's cache is shared by every caller")
        self.note(f"cache {name!r} max_entries {max_entries}: LiteLLM's cache has no entry limit in its config")
        if not (rules.allow_sampling and rules.allow_unset_temperature and rules.allow_tools):
            self.note(
                f"cache {name!r}: LiteLLM caches every request, sampled (temperature > 0 or unset) and with tools "
                "too; llm-shadow's allow_* rules have no equivalent"
            )

    # --- routing and fallbacks

    def routing(self, rule) -> None:
        where = f"routing {rule.name!r}"
        models = None if rule.to_url else self.literal_models(where, rule.match)
        if models is None:
            why = "with its own upstream" if rule.to_url else f"on {_conditions(rule.match) or 'every request'}"
            self.note(f"{where} ({why} -> {rule.to}): LiteLLM routes by the requested model name only")
            return
        aliases = self.router.setdefault("model_group_alias", {})
        for model in models:
            if model in aliases:
                self.note(f"{where}: {model} is already sent to {aliases[model]} by an earlier rule")
                continue
            aliases[model] = rule.to
        self.model(rule.to, rule.to_provider)

    def fallback(self, rule: FallbackRule) -> None:
        where = f"fallback {rule.name!r}"
        models = None if rule.match.is_empty else self.literal_models(where, rule.match)
        if models is None and not rule.match.is_empty:
            self.note(f"{where} on {_conditions(rule.match)}: LiteLLM keys fallbacks by model name")
            return
        chain = []
        for step in rule.chain:
            if step.to_url:
                name = f"{rule.name}-{step.to}"
                entry = self.model(name, step.to_provider)
                entry["litellm_params"]["model"] = litellm_model(step.to, step.to_provider)[0]
                entry["litellm_params"]["api_base"] = step.to_url
                if step.to_api_key_env:
                    entry["litellm_params"]["api_key"] = f"os.environ/{step.to_api_key_env}"
                chain.append(name)
            else:
                self.model(step.to, step.to_provider)
                chain.append(step.to)
        if models is None:
            self.router.setdefault("default_fallbacks", []).extend(chain)
        else:
            for model in models:  # a model group of its own, so that its fallbacks apply
                self.model(model)
            self.router.setdefault("fallbacks", []).extend({model: chain} for model in models)
        if set(rule.on) != {"429", "5xx", "timeout", "connect_error"}:
            self.note(f"{where} on {', '.join(rule.on)}: LiteLLM falls back after any failed call, whatever the error")
        self.router["num_retries"] = max(self.router.get("num_retries", 0), rule.retries)
        self.router["timeout"] = max(self.router.get("timeout", 0), rule.timeout_s)
        if rule.backoff_ms:
            self.note(f"{where} backoff_ms {rule.backoff_ms}: LiteLLM chooses its own wait between retries")

    # --- budgets and rate limits

    def budget(self, budget: Budget) -> None:
        where = f"budget {budget.name!r} ({budget.scope}, {budget.limit_usd} USD a {budget.window})"
        if budget.action == "downgrade":
            self.note(f"{where}: LiteLLM refuses calls over a budget; it cannot downgrade them to {budget.to}")
        if not budget.match.is_empty:
            self.note(f"{where} on {_conditions(budget.match)}: a LiteLLM budget cannot be limited to some calls")
            return
        duration = BUDGET_DURATIONS[budget.window]
        if budget.window == "month":
            self.note(f"{where}: LiteLLM's budget_duration 30d restarts 30 days after it begins, not each month")
        if budget.scope == "global":
            if "max_budget" in self.litellm:
                self.note(f"{where}: LiteLLM has one proxy budget; the first global budget was exported")
                return
            self.litellm["max_budget"] = budget.limit_usd
            self.litellm["budget_duration"] = duration
        elif budget.scope == "key_id":
            if "max_budget" in self.key_defaults:
                self.note(f"{where}: LiteLLM has one default key budget; the first was exported")
                return
            self.key_defaults["max_budget"] = budget.limit_usd
            self.key_defaults["budget_duration"] = duration
            self.note(f"{where}: applies to LiteLLM virtual keys created without a budget of their own")
        else:
            api = {"team": "/team/new or /team/update", "user": "/customer/new (end users)", "feature": "/tag/new"}
            self.note(
                f"{where}: LiteLLM keeps {budget.scope} budgets in its database, not its config: set max_budget "
                f"{budget.limit_usd} and budget_duration {duration} per {budget.scope} with {api[budget.scope]}"
            )

    def rate_limit(self, limit: RateLimit) -> None:
        where = f"rate limit {limit.name!r} ({limit.scope})"
        rates = {"rpm": limit.requests_per_minute, "tpm": limit.tokens_per_minute}
        rates = {k: v for k, v in rates.items() if v is not None}
        models = self.literal_models(where, limit.match) if limit.scope == "global" else None
        if models is not None:
            for model in models:
                self.model(model)["litellm_params"].update(rates)
            self.note(f"{where}: exported as the deployment's rpm/tpm, which LiteLLM's router balances on")
        elif not limit.match.is_empty:
            self.note(f"{where} on {_conditions(limit.match)}: a LiteLLM rate limit cannot be limited to some calls")
        elif limit.scope == "key_id":
            self.key_defaults.update({f"{k}_limit": v for k, v in rates.items()})
            self.note(f"{where}: applies to LiteLLM virtual keys created without limits of their own")
        elif limit.scope == "global":
            self.note(f"{where}: LiteLLM has no proxy-wide rate limit; set rpm/tpm on each deployment in model_list")
        else:
            api = {"team": "/team/new", "user": "/customer/new", "feature": "/tag/new"}
            limits = ", ".join(f"{k}_limit {v}" for k, v in rates.items())
            self.note(
                f"{where}: LiteLLM keeps {limit.scope} limits in its database: set {limits} with {api[limit.scope]}"
            )

    def finish(self) -> dict:
        if self.key_defaults:
            self.litellm["default_key_generate_params"] = self.key_defaults
        # Every other model passes through as the client names it (LiteLLM's wildcard deployment).
        model_list = [*self.models.values(), {"model_name": "*", "litellm_params": {"model": "*"}}]
        config: dict = {"model_list": model_list}
        if self.litellm:
            config["litellm_settings"] = self.litellm
        if self.router:
            config["router_settings"] = self.router
        return config
