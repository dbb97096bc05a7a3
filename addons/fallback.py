"""Fallback rules on live calls: the mitmproxy glue around analysis.enforce.fallback.

The enforcer (addons.enforcer) calls two hooks of `FallbackActor`:

- `responseheaders`: the upstream's status is known and nothing has reached the client yet.
  When the call failed in a way its fallback rule handles (a 429, a 5xx), the rule's plan is
  decided (analysis.simulate.fallback, the simulator's code). In shadow mode, or for a rule
  with `mode = "shadow"`, the plan is only logged (a `decisions` row beside the call's own)
  and the failed answer goes on untouched. In enforce mode the failed answer's body is held
  back (not streamed), so that it can still be replaced.
- `response` (awaited before the answer is released): the attempts are sent, with backoff, off
  nothing but the event loop's own waiting. Each attempt becomes a call of its own in
  `requests` (through the recorder's sink) with a `decisions` row (action retry or fallback,
  `matched_id` the attempt's row); the first that answers replaces the failed answer, with
  `x-llm-shadow-decision: fallback=<action>; policy=<name>`. When none answers, the client
  gets the upstream's failed answer, marked `fallback=exhausted`.

A call that failed before any answer (connect error, timeout) ends in mitmproxy's own error
answer, which this glue cannot replace: it is not rescued live (the simulator says so too).
"""

import logging
import os
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import http

from addons.redirect import rewrite_model, send_to
from analysis.enforce.decisions import header_value
from analysis.enforce.fallback import Outgoing, Sent, carry_out, reason
from analysis.enforce.live import REPLAY_DROPPED_HEADERS, LivePolicy, Verdict
from analysis.parsers.detect import detect
from analysis.recording.capture import FLOW_DECISIONS, FLOW_IDENTITY, SECRET_HEADERS, Capture
from analysis.simulate.enforceable import model_family, wire_family
from analysis.simulate.fallback import Attempt, Plan, decision_row, planned_row
from analysis.store.datadir import new_id

log = logging.getLogger("llm_shadow")

FLOW_FALLBACK = "llm_shadow.fallback"  # flow.metadata: the plan enforce mode will carry out
# Request headers an attempt does not copy: framing and hop-by-hop, set again for its own body.
NOT_COPIED = {
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "host",
}


@dataclass
class Held:
    """A failed call whose plan enforce mode will carry out."""

    live: LivePolicy
    verdict: Verdict
    plan: Plan
    wire_format: str


class FallbackActor:
    def __init__(self) -> None:
        self.rng = random.Random()
        self._client: httpx.AsyncClient | None = None
        self.verify = True

    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made on the proxy's event loop, where it is used
            self._client = httpx.AsyncClient(trust_env=False, verify=self.verify, follow_redirects=False)
        return self._client

    def responseheaders(self, flow: http.HTTPFlow, live: LivePolicy, verdict: Verdict) -> None:
        response = flow.response
        if response is None or not live.fallbacks or verdict.action in ("answer", "refuse"):
            return
        plan = live.fallbacks.plan(verdict.record, response.status_code, None)
        if plan is None:
            return
        if live.acts(plan.rule.name):
            request = flow.request
            target = detect(request.pretty_host, request.path, request.headers, request.method)
            response.stream = False  # hold the failed body back: nothing has reached the client
            flow.metadata[FLOW_FALLBACK] = Held(live, verdict, plan, target.wire_format if target else "")
            return
        row = planned_row(plan, verdict.record["id"], verdict.record["ts"], "shadow")
        flow.metadata[FLOW_DECISIONS] = (*flow.metadata.get(FLOW_DECISIONS, ()), row)

    async def response(self, flow: http.HTTPFlow, sink: Any) -> tuple[Held | None, list[Capture]]:
        """Carry out the held plan; the plan and the attempts sent, as the calls submitted to
        `sink` (the enforcer charges the budgets with their cost)."""
        held: Held | None = flow.metadata.pop(FLOW_FALLBACK, None)
        if held is None or flow.response is None:
            return None, []
        sent = await carry_out(
            held.plan, lambda a: self.build(flow.request, a, held.wire_format), self.client(), self.rng
        )
        calls = [self._record(flow, held, attempt, i == 0, sink) for i, attempt in enumerate(sent)]
        rescued = next((s for s in sent if s.answered), None)
        if rescued is not None:
            kept = tuple((k, v) for k, v in rescued.headers if k.lower() not in REPLAY_DROPPED_HEADERS)
            replacement = http.Response.make(rescued.status or 200, b"", http.Headers(list(kept)))
            replacement.raw_content = rescued.body
            replacement.headers["content-length"] = str(len(rescued.body))
            replacement.timestamp_start, replacement.timestamp_end = rescued.started, rescued.ended
            replacement.headers["x-llm-shadow-decision"] = header_value(
                "fallback", rescued.attempt.action, held.plan.rule.name
            )
            flow.response = replacement
        else:
            flow.response.headers["x-llm-shadow-decision"] = header_value("fallback", "exhausted", held.plan.rule.name)
        return held, [c for c in calls if c is not None]

    @staticmethod
    def build(request: http.Request, attempt: Attempt, wire_format: str) -> Outgoing | None:
        """The request of `attempt`: the client's, for the attempt's model, on the attempt's
        upstream with its key (addons.redirect, as routing does); None when the model speaks
        another wire format."""
        if attempt.action == "fallback" and wire_format and model_family(attempt.model) != wire_family(wire_format):
            return None  # a retry resends the request as it was
        copy = request.copy()
        if attempt.model and attempt.action == "fallback":
            rewrite_model(copy, attempt.model)
        if attempt.url is not None:
            send_to(copy, attempt.url, os.environ.get(attempt.api_key_env) if attempt.api_key_env else None)
        headers = tuple((k, v) for k, v in copy.headers.fields if k.decode("latin-1").lower() not in NOT_COPIED)
        return Outgoing(copy.method, copy.url, headers, copy.raw_content or b"")

    def _record(self, flow: http.HTTPFlow, held: Held, sent: Sent, first: bool, sink: Any) -> Capture | None:
        """The attempt as a call of its own in `requests`, with its row in `decisions`."""
        request = sent.request
        parts = urlsplit(request.url)
        host, path = parts.hostname or "", parts.path + (f"?{parts.query}" if parts.query else "")
        headers = http.Headers(list(request.headers))
        target = detect(host, path, headers, request.method)
        attempt_id = new_id(sent.started)
        row = decision_row(
            held.verdict.record["id"],
            held.verdict.record["ts"],
            "enforce",
            held.plan.rule.name,
            sent.attempt.action,
            sent.attempt.model,
            attempt_id,
            reason(held.plan, sent, first),
        )
        if target is None or sink is None:
            return None

        # Recorded with the key of the call that failed (an attempt on another upstream sends that
        # upstream's key): its row is attributed to whoever made the call, as the failed row is.
        def secret(name: bytes) -> bool:
            return name.decode("latin-1").lower() in SECRET_HEADERS

        recorded_headers = tuple((k, v) for k, v in request.headers if not secret(k))
        recorded_headers += tuple((k, v) for k, v in flow.request.headers.fields if secret(k))
        capture = Capture(
            target=target,
            method=request.method,
            host=host,
            path=path,
            request_headers=recorded_headers,
            request_body=request.body,
            status=sent.status,
            response_headers=sent.headers,
            chunks=[(sent.ended - sent.started, sent.body)] if sent.body else [],
            started=sent.started,
            ended=sent.ended,
            outcome=sent.outcome,
            error=sent.error,
            id=attempt_id,
            decisions=(row,),
            identity=flow.metadata.get(FLOW_IDENTITY),
        )
        sink.submit(capture)
        return capture
