"""Shadow and enforce mode: the mitmproxy glue around analysis.enforce.live.

With `shadow_mode` shadow or enforce, every LLM call is decided by the policy file
(`shadow_policy`) before it is sent: the request is read as the recorder will record it
(analysis.enforce.request_record), `LivePolicy.decide` runs the simulator's own decision, and
the decision rows travel with the call to the recorder, which writes them to `decisions`
beside the call's `requests` row. In shadow mode nothing else happens: the pass-through
promise of the recorder holds byte for byte. In enforce mode the verdict acts: the exact
and the semantic cache answer with the stored upstream bytes, a spent budget or a full rate limit answers 429
in the provider's error shape, a routing rule or budget downgrade rewrites the model, and a
call a fallback rule covers is sent through the fallback relay, which rescues it when it fails
(addons.fallback); an answered or changed response carries `x-llm-shadow-decision`.

When the call ends (`response`, `error`), its outcome and cost are read as the recorder
records them (analysis.enforce.settlement: the answer parsed and priced by the primary table;
the request's facts are the decision's own, not read again, when the call sent the bytes the
decision read) and `LivePolicy.settle` charges the budgets (and a wrapped key's
own budget, addons.wrapped_keys; a call the fallback relay sent charges both with each of
its attempts too), adds the call's tokens to the rate windows that admitted it
and stores the answer, before the response is released to the
client, so the next call sees the spend. This runs on the event loop: a thread of this process
holds the same interpreter lock, so it kept the loop waiting as long and added a hand-off to
every call (docs/benchmarks.md); the full row (both price tables, contents) is made by the
recorder's worker process. A call whose settlement would change nothing (no budget applies, no
answer to store) is not read at all.

Budget alerts (`alert_at`) fire after the charge that reaches them, in every mode: with
`shadow_mode` observe and a policy, only the policy's alerting budgets run, to count spend and
warn; nothing is decided or changed. Alerts are logged and POSTed to their webhook from a
background thread (analysis.enforce.webhook), counted in the status file.

Fail-open: a decision or a settlement that raises is counted (`llm-shadow: decision_error`,
logged once per kind) and the call passes unchanged. SIGHUP reloads the policy file; a file
that does not load keeps the running policy and says why.
"""

import asyncio
import json
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.net.http import status_codes

from addons.fallback import FallbackActor
from addons.hosts import pretty_host
from addons.redirect import rewrite_model, send_to
from analysis.enforce.alerts import slack_payload
from analysis.enforce.live import DEFAULT_CACHE_BYTES, LOOKUP_TIMEOUT, MODES, LivePolicy, Verdict
from analysis.enforce.request_record import RequestSide, request_record
from analysis.enforce.settlement import settlement_cost
from analysis.enforce.webhook import WebhookSender
from analysis.parsers.detect import detect
from analysis.pricing.check import Pricing
from analysis.pricing.files import PriceFileError
from analysis.pricing.table import PriceTable
from analysis.recording.accounting import CallCost
from analysis.recording.capture import (
    FLOW_ANSWERED_BY,
    FLOW_CAPTURE,
    FLOW_DECISIONS,
    FLOW_ID,
    FLOW_IDENTITY,
    Capture,
)
from analysis.recording.settings import RecorderSettings
from analysis.recording.sink import Problems
from analysis.simulate.alerts import Alert, alert_line
from analysis.simulate.policy import PolicyError, load_policy
from analysis.simulate.semantic import SemanticIndex
from analysis.simulate.state import MemoryBackend
from analysis.store.datadir import Store, StoreError, new_id, new_instance_name
from analysis.store.modes import create_private_file, make_dir

log = logging.getLogger("llm_shadow")

DECISION_HEADER = "x-llm-shadow-decision"
ENFORCER_OPTIONS = {"shadow_policy", "shadow_mode", "shadow_cache_bytes"}
STATUS_SECONDS = 1.0


class Enforcer:
    def __init__(self) -> None:
        self.live: LivePolicy | None = None
        self.backend = MemoryBackend()  # kept across reloads: spend and cached answers survive
        self.problems = Problems(log)
        self.salt = ""
        self.prices: PriceTable | None = None  # the LiteLLM table the policy engine prices with
        self.pricing: Pricing | None = None  # both tables, for the recorded rows (analysis.pricing.check)
        self.settings: RecorderSettings | None = None
        # Each call in flight: its policy, verdict and, when it needs settling, the request as the
        # decision read it (the settlement then reads only the answer).
        self._verdicts: dict[str, tuple[LivePolicy, Verdict, RequestSide | None]] = {}
        self._embed_pool = ThreadPoolExecutor(1, thread_name_prefix="llm-shadow-embed")
        self._embeddings: list[Future] = []  # prompts queued or being embedded
        self._started = False
        self.instance = new_instance_name() + "-policy"
        self._status_dir: Path | None = None
        self._status_written: tuple[dict[str, int], dict[str, int]] | None = None
        self._status_timer: asyncio.TimerHandle | None = None
        self.sender: WebhookSender | None = None  # budget alerts' webhooks, started when a policy has one
        self.fallback = FallbackActor()  # [[fallback]] rules (addons.fallback)

    def load(self, loader):
        loader.add_option(
            "shadow_policy", str, "", "Policy file (TOML) that decides each call in shadow or enforce mode."
        )
        loader.add_option(
            "shadow_mode",
            str,
            "observe",
            "observe: record only (with a policy: its budget alerts too); shadow: decide and log every call, "
            "change nothing; enforce: decisions act.",
        )
        loader.add_option(
            "shadow_cache_bytes",
            int,
            DEFAULT_CACHE_BYTES,
            "Bytes of upstream answers each cache (exact, semantic) keeps in enforce mode (LRU out first).",
        )

    def configure(self, updated):
        if self._started and updated & (ENFORCER_OPTIONS | {"shadow_data"}):
            self.start()

    def running(self):
        if self._started:
            return
        try:
            self.start()
        except exceptions.OptionsError as e:
            log.error(str(e))
            ctx.master.shutdown()
            return
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # no signals here (Windows, or not the main thread): reload by restarting
        if self.live is not None:
            self._status_timer = asyncio.get_running_loop().call_later(STATUS_SECONDS, self._status_tick)

    def start(self) -> None:
        """Load the policy the options name; OptionsError when it cannot be used."""
        o = ctx.options
        self._started = True
        if o.shadow_mode not in MODES:
            raise exceptions.OptionsError(f"llm-shadow: shadow_mode must be one of {', '.join(MODES)}")
        if o.shadow_mode == "observe" and not o.shadow_policy:
            self.live = None
            return
        if not o.shadow_policy:
            raise exceptions.OptionsError(f"llm-shadow: {o.shadow_mode} mode needs a policy file (shadow_policy)")
        try:
            store = Store(o.shadow_data)
            self._status_dir = store.data_dir / "status"
            self.salt = store.salt()
            self.pricing = Pricing.load(store.data_dir)
            self.prices = self.pricing.litellm
        except (StoreError, PriceFileError, OSError) as e:
            raise exceptions.OptionsError(f"llm-shadow: {e}") from e
        self.settings = RecorderSettings(
            data=store.data_dir,
            team_header=o.shadow_team_header,
            feature_header=o.shadow_feature_header,
            user_header=o.shadow_user_header,
            max_body=o.shadow_max_body,
        )
        shared = ctx.master.addons.get("sharedstate")
        if shared is not None:  # --state: memory or Redis, the same object across reloads
            self.backend = shared.get()
        try:
            self.live = self._load_policy()
        except PolicyError as e:
            raise exceptions.OptionsError(f"llm-shadow: policy not loaded: {e}") from e
        self.fallback.verify = not o.ssl_insecure
        self.fallback.max_body = self.settings.max_body
        self.fallback.idle_timeout = float(o.tcp_timeout) if getattr(o, "tcp_timeout", 0) else None
        semantic = self.live.policy.semantic_cache
        if semantic is not None and semantic.embedder != "openai" and self.live.engine.embedder is not None:
            # A local embedder's first call loads its code and tables: pay that now, not on a call.
            self._embed_pool.submit(self.live.engine.embedder.embed, ["llm-shadow warm-up"])
        log.info("llm-shadow: %s mode with policy %s", self.live.mode, o.shadow_policy)

    def _load_policy(self) -> LivePolicy:
        o = ctx.options
        assert self.prices is not None  # start() loaded them
        live = LivePolicy(
            load_policy(o.shadow_policy), o.shadow_mode, self.prices, self.backend, cache_bytes=o.shadow_cache_bytes
        )
        live.on_alert = self._alert
        if live.webhooks and self.sender is None:
            self.sender = WebhookSender()
        return live

    def _alert(self, alert: Alert, url: str | None) -> None:
        """A budget alert fired: log it, and queue it for its webhook (sent by a thread)."""
        log.warning("llm-shadow: alert: %s", alert_line(alert))
        if url is not None and self.sender is not None:
            self.sender.submit(url, slack_payload(alert))

    def reload(self) -> None:
        """SIGHUP: read the policy file again; keep the running policy when it does not load."""
        if self.live is None:
            log.warning("llm-shadow: SIGHUP ignored: observe mode has no policy to reload")
            return
        try:
            self.live = self._load_policy()
        except PolicyError as e:
            self.problems.add("policy_reload_failed")
            log.error("llm-shadow: policy reload failed, keeping the running policy: %s", e)
            return
        log.warning("llm-shadow: policy reloaded from %s", ctx.options.shadow_policy)

    def problem_counts(self) -> dict[str, int]:
        """What failed open so far: our own counts and the live policy's, and the budget
        alerts that could not be sent."""
        counts = Counter(self.problems.counts)
        if self.live is not None:
            counts.update(self.live.counts)
        if self.sender is not None:
            for kind in ("failed", "dropped"):
                if self.sender.counts[kind]:
                    counts[f"alert_{kind}"] = self.sender.counts[kind]
        return dict(counts)

    def alert_counts(self) -> dict[str, int]:
        """Budget alerts sent, failed and dropped so far (the status file's `alerts`)."""
        sender = self.sender
        return {k: sender.counts[k] for k in ("sent", "failed", "dropped")} if sender is not None else {}

    def _status_tick(self) -> None:
        self.write_status()
        self._status_timer = asyncio.get_running_loop().call_later(STATUS_SECONDS, self._status_tick)

    def write_status(self) -> None:
        """`<data>/status/<instance>-policy.json`, in the recorder's format, so `stats` shows
        what failed open (written when the counts change)."""
        counts = self.problem_counts()
        alerts = self.alert_counts()
        if self._status_dir is None or (counts, alerts) == self._status_written:
            return
        status = {"instance": self.instance, "pid": os.getpid(), "updated": time.time(), "problems": counts}
        if alerts:
            status["alerts"] = alerts
        try:
            make_dir(self._status_dir)
            tmp = self._status_dir / f".{self.instance}.json.tmp"
            create_private_file(tmp, json.dumps(status).encode())
            os.replace(tmp, self._status_dir / f"{self.instance}.json")
            self._status_written = (counts, alerts)
        except OSError as e:
            self.problems.add("status_unwritable", str(e))

    def done(self):
        if self._status_timer is not None:
            self._status_timer.cancel()
        if self.sender is not None:
            self.sender.close()
        self.write_status()
        self._embed_pool.shutdown(wait=False, cancel_futures=True)
        if self.problems.counts:
            log.warning("llm-shadow: problems while deciding: %s", self.problems.summary())

    # --- hooks

    def request(self, flow: http.HTTPFlow):
        """Decide the call; when its prompt must first be embedded for the semantic cache, an
        awaitable that embeds it in a thread and then decides (mitmproxy awaits what a hook
        returns), so the event loop never embeds."""
        live, settings = self.live, self.settings
        if live is None or settings is None or flow.response is not None:
            return None
        request = flow.request
        host, path = pretty_host(request), request.path  # each a parse in mitmproxy: read once
        recorder = ctx.master.addons.get("recorder")
        target = recorder.target_of(flow) if recorder is not None else None  # as the call is recorded
        if target is None:
            target = detect(host, path, request.headers, request.method)
        if target is None:
            return None
        started = request.timestamp_start  # a property, as are the request's method, headers and content
        try:
            record, side = request_record(
                new_id(started),
                target,
                request.method,
                host,
                path,
                request.headers.fields,
                request.raw_content or b"",
                started,
                salt=self.salt,
                settings=settings,
                count_tokens=live.needs_tokens,
                identity=flow.metadata.get(FLOW_IDENTITY),
                caches=live.cache_rules,
            )
            text = live.text_to_embed(record)
        except Exception as e:  # fail-open: our failure never stops a call
            self.problems.add(f"decision_error:{type(e).__name__}", str(e))
            return None
        if text is not None:
            return self._embed_then_decide(flow, live, record, target.wire_format, text, side)
        return self._decide(flow, live, record, target.wire_format, side=side)

    async def _embed_then_decide(
        self, flow: http.HTTPFlow, live: LivePolicy, record: dict, wire_format: str, text: str, side: RequestSide | None
    ):
        """Embed the prompt in a thread, waiting at most the semantic cache's lookup_timeout_ms;
        slower, the call is decided without the semantic cache (counted as
        semantic_lookup_timeout) and the vector, when it comes, is kept for later calls. A prompt
        still queued behind others when its call goes on is dropped from the queue, so a burst of
        new prompts never leaves a backlog of embeddings nobody waits for."""
        index, embedder, semantic = live.state.semantic, live.engine.embedder, live.policy.semantic_cache
        assert index is not None and embedder is not None and semantic is not None  # text_to_embed found one
        timed_out = False
        self._embeddings = [job for job in self._embeddings if not job.done()]
        queued_behind = bool(self._embeddings)
        job = self._embed_pool.submit(embedder.embed, [text])
        self._embeddings.append(job)
        work = asyncio.wrap_future(job)
        try:
            vectors = await asyncio.wait_for(asyncio.shield(work), semantic.lookup_timeout_ms / 1000)
        except Exception as e:  # failed or slow: decided without the semantic cache
            if work.done() and not work.cancelled() and work.exception() is e:  # the embedder failed
                self.problems.add(f"semantic_embedding_failed:{type(e).__name__}", str(e))
            else:
                self.problems.add(LOOKUP_TIMEOUT, f"a prompt was not embedded within {semantic.lookup_timeout_ms} ms")
                if not (queued_behind and job.cancel()):  # being embedded: keep its vector when it comes
                    work.add_done_callback(lambda done: _register_late(index, text, done))
                timed_out = True
        else:
            try:
                index.register_many([text], vectors)
            except Exception as e:
                self.problems.add(f"semantic_embedding_failed:{type(e).__name__}", str(e))
        if timed_out or text not in index.text_rows:
            record = {**record, "prompt_text": None}
        diverting = self._decide(flow, live, record, wire_format, timed_out, side)
        if diverting is not None:
            await diverting

    def _decide(
        self,
        flow: http.HTTPFlow,
        live: LivePolicy,
        record: dict,
        wire_format: str,
        lookup_timed_out: bool = False,
        side: RequestSide | None = None,
    ) -> Coroutine[Any, Any, None] | None:
        """Decide and act; an awaitable when the call waits for the fallback relay to start."""
        try:
            verdict = live.decide(record, wire_format, lookup_timed_out)
        except Exception as e:  # fail-open: our failure never stops a call
            self.problems.add(f"decision_error:{type(e).__name__}", str(e))
            return None
        metadata = flow.metadata
        metadata[FLOW_ID] = record["id"]
        metadata[FLOW_DECISIONS] = tuple(verdict.rows)
        self._verdicts[flow.id] = (live, verdict, side if verdict.needs_settling else None)
        if verdict.action != "pass":  # else (most calls) nothing to act on: no call
            try:
                self._act(flow, verdict)
            except Exception as e:
                self.problems.add(f"action_error:{type(e).__name__}", str(e))
                metadata.pop(FLOW_ANSWERED_BY, None)
                return None
        if not live.fallbacks:
            return None
        try:  # a fallback rule that acts sends the call through the relay (addons.fallback)
            recorder = ctx.master.addons.get("recorder")
            sink = recorder if recorder is not None and recorder.sink is not None else None  # Recorder.submit
            self.fallback.watch(flow, live, verdict)
            return self.fallback.divert(flow, live, verdict, wire_format, sink, self._settle_relayed)
        except Exception as e:  # fail-open: the call goes upstream as it is
            self.problems.add(f"fallback_error:{type(e).__name__}", str(e))
            return None

    def _act(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        if verdict.action == "answer" and verdict.answer is not None:
            stored = verdict.answer
            body = b"".join(stored.chunks)
            flow.response = _response(stored.status, stored.headers, body, verdict.header)
            flow.metadata[FLOW_ANSWERED_BY] = verdict.answered_by
        elif verdict.action == "refuse" and verdict.refusal is not None:
            refused = verdict.refusal
            headers = tuple((k.encode(), v.encode()) for k, v in refused.headers)
            flow.response = _response(refused.status, headers, refused.body, verdict.header)
            flow.metadata[FLOW_ANSWERED_BY] = verdict.answered_by
        elif verdict.action == "rewrite" and verdict.model_to is not None:
            rewrite_model(flow.request, verdict.model_to)
            if verdict.upstream is not None:
                send_to(flow.request, *verdict.upstream)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        held = self._verdicts.get(flow.id)
        if held is None:
            return
        live, verdict, _ = held
        if verdict.action == "rewrite" and flow.response is not None:
            if DECISION_HEADER not in flow.response.headers:  # a rescued call says fallback=...
                flow.response.headers[DECISION_HEADER] = verdict.header
        try:
            self.fallback.responseheaders(flow, live, verdict)
        except Exception as e:  # fail-open: the failed answer goes on as it came
            self.problems.add(f"fallback_error:{type(e).__name__}", str(e))

    def response(self, flow: http.HTTPFlow) -> None:
        self.fallback.ended(flow)
        self._settle(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.fallback.ended(flow)
        self._settle(flow)

    def _settle_relayed(
        self, flow: http.HTTPFlow, live: LivePolicy, verdict: Verdict, own: Capture, attempts: list[Capture]
    ) -> None:
        """A call the fallback relay sent (addons.fallback), before its answer's last byte is
        released: charge the budgets, and the wrapped key's own budget, with each attempt it
        sent (each a row of its own in `requests`; never cached; also when the client left
        before), then settle the call itself (`own`, its first attempt) as any other, unless
        its end settled it already."""
        keys = ctx.master.addons.get("wrappedkeys")
        charge_key = keys is not None and keys.has_budget(flow)
        settling = verdict.needs_settling
        if settling or charge_key:
            for capture in attempts:
                try:
                    cost = self._cost(capture).cost_usd
                    if settling:
                        live.settle(verdict, False, cost, capture.ended)  # budgets only
                    if charge_key:
                        keys.charge(flow, cost)  # in the window of the client's call, as the budgets
                except Exception as e:  # fail-open: the charge is lost and counted
                    self.problems.add(f"settle_error:{type(e).__name__}", str(e))
        self._settle(flow)

    def _settle(self, flow: http.HTTPFlow) -> None:
        held = self._verdicts.pop(flow.id, None)
        if held is None:
            return
        live, verdict, side = held
        keys = ctx.master.addons.get("wrappedkeys")
        charge_key = keys is not None and keys.has_budget(flow)
        settling = verdict.needs_settling  # a property that reads the decision's facts: read once
        if not (settling or charge_key) or flow.metadata.get(FLOW_ANSWERED_BY):
            return
        capture = flow.metadata.get(FLOW_CAPTURE)
        if capture is None:
            self.problems.add("settle_without_capture", "the recorder kept no copy of the call; state not updated")
            return
        try:
            cost = self._cost(capture, side)
            if settling:
                complete = cost.outcome == "ok" and not capture.response_truncated  # never cache part of an answer
                live.settle(
                    verdict,
                    complete,
                    cost.cost_usd,
                    capture.ended,
                    capture.status,
                    capture.response_headers,
                    tuple([chunk for _, chunk in capture.chunks]),
                    tokens=cost.tokens,
                )
            if charge_key:
                keys.charge(flow, cost.cost_usd)  # the wrapped key's own budget
        except Exception as e:  # fail-open: the call goes on; its charge is lost and counted
            self.problems.add(f"settle_error:{type(e).__name__}", str(e))

    def _cost(self, capture: Capture, side: RequestSide | None = None) -> CallCost:
        """The call's outcome, cost_usd and tokens, as its `requests` row will say. `side`: the
        request as it was read when decided (analysis.enforce.settlement)."""
        assert self.settings is not None and self.pricing is not None  # set before any call is decided
        return settlement_cost(capture, self.pricing, self.settings, side)


def _register_late(index: SemanticIndex, text: str, done: asyncio.Future) -> None:
    """An embedding that came after its call went on: keep the vector, so the same prompt is
    looked up without waiting next time (on the event loop: the index is not shared with threads)."""
    if not done.cancelled() and done.exception() is None:
        index.register_many([text], done.result())


def _response(status: int, headers, body: bytes, decision: str | None) -> http.Response:
    """A response made by the proxy with these exact body bytes (already content-encoded as
    the headers say), its length and `x-llm-shadow-decision` last. A cache hit is answered from
    here, so it is built directly: not with `Response.make`, which encodes an empty body first,
    nor with `Response(...)`, whose message data type-checks every field while Python runs
    without -O (35 us in-process, a tenth of a hit's own work; these types are known).
    tests/test_enforce_glue.py checks it equals the `Response(...)` of the same values."""
    fields = (*headers, (b"content-length", str(len(body)).encode()))
    if decision:
        fields += ((DECISION_HEADER.encode(), decision.encode()),)
    now = time.time()
    data = object.__new__(http.ResponseData)
    data.http_version, data.status_code = b"HTTP/1.1", status
    data.reason = status_codes.RESPONSES.get(status, "").encode()
    data.headers, data.content, data.trailers = http.Headers(fields), body, None
    data.timestamp_start = data.timestamp_end = now
    response = object.__new__(http.Response)
    response.data = data
    return response
