"""Fallback rules on live calls: the mitmproxy glue around analysis.enforce.fallback.

The enforcer (addons.enforcer) calls `FallbackActor` at three points of a call:

- `divert` (when the call is decided, before it is sent): a call whose rule acts (enforce mode,
  the rule not in `mode = "shadow"`) is not sent upstream by mitmproxy but to the proxy's relay
  (analysis.enforce.relay). There the proxy sends the client's call itself and, when it fails in
  a way the rule handles (a 429, a 5xx, no answer within the rule's `timeout_s`, a connection
  that could not be made), carries out the rule's plan (analysis.simulate.fallback, the
  simulator's code): retries after a backoff, then the chain. The first attempt that answers
  (2xx) is handed on to the client as it arrives, a stream event by event, with
  `x-llm-shadow-decision: fallback=<action>; policy=<name>`. When none answers, the client gets
  the call's own failed answer (or, when it had none, a 502 or 504 in the provider's error
  shape), marked `fallback=exhausted`. Nothing is sent again once a byte of an answer went to
  the client: an answer that breaks after that reaches the client broken, as it would have
  without the proxy. A call that answered, or failed in a way the rule does not handle, is
  handed on as it came (a connection that could not be made is then cut, so the client gets
  mitmproxy's own 502 as before).
  The client's call is recorded as its first attempt (the call's own row in `requests`, with
  its decisions), each attempt as a call of its own with a `decisions` row (action retry or
  fallback, `matched_id` the attempt's row), and the budgets (and a wrapped key's own budget,
  addons.wrapped_keys) are charged with them before the answer's last byte is released.
- `responseheaders`, and `error_rows` (through the recorder, when the call ended without an
  answer): a rule that only watches (shadow mode, or `mode = "shadow"`) logs its plan for a
  failure it handles as one `decisions` row beside the call's own; the call goes on untouched,
  byte for byte.
- `ended`: a call that ended before reaching the relay forgets its job.
"""

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import http
from mitmproxy.net.http import status_codes

from addons.hosts import pretty_host
from addons.redirect import rewrite_model, send_to
from analysis.enforce.decisions import header_value
from analysis.enforce.fallback import Outgoing, Sent, carry_out, reason, send
from analysis.enforce.live import LivePolicy, Verdict
from analysis.enforce.refusals import upstream_failure
from analysis.enforce.relay import Relay, Responder
from analysis.parsers.detect import detect
from analysis.recording.capture import (
    FLOW_CAPTURE,
    FLOW_DECISIONS,
    FLOW_ERROR_DECISIONS,
    FLOW_ID,
    FLOW_IDENTITY,
    FLOW_RELAYED,
    SECRET_HEADERS,
    Capture,
)
from analysis.recording.settings import DEFAULT_MAX_BODY
from analysis.simulate.enforceable import model_family, wire_family
from analysis.simulate.fallback import Attempt, Plan, decision_row, planned_row
from analysis.simulate.policy import FallbackRule
from analysis.store.datadir import new_id

log = logging.getLogger("llm_shadow")

FLOW_FALLBACK = "llm_shadow.fallback"  # flow.metadata: the relay's token of a call sent through it
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
DECISION_HEADER = b"x-llm-shadow-decision"
# The settlement of a relayed call: its decision, its own capture and the attempts' (addons.enforcer).
Settle = Callable[[http.HTTPFlow, LivePolicy, Verdict, Capture, list[Capture]], None]


@dataclass
class Held:
    """A call sent through the relay: what its rescue needs."""

    flow: http.HTTPFlow
    original: http.Request  # the client's request, as mitmproxy would have sent it
    live: LivePolicy
    verdict: Verdict
    rule: FallbackRule
    wire_format: str
    sink: Any  # what records a call: the recorder (`submit`), None when nothing records
    settle: Settle


class FallbackActor:
    def __init__(self) -> None:
        self.rng = random.Random()
        self._client: httpx.AsyncClient | None = None
        self.verify = True
        self.idle_timeout: float | None = None  # mitmproxy's tcp_timeout: a silent upstream's limit
        self.max_body = DEFAULT_MAX_BODY  # bytes of an answer kept for its row (shadow_max_body)
        self.relay = Relay()
        self._starting: asyncio.Task | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made on the proxy's event loop, where it is used
            # mitmproxy's log handler takes every record at DEBUG: httpcore's trace of each request
            # (a dozen records) and httpx's line per request would each run every addon's log hook.
            for name in ("httpx", "httpcore"):
                logging.getLogger(name).setLevel(logging.WARNING)
            self._client = httpx.AsyncClient(
                trust_env=False,
                verify=self.verify,
                follow_redirects=False,
                timeout=httpx.Timeout(None, read=self.idle_timeout),  # the rule's timeout_s: analysis.enforce
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            )
        return self._client

    # --- enforce mode: through the relay

    @staticmethod
    def enforced_rule(live: LivePolicy, verdict: Verdict) -> FallbackRule | None:
        """The fallback rule that acts on this call, if any (the call goes upstream)."""
        if not live.fallbacks or verdict.action in ("answer", "refuse"):
            return None
        rule = live.fallbacks.rule_for(verdict.record)
        return rule if rule is not None and live.acts(rule.name) else None

    def divert(
        self, flow: http.HTTPFlow, live: LivePolicy, verdict: Verdict, wire_format: str, sink: Any, settle: Settle
    ) -> Coroutine[Any, Any, None] | None:
        """Send the call through the relay when a rule acts on it; an awaitable when the relay
        must start first."""
        rule = self.enforced_rule(live, verdict)
        if rule is None:
            return None
        held = Held(flow, flow.request, live, verdict, rule, wire_format, sink, settle)
        if self.relay.port:
            self._divert(held)
            return None
        return self._start_then_divert(held)

    async def _start_then_divert(self, held: Held) -> None:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self.relay.start())
        await self._starting
        self._divert(held)

    def _divert(self, held: Held) -> None:
        flow = held.flow
        token, url = self.relay.add(lambda responder: self._run(held, responder))
        flow.metadata[FLOW_FALLBACK] = token
        flow.metadata[FLOW_RELAYED] = held.original
        flow.request = http.Request.make("POST", url, b"")

    def ended(self, flow: http.HTTPFlow) -> None:
        """The call ended: forget its job if the relay never ran it."""
        token = flow.metadata.pop(FLOW_FALLBACK, None)
        if token is not None:
            self.relay.discard(token)
        original = flow.metadata.get(FLOW_RELAYED)
        if original is not None:
            flow.request = original

    async def _run(self, held: Held, responder: Responder) -> None:
        """The relay's job: the client's call, its rescue, and the answer written back."""
        held.flow.metadata.pop(FLOW_FALLBACK, None)
        try:
            await self._rescue(held, responder)
        except (ConnectionError, RuntimeError):
            responder.abort()  # the relay's connection closed under us: the client left
        except Exception as e:  # a failure of ours: counted; the client gets mitmproxy's 502
            log.warning("llm-shadow: fallback_error: %s: %s", type(e).__name__, e)
            held.live.counts[f"fallback_error:{type(e).__name__}"] += 1
            held.flow.request = held.original
            responder.abort()

    async def _rescue(self, held: Held, responder: Responder) -> None:
        original, rule = held.original, held.rule
        first_timeout = rule.timeout_s if "timeout" in rule.on else self.idle_timeout
        own = self.build(original, None, held.wire_format)
        assert own is not None  # the client's own call is always sent
        first = await send(self.client(), own, first_timeout, None, True)
        plan: Plan | None = None
        sent: list[Sent] = []
        if not first.answered:
            plan = held.live.fallbacks.plan(held.verdict.record, first.status, first.outcome)
            if plan is not None:
                sent = await carry_out(
                    plan, lambda a: self.build(original, a, held.wire_format), self.client(), self.rng, keep_open=True
                )
        answer = first if first.answered else next((s for s in sent if s.answered), None)
        if answer is not None:
            action = answer.attempt.action if answer.attempt is not None else None
            decision = header_value("fallback", action, rule.name) if action is not None else None
            done = await self._deliver(held, responder, answer, decision, first, sent, plan)
            if done:
                await responder.end()
            else:
                responder.abort()
            return
        self._finish(held, first, sent, plan)
        exhausted = header_value("fallback", "exhausted", rule.name).encode() if plan is not None else None
        if first.status is not None:
            headers = first.headers + (((DECISION_HEADER, exhausted),) if exhausted else ())
            await responder.whole(first.status, _reason(first.status), headers, first.body)
            await responder.end()
        elif exhausted is not None:
            status = 504 if first.outcome == "timeout" else 502
            failure = upstream_failure(held.wire_format, status, f"llm-shadow: no upstream answered: {first.error}")
            headers = tuple((k.encode(), v.encode()) for k, v in failure.headers) + ((DECISION_HEADER, exhausted),)
            await responder.whole(status, _reason(status), headers, failure.body)
            await responder.end()
        else:
            responder.abort()  # a failure the rule does not handle: mitmproxy answers it as before

    async def _deliver(
        self,
        held: Held,
        responder: Responder,
        answer: Sent,
        decision: str | None,
        first: Sent,
        sent: list[Sent],
        plan: Plan | None,
    ) -> bool:
        """Hand `answer`'s body on as it arrives; record and settle the call before its last
        byte is released. Whether the answer came whole."""
        response = answer.stream
        assert response is not None  # kept open by send
        headers = answer.headers + (((DECISION_HEADER, decision.encode()),) if decision else ())
        chunks: list[tuple[float, bytes]] = []  # what is recorded: the first `max_body` bytes
        body: list[bytes] = []  # an answer with a length is handed on whole, as mitmproxy does
        size, truncated = 0, False
        outcome, error, whole = "ok", None, True
        length = response.headers.get("content-length")
        try:
            if length is None:
                responder.head(answer.status or 200, _reason(answer.status or 200), headers)
            async for chunk in response.aiter_raw():
                if size < self.max_body:
                    chunks.append((time.time(), chunk))
                    size += len(chunk)
                else:
                    truncated = True
                if length is None:
                    await responder.send(chunk)
                else:
                    body.append(chunk)
        except httpx.HTTPError as e:  # the upstream broke off after the answer started
            outcome, error, whole = "upstream_cut", str(e) or type(e).__name__, False
        except (ConnectionError, RuntimeError) as e:  # mitmproxy closed the relay's connection: the client left
            outcome, error, whole = "client_disconnected", str(e) or type(e).__name__, False
        finally:
            await response.aclose()
        done = replace(
            answer,
            stream=None,
            chunks=tuple(chunks),
            ended=time.time(),
            outcome=outcome,
            error=error,
            truncated=truncated,
        )
        if answer is first:
            first = done
        else:
            sent = [done if s is answer else s for s in sent]
        self._finish(held, first, sent, plan)
        if whole and length is not None:
            await responder.whole(answer.status or 200, _reason(answer.status or 200), headers, b"".join(body))
        return whole

    def _finish(self, held: Held, first: Sent, sent: list[Sent], plan: Plan | None) -> None:
        """Record the call and its attempts, settle them, give the flow its request back."""
        flow = held.flow
        flow.request = held.original
        try:
            own = self._own_capture(held, first)
            attempts = [c for i, s in enumerate(sent) if (c := self._record(held, plan, s, i == 0)) is not None]
            if FLOW_CAPTURE in flow.metadata:  # the recorder recorded the call already (it ended early)
                own = flow.metadata[FLOW_CAPTURE]
            elif own is not None:
                flow.metadata[FLOW_CAPTURE] = own
                if held.sink is not None:
                    held.sink.submit(own)
            if own is not None:
                held.settle(flow, held.live, held.verdict, own, attempts)
        except Exception as e:  # fail-open: the answer goes on; what was lost is counted by the caller
            log.warning("llm-shadow: fallback_error: %s: %s", type(e).__name__, e)
            held.live.counts[f"fallback_error:{type(e).__name__}"] += 1

    def _own_capture(self, held: Held, first: Sent) -> Capture | None:
        """The client's call as the recorder would have recorded it."""
        request, flow = held.original, held.flow
        target = detect(pretty_host(request), request.path, request.headers, request.method)
        if target is None:
            return None
        started = request.timestamp_start
        return Capture(
            target=target,
            method=request.method,
            host=pretty_host(request),
            path=request.path,
            request_headers=request.headers.fields,
            request_body=request.raw_content or b"",
            status=first.status,
            response_headers=first.headers,
            chunks=[(at - started, chunk) for at, chunk in first.chunks],
            started=started,
            ended=first.ended,
            outcome=first.outcome,
            error=first.error,
            response_truncated=first.truncated,
            identity=flow.metadata.get(FLOW_IDENTITY),
            id=flow.metadata.get(FLOW_ID),
            decisions=flow.metadata.get(FLOW_DECISIONS, ()),
        )

    @staticmethod
    def build(request: http.Request, attempt: Attempt | None, wire_format: str) -> Outgoing | None:
        """The request of `attempt` (None: the client's own call): the client's, for the
        attempt's model, on the attempt's upstream with its key (addons.redirect, as routing
        does); None when the model speaks another wire format."""
        if attempt is not None and attempt.action == "fallback":
            if wire_format and model_family(attempt.model) != wire_family(wire_format):
                return None  # a retry resends the request as it was
        copy = request.copy()
        if attempt is not None and attempt.model and attempt.action == "fallback":
            rewrite_model(copy, attempt.model)
        if attempt is not None and attempt.url is not None:
            send_to(copy, attempt.url, os.environ.get(attempt.api_key_env) if attempt.api_key_env else None)
        headers = tuple((k, v) for k, v in copy.headers.fields if k.decode("latin-1").lower() not in NOT_COPIED)
        return Outgoing(copy.method, copy.url, headers, copy.raw_content or b"")

    def _record(self, held: Held, plan: Plan | None, sent: Sent, first: bool) -> Capture | None:
        """The attempt as a call of its own in `requests`, with its row in `decisions`."""
        assert plan is not None and sent.attempt is not None  # attempts come from a plan
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
            plan.rule.name,
            sent.attempt.action,
            sent.attempt.model,
            attempt_id,
            reason(plan, sent, first),
        )
        if target is None or held.sink is None:
            return None

        # Recorded with the key of the call that failed (an attempt on another upstream sends that
        # upstream's key): its row is attributed to whoever made the call, as the failed row is.
        def secret(name: bytes) -> bool:
            return name.decode("latin-1").lower() in SECRET_HEADERS

        recorded_headers = tuple((k, v) for k, v in request.headers if not secret(k))
        recorded_headers += tuple((k, v) for k, v in held.original.headers.fields if secret(k))
        capture = Capture(
            target=target,
            method=request.method,
            host=host,
            path=path,
            request_headers=recorded_headers,
            request_body=request.body,
            status=sent.status,
            response_headers=sent.headers,
            chunks=[(at - sent.started, chunk) for at, chunk in sent.chunks],
            started=sent.started,
            ended=sent.ended,
            outcome=sent.outcome,
            error=sent.error,
            response_truncated=sent.truncated,
            id=attempt_id,
            decisions=(row,),
            identity=held.flow.metadata.get(FLOW_IDENTITY),
        )
        held.sink.submit(capture)
        return capture

    # --- shadow: log the plan, change nothing

    def watch(self, flow: http.HTTPFlow, live: LivePolicy, verdict: Verdict) -> None:
        """A call a watching rule covers: if it ends without an answer (timeout, connection
        error), the recorder asks `error_rows` for the plan's row (the recorder records the call
        before the enforcer's `error` hook runs)."""
        if not live.fallbacks or verdict.action in ("answer", "refuse"):
            return
        rule = live.fallbacks.rule_for(verdict.record)
        if rule is None or live.acts(rule.name) or not any(k in rule.on for k in ("timeout", "connect_error")):
            return
        flow.metadata[FLOW_ERROR_DECISIONS] = lambda status, outcome: self.error_rows(live, verdict, status, outcome)

    @staticmethod
    def error_rows(live: LivePolicy, verdict: Verdict, status: int | None, outcome: str) -> tuple[dict, ...]:
        plan = live.fallbacks.plan(verdict.record, status, outcome)
        if plan is None or live.acts(plan.rule.name):
            return ()
        return (planned_row(plan, verdict.record["id"], verdict.record["ts"], "shadow"),)

    def responseheaders(self, flow: http.HTTPFlow, live: LivePolicy, verdict: Verdict) -> None:
        response = flow.response
        if response is None or not live.fallbacks or verdict.action in ("answer", "refuse"):
            return
        if FLOW_RELAYED in flow.metadata:  # the relay decided already, and records the call
            if "content-length" not in response.headers:
                response.stream = True  # hand each piece the relay writes on at once
            return
        plan = live.fallbacks.plan(verdict.record, response.status_code, None)
        if plan is None or live.acts(plan.rule.name):
            return
        row = planned_row(plan, verdict.record["id"], verdict.record["ts"], "shadow")
        flow.metadata[FLOW_DECISIONS] = (*flow.metadata.get(FLOW_DECISIONS, ()), row)


def _reason(status: int) -> bytes:
    return status_codes.RESPONSES.get(status, "").encode()
