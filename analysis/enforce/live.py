"""One policy acting on live traffic: decide a request, then settle it when its answer came.

`LivePolicy` holds the simulator's `PolicyEngine` and its state (analysis.simulate.state,
behind a `StateBackend`), so a live decision is the simulator's decision for the same request
after the same history: `decide(record)` runs `PolicyEngine.decide` and turns its answer into
what the proxy does (a `Verdict`): answer from the exact or the semantic cache, refuse with a
429, rewrite the model, or pass. What the simulator learns from a recorded row at once (the answer's cost and
whether it can be cached) arrives live only when the call ends: `settle(verdict, ...)`
charges the budgets with the call's recorded cost and stores its response, with the same
state methods the replay loop uses. Decisions are logged in both modes (`rows`); in shadow
mode, or for an entry with `mode = "shadow"`, the verdict is only logged.

Both caches answer with the stored upstream bytes of the request they matched (`ResponseStore`,
one per cache, within the proxy's byte cap); a cache entry and its bytes leave together.

Known differences from the simulator (README, "From observation to enforcement"): a request
still in flight is charged and cached when it ends, not when it starts, so concurrent requests
may see an older state; a throttled request is refused live and charged when the client
retries (the simulator charges the throttled request itself); a request whose prompt could not
be embedded within the semantic cache's `lookup_timeout_ms` is decided without the semantic
cache (the simulator has no clock to miss). A rate limit's `tokens_per_minute` window counts a
call's tokens from its admission, as the simulator does, but learns them when the call ends:
calls in flight count 0 tokens (or their input estimate when the policy counts tokens).
"""

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analysis.enforce.alerts import BudgetAlerter, webhook_urls
from analysis.enforce.decisions import decision_rows, header_value
from analysis.enforce.refusals import Refusal, refusal
from analysis.pricing.table import PriceTable
from analysis.simulate.alerts import Alert, requested
from analysis.simulate.cacheability import exclusion_reason, may_store
from analysis.simulate.enforceable import check_enforceable, model_family, wire_family
from analysis.simulate.engine import Decision, PolicyEngine
from analysis.simulate.facts import Facts, to_microseconds
from analysis.simulate.fallback import Fallbacks
from analysis.simulate.policy import Policy, PolicyError
from analysis.simulate.pricer import Pricer
from analysis.simulate.semantic import SemanticIndex
from analysis.simulate.state import (
    CacheState,
    MemoryBackend,
    ResponseCache,
    ResponseStore,
    StateBackend,
    StoredResponse,
)

MODES = ("observe", "shadow", "enforce")
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
# Response headers a replayed answer does not keep: framing, which mitmproxy sets again for the
# body it sends, and the upstream's per-call ids that must not repeat.
REPLAY_DROPPED_HEADERS = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date"}
# The semantic cache's decision row when the prompt was not embedded within lookup_timeout_ms.
LOOKUP_TIMEOUT = "semantic_lookup_timeout"


@dataclass(slots=True)  # made for every request: slots are quicker to set than a __dict__
class Verdict:
    """What the proxy does with one request, and the evidence."""

    record: dict[str, Any]
    decision: Decision
    facts: Facts
    rows: list[dict]
    action: str = "pass"  # pass | answer | refuse | rewrite
    answered_by: str | None = None  # the policy kind that answered (answer, refuse)
    header: str | None = None  # x-llm-shadow-decision, when the proxy answered or changed the call
    answer: StoredResponse | None = None
    refusal: Refusal | None = None
    model_to: str | None = None
    upstream: tuple[str, str | None] | None = None  # (base URL, API key) of another upstream
    really_sent: bool = False  # enforce mode, a hit or block that did not act: the call goes upstream
    token_windows: tuple[int, ...] = ()  # rate limits counting tokens that admitted the call (settle adds them)
    # The request (would have) reached the upstream and its answer updates the state (see
    # `needs_settling`): set by LivePolicy.decide once the verdict is complete.
    needs_settling: bool = False


def needs_settling(verdict: Verdict) -> bool:
    """The request (would have) reached the upstream and its answer updates the state: a
    budget applies to it, or its answer may be stored in the exact cache or the semantic
    cache's index. In enforce mode a hit or block that did not act (an entry in shadow mode,
    a cache hit with no stored answer to replay) is only logged: the call really reaches
    the upstream and is settled like any other."""
    if verdict.decision.disposition != "upstream" and not verdict.really_sent:
        return False
    facts = verdict.facts
    stores = facts.exact_key is not None and may_store(facts.exact_excluded)
    budget_keys = facts.budget_keys
    return (
        stores
        or facts.semantic_pid >= 0
        or budget_keys.count(None) != len(budget_keys)  # a budget applies (not a generator: every call)
        or bool(verdict.token_windows)
    )


def alerts_only(policy: Policy) -> Policy:
    """What observe mode runs of a policy: its budgets that alert, deciding nothing else."""
    return dataclasses.replace(
        policy,
        exact_cache=None,
        semantic_cache=None,
        routing=(),
        batch=(),
        rate_limits=(),
        budgets=tuple(b for b in policy.budgets if b.alert_at),
    )


class LivePolicy:
    """A policy file in shadow or enforce mode, with its state. In observe mode, only its
    budgets that alert (`alert_at`), to count spend and fire alerts: nothing is decided,
    logged to `decisions` or changed."""

    def __init__(
        self,
        policy: Policy,
        mode: str,
        prices: PriceTable,
        backend: StateBackend | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "enforce":
            check_enforceable(policy)
        if mode == "observe":
            policy = alerts_only(policy)
        self.webhooks = webhook_urls(policy)  # budget name -> URL alerts are POSTed to
        # Called with each alert that fires and its budget's webhook URL (None: log only).
        self.on_alert: Callable[[Alert, str | None], None] | None = None
        self.policy = policy
        self.mode = mode
        # In enforce mode an entry with mode = "shadow" only logs; a budget's log-only block must
        # not keep the budgets after it from being checked, so the engine is told which they are.
        log_only = frozenset(b.name for b in policy.budgets if b.mode == "shadow") if mode == "enforce" else frozenset()
        try:
            self.engine = PolicyEngine(policy, Pricer(prices), log_only=log_only)
        except ValueError as e:
            if isinstance(e, PolicyError):
                raise
            raise PolicyError(policy.file, 0, "", str(e)) from e
        # Per entry name, whether it acts and the `mode` its decision rows log: read once or more
        # per request, so looked up, not worked out. A name no entry has acts as an enforcing one.
        self._enforcing = mode == "enforce"
        self._acting = {
            entry.name: self._enforcing and entry.mode == "enforce" for entry in (*policy.in_order(), *policy.fallbacks)
        }
        self._row_modes = {name: "enforce" if acting else "shadow" for name, acting in self._acting.items()}
        self._unknown_mode = "enforce" if self._enforcing else "shadow"
        self.fallbacks = Fallbacks(policy)  # act when an answer fails (addons.fallback)
        backend = backend or MemoryBackend()
        self.state = self.engine.new_state(backend)
        self.state.exact_seen = None  # only the simulator's excluded_duplicate reads it: not kept
        exact = policy.exact_cache
        self.responses = backend.response_store(exact.name, cache_bytes) if exact and self.acts(exact.name) else None
        _evict_together(self.state.exact, self.responses)
        semantic = policy.semantic_cache
        self.semantic_responses = (
            backend.response_store(semantic.name, cache_bytes) if semantic and self.acts(semantic.name) else None
        )
        _evict_semantic_together(self.state.semantic, self.semantic_responses)
        self.alerter = BudgetAlerter(policy, backend, self.state.budgets)
        self.counts: Counter[str] = Counter()
        # The rate limits that count tokens (settle adds a call's tokens to their windows).
        self.token_limits = tuple(
            r for r, limit in enumerate(policy.rate_limits) if limit.tokens_per_minute is not None
        )
        # The rules of the caches that read a request's prompt hash (request_record hashes a
        # prompt only when one of them may use it).
        self.cache_rules = tuple(cache.rules for cache in (policy.exact_cache, policy.semantic_cache) if cache)
        self.needs_tokens = bool(
            policy.routing
            or policy.batch
            or any(b.to for b in policy.budgets)
            or any(
                m.min_input_tokens is not None or m.max_input_tokens is not None
                for m in [e.match for e in policy.in_order() if hasattr(e, "match")]
            )
        )

    def text_to_embed(self, record: dict[str, Any]) -> str | None:
        """The prompt the semantic cache must embed before `record` can be decided, when it has
        not been embedded yet (the proxy embeds it in a thread, off its event loop)."""
        semantic, index = self.policy.semantic_cache, self.state.semantic
        text = record.get("prompt_text")
        if semantic is None or index is None or not text or text in index.text_rows:
            return None
        return text if may_store(exclusion_reason(record, semantic.rules)) else None

    def acts(self, name: str | None) -> bool:
        """Whether the entry called `name` acts on traffic (enforce mode, entry not in shadow)."""
        if not name:
            return False
        return self._acting.get(name, self._enforcing)

    def mode_of(self, name: str | None) -> str:
        """The `mode` of the decision rows of the entry called `name`: enforce when it acts."""
        if not name:
            return "shadow"
        return self._row_modes.get(name, self._unknown_mode)

    def decide(self, record: dict[str, Any], wire_format: str, lookup_timed_out: bool = False) -> Verdict:
        """Decide `record` (analysis.enforce.request_record) against the state; the verdict
        says what to do. `lookup_timed_out`: the prompt was not embedded in time, so the
        record comes without its text and the semantic cache's row says why."""
        decision, facts = self.engine.decide_with_facts(record, self.state)
        p = self.policy
        verdict = Verdict(record, decision, facts, [])
        now = facts.ts_us
        cache_saving = None
        unserved = None  # the cache whose hit had no stored answer to replay (the call goes upstream)
        if decision.disposition == "exact_hit" and decision.cache_policy and self.acts(decision.cache_policy):
            source = decision.cache_source_id
            stored = self.responses.get(source, now) if self.responses is not None and source else None
            if stored is None:
                self.counts["exact_cache_bytes_missing"] += 1  # stored while only deciding, or lost: pass
                unserved = "exact_cache"
                forget = getattr(self.state.exact, "forget", None)
                if forget is not None and facts.exact_key is not None:
                    forget(facts.exact_key)  # this call's answer, with its bytes, takes the entry's place
            else:
                verdict.action, verdict.answered_by, verdict.answer = "answer", "exact_cache", stored
                verdict.header = header_value("exact_cache", "hit", decision.cache_policy)
                cache_saving = stored.cost_usd
        elif decision.disposition == "semantic_hit" and decision.cache_policy and self.acts(decision.cache_policy):
            source, store = decision.cache_source_id, self.semantic_responses
            stored = store.get(source, now) if store is not None and source else None
            if stored is None:
                self.counts["semantic_cache_bytes_missing"] += 1  # stored while only deciding, or lost: pass
                unserved = "semantic_cache"
                if type(self.state.semantic) is SemanticIndex and source:
                    self.state.semantic.forget_source(source)  # this call's answer takes its place
            else:
                verdict.action, verdict.answered_by, verdict.answer = "answer", "semantic_cache", stored
                verdict.header = header_value("semantic_cache", "hit", decision.cache_policy)
                cache_saving = stored.cost_usd
        elif decision.disposition == "blocked" and decision.budget_by and self.acts(decision.budget_by):
            budget = next(b for b in p.budgets if b.name == decision.budget_by)
            message = (
                f"llm-shadow: budget {budget.name!r} is spent: its {budget.window} limit of "
                f"${budget.limit_usd:g} has been reached"
            )
            verdict.action, verdict.answered_by = "refuse", "budget"
            verdict.refusal = refusal(wire_format, "budget", message)
            verdict.header = header_value("budget", "block", budget.name)
        elif decision.throttled_by and self.acts(decision.throttled_by):
            index = next(i for i, r in enumerate(p.rate_limits) if r.name == decision.throttled_by)
            wait = self.state.rates[index].wait_us(facts.rate_keys[index], now) / 1_000_000
            message = f"llm-shadow: rate limit {decision.throttled_by!r} is full; retry in {wait:.0f} s"
            verdict.action, verdict.answered_by = "refuse", "rate_limit"
            verdict.refusal = refusal(wire_format, "rate_limit", message, wait)
            verdict.header = header_value("rate_limit", "throttle", decision.throttled_by)
        elif decision.routed_by or decision.budget_action == "downgrade":  # else (most calls) nothing to rewrite
            self._rewrite(verdict, wire_format)
        if (
            self.token_limits
            and decision.disposition == "upstream"
            and decision.throttled_by is None
            and facts.batch < 0
        ):
            # Admitted to its rate windows with the tokens known now (0, or the input estimate):
            # the call's own tokens are added when it ends, dated from its admission.
            verdict.token_windows = tuple([r for r in self.token_limits if facts.rate_keys[r] is not None])
        # In enforce mode a decision that did not act (its entry in shadow mode, a cache hit with
        # no stored answer to replay) lets the call reach the upstream: it is charged and
        # settled like any other. In shadow mode the state follows the simulation instead.
        verdict.really_sent = (
            self.mode == "enforce" and decision.disposition != "upstream" and verdict.action not in ("answer", "refuse")
        )
        verdict.needs_settling = needs_settling(verdict)
        if self.mode != "observe":
            # Dated None: the recorder's worker dates a call's own rows with its `ts` (the request's
            # start, as `record["ts"]`) when it writes them (analysis.recording.sink). A datetime
            # sent to the worker with each call cost the proxy 6 us to pickle (in-process).
            verdict.rows = decision_rows(
                decision.__dict__, p, None, self.mode_of, cache_saving if verdict.answer else None
            )
            if lookup_timed_out or unserved:  # else (most calls) the rows stay as decided
                for row in verdict.rows:
                    if lookup_timed_out and p.semantic_cache is not None and row["kind"] == "semantic_cache":
                        row["reason"] = f"{LOOKUP_TIMEOUT}: not embedded within {p.semantic_cache.lookup_timeout_ms} ms"
                    elif row["kind"] == unserved and row["action"] == "hit":  # decided, but nothing saved
                        said = f"{row['reason']}; " if row["reason"] else ""
                        row["reason"], row["saving_usd"] = f"{said}no stored answer to replay: sent upstream", None
        return verdict

    def _rewrite(self, verdict: Verdict, wire_format: str) -> None:
        decision = verdict.decision
        target: str | None = None
        kind = name = ""
        if decision.budget_action == "downgrade" and self.acts(decision.budget_by):
            target, kind, name = decision.model_after, "budget", decision.budget_by or ""
        elif decision.routed_by and self.acts(decision.routed_by):
            target = next(r.to for r in self.policy.routing if r.name == decision.routed_by)
            kind, name = "routing", decision.routed_by
        rule = next((r for r in self.policy.routing if r.name == name), None) if kind == "routing" else None
        upstream = None
        if rule is not None and rule.to_url:
            key = os.environ.get(rule.to_api_key_env) if rule.to_api_key_env else None
            upstream = (rule.to_url, key)
        if target is None or (target == verdict.record.get("model_requested") and upstream is None):
            return
        if model_family(target) != wire_family(wire_format):
            self.counts["rewrite_other_wire_format"] += 1  # cannot be sent in this format: pass
            return
        action = "downgrade" if kind == "budget" else "route"
        verdict.action, verdict.model_to, verdict.upstream = "rewrite", target, upstream
        verdict.header = header_value(kind, action, name)

    def settle(
        self,
        verdict: Verdict,
        ok: bool,
        cost_usd: float | None,
        ended: float,
        status: int | None = None,
        headers: tuple = (),
        chunks: tuple[bytes, ...] = (),
        tokens: int | None = None,
    ) -> None:
        """The call of `verdict` has ended: charge its cost (and fire the budget alerts it
        brings due), add its `tokens` (input + output) to the rate windows that admitted it,
        store its answer when it may be cached, in the exact cache and the semantic cache's
        index (the replay loop's last step, with the answer's real arrival time)."""
        if not verdict.needs_settling:
            return
        facts, state = verdict.facts, self.state
        arrival = to_microseconds_float(ended)
        if tokens is not None:
            for r in verdict.token_windows:  # the simulator admits the recorded tokens at once
                state.rates[r].add_tokens(facts.rate_keys[r], facts.ts_us, tokens - facts.tokens, arrival)
        spend = cost_usd if cost_usd is not None else 0.0
        for b, key in enumerate(facts.budget_keys):
            if key is not None:
                state.budgets[b].charge(key, spend)
                for alert in self.alerter.after_charge(
                    b, key, spend, facts.id, facts.ts_us, requested(verdict.record), verdict.record.get("feature")
                ):
                    if self.on_alert is not None:
                        self.on_alert(alert, self.webhooks.get(alert.budget))
        if ok and state.semantic is not None and facts.semantic_pid >= 0 and may_store(facts.semantic_excluded):
            stored = state.semantic.store(facts.semantic_pid, facts.semantic_row, arrival, facts.id)
            if stored is not False and self.semantic_responses is not None and status is not None:
                key = (facts.semantic_pid, facts.semantic_row, facts.id)
                answer = StoredResponse(facts.id, status, _replayed(headers), tuple(chunks), cost_usd, key)
                if not self.semantic_responses.put(answer, arrival + state.semantic.ttl_us):
                    self.counts["semantic_cache_answer_too_large"] += 1
                    if type(state.semantic) is SemanticIndex:
                        state.semantic.forget(*key)  # no bytes to answer with: not a hit for later calls
        if ok and state.exact is not None and facts.exact_key is not None and may_store(facts.exact_excluded):
            stored = state.exact.store(facts.exact_key, arrival, facts.id)
            if stored and self.responses is not None and status is not None:
                answer = StoredResponse(facts.id, status, _replayed(headers), tuple(chunks), cost_usd, facts.exact_key)
                if not self.responses.put(answer, arrival + state.exact.ttl_us):
                    self.counts["exact_cache_answer_too_large"] += 1
                    forget = getattr(state.exact, "forget", None)
                    if forget is not None:
                        forget(facts.exact_key)  # no bytes to answer with: not a hit for later calls


def _evict_together(cache: CacheState | None, store: ResponseStore | None) -> None:
    """In memory, a cache entry and its answer's bytes leave together: the LRU of entries drops
    the bytes, the byte cap drops the entry (a later identical call is then a miss, whose answer
    is stored again, not a hit with nothing to answer). A shared backend keeps its own
    (analysis.shared_state), where a hit without bytes passes and is counted."""
    if isinstance(cache, ResponseCache) and isinstance(store, ResponseStore):
        cache.on_evict = store.discard
        store.on_evict = cache.forget


def _evict_semantic_together(index: SemanticIndex | None, store: ResponseStore | None) -> None:
    """The same for the semantic cache's index (in memory): a slot the LRU pushes out (or a newer
    answer replaces) drops its bytes, and bytes the byte cap pushes out evict their slot."""
    if type(index) is SemanticIndex and isinstance(store, ResponseStore):
        index.on_evict = store.discard

        def forget(key: object) -> None:
            if isinstance(key, tuple):  # (partition, prompt row, source id), as settle stores it
                index.forget(*key)

        store.on_evict = forget


def _replayed(headers: tuple) -> tuple[tuple[bytes, bytes], ...]:
    """The response header fields a stored answer keeps (REPLAY_DROPPED_HEADERS left out)."""
    return tuple((k, v) for k, v in headers if k.lower() not in REPLAY_DROPPED_HEADERS)


def to_microseconds_float(unix_seconds: float) -> int:
    return int(unix_seconds * 1_000_000)


__all__ = ["MODES", "LivePolicy", "Verdict", "check_enforceable", "to_microseconds"]
