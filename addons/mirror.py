"""Shadow-mode mirroring: the mitmproxy glue around analysis.enforce.mirror.

After a call's answer has gone to the client (`response`), a routing rule that only decided
(shadow mode, or an entry with `mode = "shadow"`) and has `mirror` above 0 may pick the call;
its body is queued for `Mirror`'s threads, which send it to the rule's target model. Nothing is
awaited on the event loop and nothing changes in the flow: the client's bytes and timing are
those of observe mode. A failure here is counted and logged, never raised into the proxy.
The policy and price table are the enforcer's (addons.enforcer), read when they change.
"""

import logging

from mitmproxy import ctx, http

from addons.enforcer import Enforcer
from analysis.enforce.mirror import Mirror
from analysis.recording.capture import FLOW_DECISIONS, FLOW_ID

log = logging.getLogger("llm_shadow")

FORWARDED_HEADERS = ("authorization", "openai-organization", "openai-project")


class Mirroring:
    def __init__(self) -> None:
        self.mirror: Mirror | None = None
        self._policy: object | None = None  # the policy object the mirror was built for

    def _current(self) -> Mirror | None:
        enforcer = ctx.master.addons.get("enforcer")
        live = enforcer.live if isinstance(enforcer, Enforcer) else None
        if live is None or enforcer.prices is None:
            return None
        if live.policy is not self._policy:  # first call, or the policy was reloaded
            if self.mirror is not None:
                self.mirror.close(wait=0.0)
            self._policy = live.policy
            wanted = any(rule.mirror > 0 for rule in live.policy.routing)
            self.mirror = Mirror(live.policy, ctx.options.shadow_data, enforcer.prices) if wanted else None
        return self.mirror

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._maybe_mirror(flow)
        except Exception as e:  # fail-open: mirroring never touches the call
            log.warning(f"llm-shadow: mirror_error:{type(e).__name__}: {e}")

    def _maybe_mirror(self, flow: http.HTTPFlow) -> None:
        for routed in flow.metadata.get(FLOW_DECISIONS, ()):  # most calls: no routing row, nothing to do
            if routed["kind"] == "routing" and routed["mode"] == "shadow":
                break
        else:
            return
        request_id = flow.metadata.get(FLOW_ID)
        if request_id is None or flow.response is None or flow.response.status_code != 200:
            return
        mirror = self._current()
        if mirror is None or not mirror.wants(routed["policy"], request_id):
            return
        headers = {name: flow.request.headers[name] for name in FORWARDED_HEADERS if name in flow.request.headers}
        mirror.submit(request_id, routed["policy"], flow.request.url, flow.request.raw_content or b"", headers)

    def done(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
            counts = dict(self.mirror.counts)
            if counts:
                log.info(f"llm-shadow: mirrored requests: {counts}")
