"""What settling a live call reads of it: its outcome, cost_usd and tokens, as its `requests`
row will say them (analysis.recording.accounting.call_cost).

Enforce mode settles a call on the proxy's event loop, before its answer is released
(addons.enforcer), so this reads no more than it must: when the call sent the very bytes its
decision read (`RequestSide.read_from`), only the answer is read (`answer_exchange`), into the
request-side facts read then; otherwise (a rewritten model, a relayed attempt, a wire format
whose parser reads the request and the answer together) the whole call, as the recorder does,
from the headers that reading looks at alone (`read_exchange`).
"""

from analysis.enforce.request_record import RequestSide
from analysis.pricing.check import Pricing
from analysis.recording.accounting import CallCost, call_cost
from analysis.recording.capture import Capture, answer_exchange, read_exchange
from analysis.recording.settings import RecorderSettings


def settlement_cost(
    capture: Capture, pricing: Pricing, settings: RecorderSettings, side: RequestSide | None = None
) -> CallCost:
    """The call's outcome, cost_usd and tokens (none of which depends on whose key paid:
    `read_exchange` fingerprints no key). `side`: the request as it was read when decided;
    used only when `capture` sent those very bytes."""
    max_body = settings.max_body
    if side is not None and side.read_from(capture, max_body):
        return call_cost(answer_exchange(capture), pricing, max_body, side.parsed)
    return call_cost(read_exchange(capture), pricing, max_body)
