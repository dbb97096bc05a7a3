"""Run a policy over recorded traffic: facts for every request, one replay pass, the figures.

`simulate(policy, requests, contents)` takes frames of the `requests` and `contents` relations
(as `Store.requests_frame` / `contents_frame` return them) and gives a `SimulationResult`.
`contents` may be a function that loads them: it is called only when the policy needs texts
(semantic cache, system-prompt conditions, or routing across tokenizer families, where token
counts are re-estimated), so a plain cache/routing/budget run never reads prompts.
"""

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from analysis.parsers.tokens import encoding_name_for_model
from analysis.pricing.table import PriceTable
from analysis.simulate.alerts import simulated_alerts
from analysis.simulate.batch import frame_facts, ordered
from analysis.simulate.embedders import Embedder, make_embedder
from analysis.simulate.engine import PolicyEngine
from analysis.simulate.evaluation import attach_evaluations, latest_evaluations
from analysis.simulate.facts import EngineState, FrameFacts
from analysis.simulate.fallback_replay import replay_fallbacks
from analysis.simulate.matching import CompiledMatch
from analysis.simulate.policy import Match, Policy
from analysis.simulate.pricer import Pricer
from analysis.simulate.replay import Trace, decisions_frame, replay
from analysis.simulate.results import SimulationResult, summarise

ContentsSource = pl.DataFrame | Callable[[], pl.DataFrame] | None
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def needs_texts(policy: Policy, requests: pl.DataFrame) -> bool:
    """Whether simulating `policy` on `requests` reads prompt or response texts: a semantic
    cache or a system-prompt condition does; so does a routing rule or a budget downgrade
    whose target counts tokens with another tokenizer than a model it may receive requests
    from (their counts are re-estimated from the texts)."""
    if policy.needs_contents:
        return True
    if requests.height == 0:
        return False
    pairs = requests.select("model_requested", "model").unique().iter_rows(named=True)
    pairs = [(p["model_requested"] or p["model"], p["model"]) for p in pairs]
    moving = [(r.match, r.to) for r in policy.routing] + [(b.match, b.to) for b in policy.budgets if b.to]
    for match, target in moving:
        patterns = dict(match.text).get("model")
        wanted = CompiledMatch(Match(text=(("model", patterns),))) if patterns else None
        for requested, served in pairs:
            if wanted is not None and not wanted.matches({"model_requested": requested}):
                continue
            if encoding_name_for_model(served) != encoding_name_for_model(target):
                return True
    return False


def build_engine(
    policy: Policy, prices: PriceTable | None = None, embedder: Embedder | None = None, data_dir: Path | None = None
) -> PolicyEngine:
    """A PolicyEngine with the price table and the embedder the policy names."""
    semantic = policy.semantic_cache
    if embedder is None and semantic is not None:
        embedder = make_embedder(
            semantic.embedder,
            url=semantic.embedder_url,
            model=semantic.embedder_model,
            api_key_env=semantic.embedder_api_key_env,
            data_dir=data_dir,
        )
    return PolicyEngine(policy, Pricer(prices or PriceTable.load(data_dir)), embedder)


@dataclass
class Replayed:
    """Everything a run produced: the ordered frames, facts, state and decisions."""

    engine: PolicyEngine
    requests: pl.DataFrame  # in (ts, id) order, content columns joined when read
    facts: FrameFacts
    state: EngineState
    trace: Trace


def replay_frames(
    engine: PolicyEngine,
    requests: pl.DataFrame,
    contents: ContentsSource = None,
    progress: Progress | None = None,
    stop: int | None = None,
) -> Replayed:
    """Facts for every request and the replay pass over the first `stop` of them (all by
    default), in (ts, id) order."""
    texts = None
    if needs_texts(engine.policy, requests):
        texts = contents() if callable(contents) else contents
    frame = ordered(requests, texts)
    del texts  # the columns needed are joined into `frame`
    state = engine.new_state()
    collecting = gc.isenabled()
    gc.disable()  # millions of small objects, none cyclic: the collector only slows the pass
    try:
        if progress:
            progress("facts", 0, frame.height)
        facts = frame_facts(engine, frame, state)
        trace = Trace(len(facts))
        total = len(facts) if stop is None else stop
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress:
                progress("replay", done, total)

        replay(engine, facts, state, trace, 0, stop, advance)
    finally:
        if collecting:
            gc.enable()
    return Replayed(engine, frame, facts, state, trace)


def simulate(
    policy: Policy,
    requests: pl.DataFrame,
    contents: ContentsSource = None,
    *,
    prices: PriceTable | None = None,
    embedder: Embedder | None = None,
    data_dir: Path | None = None,
    parameters: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """The result of applying `policy` to the recorded `requests`."""
    engine = build_engine(policy, prices, embedder, data_dir)
    run = replay_frames(engine, requests, contents, progress)
    decisions = decisions_frame(engine, run.facts, run.trace)
    alerts = simulated_alerts(policy, run.requests, run.facts, run.trace.charged)
    # The summary reads only the budget and rate-limit keys of the facts: let the rest go.
    needed = {k: v for k, v in run.facts.columns.items() if k.startswith(("budget_key.", "rate_key."))}
    facts = FrameFacts(needed, run.facts.budgets, run.facts.rate_limits)
    del run.facts, run.trace, run.state
    params = {"price_version": engine.pricer.table.version, **(parameters or {})}
    if policy.semantic_cache is not None:
        params["embedder"] = engine.embedder.id
    result = summarise(policy, run.requests, decisions, facts, params, engine.embedder)
    for budget in result.budgets:  # when each alert (alert_at) would have fired
        budget["alert_at"] = list(next(b.alert_at for b in policy.budgets if b.name == budget["name"]))
        budget["alerts"] = [a.to_dict() for a in alerts.get(budget["name"], [])]
    attach_evaluations(result.routing, result.by_policy, latest_evaluations(data_dir))
    result.fallback = replay_fallbacks(policy, run.requests, engine.pricer, result.fallback_decisions)
    return result
