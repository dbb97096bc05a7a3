"""Benchmark: what each step shadow and enforce mode add to a call costs, in-process.

`bench/enforce.py` measures the whole proxy; this one times the steps of the enforcer's own work
on one call (addons/enforcer.py), each run many times in a loop, so a change to one step is
seen apart from the rest and from the machine's load:
  record   detect the wire format and read the request as the recorder will (request_record)
  decide   LivePolicy.decide: the simulator's decision on one request, and its decision rows
  cost     the settlement's reading of the ended call: its outcome, cost and tokens (settlement_cost)
  settle   LivePolicy.settle: charge the budgets, add to the rate windows, store the answer
with the policy of bench/enforce.py (an exact cache, a team budget, a rate limit) and its
passing call (a JSON chat call the cache may not answer), in enforce mode. Figures are the
best of `--repeat` loops of `--number` calls, in microseconds per call. In a proxy each step
costs two to three times more than here, where a loop keeps every cache warm; the ratios
between two checkouts hold.

    python bench/enforce_steps.py [--number 5000] [--repeat 5]
"""

import argparse
import json
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.enforce.live import LivePolicy  # noqa: E402
from analysis.enforce.request_record import request_record  # noqa: E402
from analysis.enforce.settlement import settlement_cost  # noqa: E402
from analysis.parsers.detect import detect  # noqa: E402
from analysis.pricing.check import Pricing  # noqa: E402
from analysis.recording.capture import Capture  # noqa: E402
from analysis.recording.settings import RecorderSettings  # noqa: E402
from analysis.simulate.policy import load_policy  # noqa: E402
from analysis.simulate.state import MemoryBackend  # noqa: E402
from bench.enforce import PASSING, POLICY  # noqa: E402

HOST, PATH = "127.0.0.1", "/v1/chat/completions"
HEADERS = (
    (b"host", HOST.encode()),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer sk-bench"),
    (b"x-shadow-team", b"bench"),
    (b"content-length", str(len(PASSING)).encode()),
)
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
    }
).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per loop")
    parser.add_argument("--repeat", type=int, default=5, help="loops per step (the best is reported)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="llm-shadow-bench-steps-"))
    (scratch / "policy.toml").write_text(POLICY)
    settings = RecorderSettings(scratch / "data")
    pricing = Pricing.load(None)
    live = LivePolicy(load_policy(str(scratch / "policy.toml")), "enforce", pricing.litellm, MemoryBackend())

    def record():
        target = detect(HOST, PATH, {"content-type": "application/json"}, "POST")
        assert target is not None
        return target, *request_record(
            "bench-id",
            target,
            "POST",
            HOST,
            PATH,
            HEADERS,
            PASSING,
            time.time(),
            salt="s",
            settings=settings,
            caches=live.cache_rules,  # as addons/enforcer.py reads a request
        )

    target, the_record, side = record()
    verdict = live.decide(the_record, target.wire_format)
    started = time.time()
    capture = Capture(
        target=target,
        method="POST",
        host=HOST,
        path=PATH,
        request_headers=HEADERS,
        request_body=PASSING,
        status=200,
        response_headers=((b"content-type", b"application/json"),),
        chunks=[(started + 0.001, ANSWER)],
        started=started,
        ended=started + 0.002,
        outcome="ok",
        id="bench-id",
    )

    def cost():
        return settlement_cost(capture, pricing, settings, side)

    the_cost = cost()
    assert the_cost.cost_usd, "the bench's answer must be priced"

    def settle():
        live.settle(verdict, True, the_cost.cost_usd, capture.ended, 200, capture.response_headers, (ANSWER,), 16)

    steps = {
        "record": record,
        "decide": lambda: live.decide(the_record, target.wire_format),
        "cost": cost,
        "settle": settle,
    }
    total = 0.0
    print(f"{'step':<10}{'us/call':>10}")
    for name, step in steps.items():
        best = min(timeit.repeat(step, number=args.number, repeat=args.repeat)) / args.number * 1e6
        total += best
        print(f"{name:<10}{best:>10.1f}")
    print(f"{'total':<10}{total:>10.1f}")


if __name__ == "__main__":
    main()
