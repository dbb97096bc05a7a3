"""Parity: the decisions the simulator predicts are the decisions shadow and enforce mode make.

1. Traffic is recorded through `llm-shadow proxy` in observe mode (real openai SDK, fake provider).
2. `simulate` runs the policy over what was recorded.
3. The same traffic is sent again through a proxy in shadow mode, then through one in enforce mode.

The three decision sets must be equal request by request: compared as rows of `decisions`
(policy, kind, action, matched request, target model), with requests identified by their place
in the sequence (each run gives its calls new ids). The traffic is sent one call at a time, so
the documented exception (a call still in flight when the answer it would have hit was stored)
does not arise; throttled calls are kept out of budget scopes, the other documented exception
(enforce mode refuses a throttled call, so nothing is charged for it). The third, a prompt not
embedded within the semantic cache's `lookup_timeout_ms` (the simulator has no clock), is kept
out by a generous budget.
"""

from pathlib import Path

import openai
import pytest

from analysis.enforce.decisions import PARITY_COLUMNS, decision_rows
from analysis.simulate.policy import load_policy
from analysis.simulate.replay import decisions_frame
from analysis.simulate.simulator import build_engine, replay_frames
from analysis.store.datadir import Store
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY
from tests.test_enforce import MESSAGES
from tests.test_enforce import POLICY as ENFORCE_POLICY

# The semantic cache after the exact cache, scoped by feature like it (hashing embedder: offline,
# no model; the paraphrases below are 0.82 to 0.88 similar under it).
POLICY = (
    ENFORCE_POLICY
    + """
[cache.semantic]
name = "semantic"
threshold = 0.8
embedder = "hashing"
scope = "feature"
allow_streaming = true
lookup_timeout_ms = 60000
"""
)

# (feature, team, model, temperature, stream): sent in this order, one at a time.
TRAFFIC = [
    ("parity-cache", None, "gpt-4o-mini", 0, False),
    ("parity-cache", None, "gpt-4o-mini", 0, False),  # exact hit
    ("parity-cache-2", None, "gpt-4o-mini", 0, False),  # same prompt, other feature: its own scope
    ("parity-cache", None, "gpt-4o-mini", 0.7, False),  # excluded: temperature
    ("parity-stream", None, "gpt-4o-mini", 0, True),
    ("parity-stream", None, "gpt-4o-mini", 0, True),  # exact hit, streamed
    ("parity-cache", None, "gpt-4o-mini", 0, False),  # exact hit again
    ("test_routed-parity", None, "gpt-4o", 0.5, False),  # routed to gpt-4o-mini
    ("parity-budget", "capped-parity", "gpt-4o-mini", 0.5, False),  # reaches the budget
    ("parity-budget", "capped-parity", "gpt-4o-mini", 0.5, False),  # blocked
    ("parity-budget", "capped-parity", "gpt-4o-mini", 0, False),  # blocked (a new prompt: cache miss)
    ("test_rate_limit-parity", None, "gpt-4o-mini", 0.5, False),
    ("test_rate_limit-parity", None, "gpt-4o-mini", 0.5, False),
    ("test_rate_limit-parity", None, "gpt-4o-mini", 0.5, False),  # throttled
    ("parity-semantic", None, "gpt-4o-mini", 0, False),
    ("parity-semantic", None, "gpt-4o-mini", 0, False),  # semantic hit: a paraphrase of the one before
    ("parity-semantic", None, "gpt-4o-mini", 0, True),  # a streamed paraphrase: JSON answers are not for it
    ("parity-semantic", None, "gpt-4o-mini", 0, True),  # semantic hit on the streamed answer
]
# The prompts that are not MESSAGES, by place in TRAFFIC.
PROMPTS = {
    10: "Something else?",
    14: "how do I cancel my credit card",
    15: "how can I cancel my credit card",
    16: "could you cancel my credit card",
    17: "could you please cancel my credit card",
}


def send_traffic(url: str) -> None:
    for i, (feature, team, model, temperature, stream) in enumerate(TRAFFIC):
        headers = {"x-shadow-feature": feature, **({"x-shadow-team": team} if team else {})}
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, default_headers=headers)
        messages = [{"role": "user", "content": PROMPTS[i]}] if i in PROMPTS else MESSAGES
        try:
            if stream:
                for _ in client.chat.completions.create(
                    model=model, messages=messages, temperature=temperature, stream=True
                ):
                    pass
            else:
                client.chat.completions.create(model=model, messages=messages, temperature=temperature)
        except openai.RateLimitError:
            pass  # enforce mode refusing: recorded all the same


def run(provider: FakeProvider, tmp: Path, mode: str) -> Store:
    data_dir = tmp / mode
    args = ["--upstream", f"{provider.url}@0"]
    if mode != "observe":
        args += ["--policy", str(tmp / "policy.toml"), "--mode", mode, "--force"]
    proxy = RunningProxy(llm_shadow_proxy_command(args, data_dir))
    try:
        send_traffic(proxy.url)
        store = Store(data_dir)
        recorded = wait_for(lambda: store.requests_frame().height == len(TRAFFIC) and store)
        assert recorded, "".join(proxy.output[-20:])
    finally:
        proxy.stop()
    return store


def comparable(rows: list[dict], order: list[str]) -> list[tuple]:
    """Decision rows with ids replaced by the call's place in the sequence."""
    place = {request_id: i for i, request_id in enumerate(order)}
    out = []
    for row in rows:
        values = {c: row[c] for c in PARITY_COLUMNS}
        values["id"] = place[row["id"]]
        values["matched_id"] = place.get(row["matched_id"]) if row["matched_id"] else None
        out.append(tuple(values[c] for c in PARITY_COLUMNS))
    return sorted(out, key=lambda t: tuple("" if v is None else str(v) for v in t))


def recorded_order(store: Store) -> list[str]:
    return store.requests_frame().sort("ts", "id")["id"].to_list()


def test_simulated_shadow_and_enforced_decisions_are_equal(tmp_path):
    (tmp_path / "policy.toml").write_text(POLICY)
    policy = load_policy(tmp_path / "policy.toml")
    with FakeProvider() as provider:
        observed = run(provider, tmp_path, "observe")
        shadow = run(provider, tmp_path, "shadow")
        enforce = run(provider, tmp_path, "enforce")

    engine = build_engine(policy, data_dir=observed.data_dir)
    replayed = replay_frames(engine, observed.requests_frame(), observed.contents_frame())
    simulated_rows = []
    for decision in decisions_frame(engine, replayed.facts, replayed.trace).iter_rows(named=True):
        simulated_rows += decision_rows(decision, policy, None, lambda name: "shadow")
    simulated = comparable(simulated_rows, replayed.requests["id"].to_list())

    live_shadow = comparable(shadow.decisions_frame().to_dicts(), recorded_order(shadow))
    live_enforce = comparable(enforce.decisions_frame().to_dicts(), recorded_order(enforce))
    assert live_shadow == simulated
    assert live_enforce == simulated

    # The traffic exercised every kind of decision, and enforce mode acted on them.
    actions = {(kind, action) for _, _, kind, action, *_ in simulated}
    assert actions >= {
        ("exact_cache", "hit"),
        ("exact_cache", "miss"),
        ("routing", "route"),
        ("budget", "block"),
        ("rate_limit", "throttle"),
        ("semantic_cache", "hit"),
        ("semantic_cache", "miss"),
    }
    semantic = [(i, action, matched) for i, _, kind, action, matched, _ in simulated if kind == "semantic_cache"]
    assert [row for row in semantic if row[0] >= 14] == [
        (14, "miss", None),
        (15, "hit", 14),
        (16, "miss", None),
        (17, "hit", 16),
    ]
    outcomes = enforce.requests_frame().sort("ts", "id")["outcome"].to_list()
    assert outcomes.count("cached") == 5 and outcomes.count("blocked") == 2 and outcomes.count("throttled") == 1
    assert set(shadow.requests_frame()["outcome"].to_list()) == {"ok"}
    assert {d["mode"] for d in enforce.decisions_frame().to_dicts()} == {"enforce"}


@pytest.mark.parametrize("column", PARITY_COLUMNS)
def test_parity_columns_are_decisions_columns(column):
    from analysis.store.schema import DECISIONS

    assert column in [c.name for c in DECISIONS]
