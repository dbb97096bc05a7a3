"""The company-sized month `llm-shadow demo` records: Kestrel Bank's month at a larger volume,
with the heavier models a company of that size runs its agentic work on.

`generate.py` writes the small month the repository ships (`month.flows`). At demo time the same
features, faults and wire formats are drawn at `scale` times the volume, with these changes:
the engineers' assistant answers with gpt-5 instead of gpt-4.1 on its OpenAI half, the
analysts' SQL helper thinks with o3 instead of o4-mini, the review insights come from
gemini-2.5-pro instead of gemini-2.5-flash, and the data team's backfill job (the one that runs
away) calls gpt-5 instead of gpt-4o, each with the hidden reasoning such models spend (thousands
of tokens a call, billed as output). Everything else (the teams, the runaway job,
the repeats a cache would serve) is the sample month's.

The month is made day by day, each day with its own RNG and prompt caches, so several processes
can make and record days at once and the result depends only on the seed and the scale. The
flows go straight from the generator to the recorder, with no flow file in between, and without
the connections a flow file would hold (`flows.build_recorded_flow`).
"""

import bisect
from collections.abc import Iterator

from addons.flow_records import ImportedFlow
from sample_traffic import schedule
from sample_traffic.calls import Call
from sample_traffic.faults import inject_faults
from sample_traffic.flows import build_recorded_flow
from sample_traffic.generate import DEFAULT_SEED, WIRE, build_calls, rng_for
from sample_traffic.wire_common import PromptCaches

DEFAULT_SCALE = 20.0

# (feature, model as the sample month calls it) -> (the company's model, reasoning tokens range)
UPGRADES = {
    ("code-assistant", "gpt-4.1"): ("gpt-5", (4_000, 40_000)),
    ("sql-helper", "o4-mini"): ("o3", (4_000, 24_000)),
    ("review-insights", "gemini-2.5-flash"): ("gemini-2.5-pro", (4_000, 20_000)),
    # Someone left reasoning_effort at "high" on the backfill job.
    ("ticket-backfill", "gpt-4o"): ("gpt-5", (8_000, 32_000)),
}


def company_calls(seed: int, scale: float) -> list[Call]:
    """Every call of the company month, in time order, faults and retries included."""
    calls = build_calls(seed, scale)
    rng = rng_for(seed, "company")
    for call in calls:
        upgrade = UPGRADES.get((call.feature, call.model))
        if upgrade is not None:
            call.model = upgrade[0]
            if call.reply.text:  # the answer, not the tool call that precedes it, thinks longest
                call.reply.reasoning_tokens = rng.randint(*upgrade[1])
            else:
                call.reply.reasoning_tokens = rng.randint(upgrade[1][0] // 4, upgrade[1][0])
    return inject_faults(rng_for(seed, "faults"), calls)


def calls_per_day(seed: int, scale: float) -> list[int]:
    """How many calls each day of the company month has."""
    starts = [schedule.day_start(day) for day in schedule.days()]
    counts = [0] * len(starts)
    for call in _calls_cached(seed, scale):
        counts[bisect.bisect_right(starts, call.at) - 1] += 1
    return counts


class DayFlows:
    """Makes the flows of one day of the company month (a producer for addons.importer's
    record_flows: the workers each make the days they are given)."""

    def __init__(self, seed: int = DEFAULT_SEED, scale: float = DEFAULT_SCALE):
        self.seed, self.scale = seed, scale

    def __call__(
        self, index: object, problems: object = None
    ) -> Iterator[tuple[ImportedFlow | None, str | None, bool]]:
        assert isinstance(index, int)
        start = schedule.day_start(schedule.days()[index])
        wire_rng, flow_rng = rng_for(self.seed, f"wire:{index}"), rng_for(self.seed, f"flows:{index}")
        caches = PromptCaches()
        for call in _calls_cached(self.seed, self.scale):
            if start <= call.at < start + 86_400:
                exchange = WIRE[call.key.provider].render(call, wire_rng, caches)
                yield build_recorded_flow(flow_rng, call, exchange), None, False


_CALLS: dict[tuple[int, float], list[Call]] = {}


def _calls_cached(seed: int, scale: float) -> list[Call]:
    """The month's calls, drawn once per process (each worker makes several days)."""
    if (seed, scale) not in _CALLS:
        _CALLS.clear()
        _CALLS[(seed, scale)] = company_calls(seed, scale)
    return _CALLS[(seed, scale)]
