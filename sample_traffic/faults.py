"""What goes wrong: rate limits, server errors, provider incidents, cut streams, and the retries
that follow them.

Calls are visited in time order. Each gets a fault drawn from its provider's everyday error rates,
raised inside the incident windows below and for the runaway job (which runs into its project's
rate limit). A 429 or 5xx is retried by the SDK (up to 2 retries, after retry-after or a short
backoff), which adds a new call with the same body and x-stainless-retry-count + 1. A broken
stream is not retried by the SDK; the application resends it about half of the time.
"""

import copy
import heapq
import random
from datetime import UTC, datetime

from sample_traffic.calls import Call

BASE_RATES = {  # fault -> probability per call
    "openai": {"rate_limited": 0.004, "server_error": 0.0025, "overloaded": 0.001},
    "anthropic": {"rate_limited": 0.003, "server_error": 0.002, "overloaded": 0.015},
    "gemini": {"rate_limited": 0.02, "server_error": 0.003, "overloaded": 0.025},
}
STREAM_CUT_RATE = 0.02
CLIENT_CANCEL_RATE = {"code-assistant": 0.03, "support-bot": 0.004}
RUNAWAY_RATE_LIMITED = 0.06
MAX_RETRIES = 2


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# (provider, start, end, extra fault rates): outages the status pages would have reported.
INCIDENTS = [
    ("openai", _utc("2026-10-08T09:40"), _utc("2026-10-08T10:25"), {"server_error": 0.12, "overloaded": 0.06}),
    ("gemini", _utc("2026-10-16T12:05"), _utc("2026-10-16T13:00"), {"overloaded": 0.2}),
    ("anthropic", _utc("2026-10-22T14:30"), _utc("2026-10-22T16:00"), {"overloaded": 0.35}),
]


def fault_rates(call: Call) -> dict[str, float]:
    rates = dict(BASE_RATES[call.key.provider])
    for provider, start, end, extra in INCIDENTS:
        if provider == call.key.provider and start <= call.at < end:
            for fault, rate in extra.items():
                rates[fault] = rates[fault] + rate
    if call.feature == "ticket-backfill":
        rates["rate_limited"] += RUNAWAY_RATE_LIMITED
    if call.stream:
        rates["cut"] = STREAM_CUT_RATE
        rates["client_cancel"] = CLIENT_CANCEL_RATE.get(call.feature, 0.0)
    return rates


def draw_fault(rng: random.Random, call: Call) -> str | None:
    roll = rng.random()
    for fault, rate in fault_rates(call).items():
        if roll < rate:
            return fault
        roll -= rate
    return None


def retry_after(rng: random.Random, call: Call) -> float:
    """Seconds the provider asks the client to wait after a 429."""
    if call.key.provider == "gemini":
        return float(rng.randint(8, 45))
    if call.key.provider == "anthropic":
        return float(rng.randint(1, 20))
    return round(rng.uniform(0.2, 6.0), 3)


def _retry(rng: random.Random, call: Call) -> Call | None:
    if call.fault in ("rate_limited", "server_error", "overloaded") and not (
        call.fault == "overloaded" and call.key.provider == "anthropic" and call.stream
    ):
        if call.retry_count >= MAX_RETRIES:
            return None
        wait = (
            call.retry_after_s
            if call.fault == "rate_limited"
            else min(8.0, 0.5 * 2**call.retry_count) * rng.uniform(0.75, 1.0)
        )
        retry = copy.deepcopy(call)
        retry.retry_count += 1
    elif call.fault in ("cut", "overloaded") and rng.random() < 0.5:
        wait = rng.uniform(2, 8)  # the application resends the whole request
        retry = copy.deepcopy(call)
    else:
        return None
    retry.at = round(call.at + 0.3 + wait, 3)
    retry.fault = None
    retry.retry_after_s = None
    return retry


def inject_faults(rng: random.Random, calls: list[Call]) -> list[Call]:
    """Give each call its fault, in time order, and add the retries; returns calls by time."""
    queue = [(call.at, i, call) for i, call in enumerate(calls)]
    heapq.heapify(queue)
    order = len(queue)
    out = []
    while queue:
        _, _, call = heapq.heappop(queue)
        call.fault = draw_fault(rng, call)
        if call.fault == "rate_limited":
            call.retry_after_s = retry_after(rng, call)
        out.append(call)
        retry = _retry(rng, call)
        if retry is not None:
            heapq.heappush(queue, (retry.at, order, retry))
            order += 1
    return out
