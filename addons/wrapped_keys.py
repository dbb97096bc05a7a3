"""Wrapped keys on live traffic: swap in the real key, attribute the call, refuse bad keys.

In shadow and enforce mode (`shadow_mode`), a request whose usual key header (`Authorization:
Bearer`, `x-api-key`, `x-goog-api-key`, `api-key`) holds a wrapped key (`lsk-...`,
analysis.shared_state.keys) is changed before anything else sees it: the header gets the real
provider key, read from the environment variable the wrapped key names (the proxy's
environment, as it was when the proxy started), and the call is attributed to the key's team,
feature and user with `key_id` = `lsk-<id>` (flow.metadata[FLOW_IDENTITY], which the recorder
and enforce mode read). The application never holds the real key; the upstream never sees the
wrapped one.

A key that is unknown, revoked or expired gets a 401, and one whose budget is spent a 429, in
the error shape of the provider the client speaks, without contacting the provider. Requests
with a raw provider key pass unchanged, and in observe mode nothing is looked at.

The registry is reread at most every half second (so a revocation reaches every proxy within a
second); when it cannot be read (Redis down) the last records serve, counted.
"""

import json
import logging
import os
import time

from mitmproxy import ctx, exceptions, http

from addons.hosts import pretty_host
from analysis.parsers.detect import detect
from analysis.recording.capture import FLOW_ANSWERED_BY, FLOW_IDENTITY, Identity
from analysis.recording.sink import Problems
from analysis.shared_state.backend import RedisBackend
from analysis.shared_state.keys import KEY_PREFIX, FileKeys, KeyRegistry, RedisKeys, WrappedKey, split_key
from analysis.simulate.facts import state_key, to_microseconds, window_of
from analysis.simulate.state import BudgetState

log = logging.getLogger("llm_shadow")

KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")
_KEY_HEADER_NAMES = frozenset(name.encode() for name in KEY_HEADERS)
_KEY_PREFIX = KEY_PREFIX.encode()
ACTIVE_MODES = ("shadow", "enforce")


def key_budget_name(key: WrappedKey) -> str:
    """The state name of a wrapped key's own budget (beside the policy file's budgets)."""
    return f"wrapped-key:{key.id}"


def key_budget_window(key: WrappedKey, now: float) -> str:
    """The budget-window state key of a call made at `now` (unix seconds) with `key`."""
    from datetime import UTC, datetime

    return state_key(key.key_id, window_of(to_microseconds(datetime.fromtimestamp(now, UTC)), key.window or "day"))


def key_error(family: str, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a refusal in the provider's error shape: 401 for a key that
    is not valid, 429 for a spent budget."""
    if family == "anthropic":
        kind = "authentication_error" if status == 401 else "rate_limit_error"
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif family == "gemini":
        state = "UNAUTHENTICATED" if status == 401 else "RESOURCE_EXHAUSTED"
        body = {"error": {"code": status, "message": message, "status": state}}
    else:
        code = "invalid_api_key" if status == 401 else "budget_exceeded"
        kind = "invalid_request_error" if status == 401 else "rate_limit_exceeded"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    headers = {"content-type": "application/json"}
    if status == 429:
        headers["x-should-retry"] = "false"  # the OpenAI and Anthropic SDKs then do not retry
    return status, headers, json.dumps(body).encode()


def family_of(flow: http.HTTPFlow, header: str) -> str:
    """Which provider's error shape the client reads: from the detected wire format, else from
    the header the key came in."""
    request = flow.request
    target = detect(pretty_host(request), request.path, request.headers, request.method)
    wire = target.wire_format if target is not None else ""
    if wire.startswith("anthropic") or (not wire and header == "x-api-key"):
        return "anthropic"
    if wire.startswith("gemini") or (not wire and header == "x-goog-api-key"):
        return "gemini"
    return "openai"


class WrappedKeys:
    def __init__(self) -> None:
        self.registry: KeyRegistry | None = None
        self.problems = Problems(log)
        self.provider_keys: dict[str, str | None] = {}
        self._budgets: dict[str, BudgetState] = {}
        self._started = False

    def running(self):
        if not self._started:
            try:
                self.start()
            except exceptions.OptionsError as e:
                log.error(str(e))
                ctx.master.shutdown()

    def configure(self, updated):
        if self._started and updated & {"shadow_mode", "shadow_state", "shadow_data"}:
            self.start()

    def start(self) -> None:
        self._started = True
        mode = ctx.options.shadow_mode if "shadow_mode" in ctx.options else "observe"
        if mode not in ACTIVE_MODES:
            self.registry = None
            return
        backend = ctx.master.addons.get("sharedstate").get()
        self.backend = backend
        source = RedisKeys(backend.link) if isinstance(backend, RedisBackend) else FileKeys(ctx.options.shadow_data)
        self.registry = KeyRegistry(source)
        self.registry.refresh(force=True)
        self._budgets = {}
        # The real keys are read now, from the environment the proxy started with.
        self.provider_keys = {name: os.environ.get(name) for name in self.registry.env_names()}

    def provider_key(self, name: str) -> str | None:
        if name not in self.provider_keys:
            self.provider_keys[name] = os.environ.get(name)  # a key created after the start
        return self.provider_keys[name]

    def budget(self, key: WrappedKey) -> BudgetState | None:
        """The state of `key`'s own budget (None: it has none)."""
        if key.budget_usd is None:
            return None
        windows = self._budgets.get(key.id)
        if windows is None or windows.limit_usd != key.budget_usd:
            windows = self._budgets[key.id] = self.backend.budget_windows(key_budget_name(key), key.budget_usd)
        return windows

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        registry = self.registry
        if registry is None or flow.response is not None:
            return
        headers = flow.request.headers
        # Most calls carry a raw provider key: one pass over the raw fields tells, where each of
        # mitmproxy's `headers.get` below scans and decodes them all (3 us in-process).
        for raw_name, raw_value in headers.fields:
            if _KEY_PREFIX in raw_value and raw_name.lower() in _KEY_HEADER_NAMES:
                break
        else:
            return  # no key header holds a wrapped key: the call passes unchanged
        for header in KEY_HEADERS:
            value = headers.get(header)
            if value is None:
                continue
            bearer = header == "authorization" and value[:7].lower() == "bearer "
            text = value[7:].strip() if bearer else value.strip()
            if split_key(text) is None:
                return  # a raw provider key (or none of ours): passes unchanged
            try:
                self._swap(flow, header, bearer, text)
            except Exception as e:  # fail-closed for this call only: never forward a wrapped key
                self.problems.add(f"wrapped_key_error:{type(e).__name__}", str(e))
                self._refuse(flow, header, 401, "the proxy could not check this wrapped key; try again")
            return

    def _swap(self, flow: http.HTTPFlow, header: str, bearer: bool, text: str) -> None:
        registry = self.registry
        assert registry is not None  # requestheaders checked it
        failures = registry.read_failures
        now = time.time()
        resolved = registry.resolve(text, now)
        if registry.read_failures > failures:
            self.problems.add("wrapped_keys_stale", "registry unreadable; using the records read last")
        key = resolved.key
        if key is not None:  # refused or not, the call is the key's
            flow.metadata[FLOW_IDENTITY] = Identity(key.key_id, key.team, key.feature, key.user)
        if resolved.status != "active" or key is None:
            what = {"unknown": "is not a valid wrapped key", "revoked": "was revoked", "expired": "has expired"}
            label = key.key_id if key is not None else "this key"
            self._refuse(flow, header, 401, f"llm-shadow: {label} {what[resolved.status]}")
            return
        real = self.provider_key(key.provider_key_env)
        if not real:
            self.problems.add("provider_key_missing", f"${key.provider_key_env} is not set in the proxy's environment")
            self._refuse(
                flow,
                header,
                401,
                f"llm-shadow: the proxy holds no provider key for {key.key_id} (${key.provider_key_env})",
            )
            return
        budget = self.budget(key)
        if budget is not None:
            spent = budget.spent_in(key_budget_window(key, now))
            if spent >= budget.limit_usd:
                self._refuse(
                    flow,
                    header,
                    429,
                    f"llm-shadow: {key.key_id} has spent its {'daily' if key.window == 'day' else 'monthly'} budget "
                    f"(${spent:.2f} of ${key.budget_usd:.2f})",
                )
                return
        flow.request.headers[header] = f"Bearer {real}" if bearer else real

    def _refuse(self, flow: http.HTTPFlow, header: str, status: int, message: str) -> None:
        code, headers, body = key_error(family_of(flow, header), status, message)
        flow.response = http.Response.make(code, body, headers)
        flow.metadata[FLOW_ANSWERED_BY] = "wrapped_key" if status == 401 else "budget"
        flow.request.headers.pop(header, None)  # the wrapped key is recorded nowhere

    def _budgeted_key(self, flow: http.HTTPFlow) -> WrappedKey | None:
        identity = flow.metadata.get(FLOW_IDENTITY)
        if identity is None or self.registry is None:
            return None
        key = self.registry.records.get(identity.key_id.removeprefix(KEY_PREFIX))
        return key if key is not None and key.budget_usd is not None else None

    def has_budget(self, flow: http.HTTPFlow) -> bool:
        """The call was made with a wrapped key that has a budget (to charge when it ends)."""
        return self._budgeted_key(flow) is not None

    def charge(self, flow: http.HTTPFlow, cost_usd: float | None) -> None:
        """Charge a completed call's cost to its wrapped key's budget, in the window of the
        call's start (called by enforce mode's settlement, addons.enforcer: once for the call,
        and once for each attempt a fallback rule sent for it, each with its recorded cost)."""
        key = self._budgeted_key(flow)
        budget = self.budget(key) if key is not None else None
        if key is not None and budget is not None and cost_usd:
            budget.charge(key_budget_window(key, flow.request.timestamp_start), cost_usd)

    def done(self):
        if self.problems.counts:
            log.warning("llm-shadow: problems with wrapped keys: %s", self.problems.summary())
