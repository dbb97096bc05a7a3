"""Sending a fallback plan live: retries with backoff, then the chain, until one answers.

The plan comes from the rule the simulator applies too (analysis.simulate.fallback.Plan). This
module only carries it out: wait the attempt's backoff (with jitter, `asyncio.sleep`, so the
proxy's event loop keeps serving other calls), send the attempt with an async HTTP client
within the rule's `timeout_s`, and stop at the first answer (2xx) or at a failure the rule does
not handle. Each attempt is returned with what came back, so the proxy can record it as a call
of its own (a row of `requests`) and log it in `decisions`.

The proxy acts only on an answer that came back failed before any byte of it reached the client
(addons.enforcer holds back the failed answer's body): a stream that started is never replaced.
An attempt's answer is read whole before it is sent on, streams included.
"""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from analysis.simulate.fallback import Attempt, Plan, failure_kind, handles

HeaderFields = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Outgoing:
    """One attempt as sent: where, and the exact request."""

    method: str
    url: str
    headers: HeaderFields
    body: bytes


@dataclass(frozen=True)
class Sent:
    """One attempt and what came back: a status and the body bytes as received (still
    content-encoded), or an outcome without status (timeout, connect_error)."""

    attempt: Attempt
    request: Outgoing
    status: int | None
    headers: HeaderFields
    body: bytes
    started: float  # unix time
    ended: float
    outcome: str  # ok | rate_limited | server_error | client_error | timeout | connect_error
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"


async def send(client: httpx.AsyncClient, request: Outgoing, timeout_s: float, attempt: Attempt) -> Sent:
    """Send `request` and read its answer whole, within `timeout_s` in all."""
    started = time.time()
    try:
        async with asyncio.timeout(timeout_s):
            outgoing = client.build_request(
                request.method, request.url, headers=list(request.headers), content=request.body
            )
            response = await client.send(outgoing, stream=True)
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])  # as received, not decoded
            finally:
                await response.aclose()
    except TimeoutError:
        return Sent(attempt, request, None, (), b"", started, time.time(), "timeout", f"no answer in {timeout_s:g} s")
    except httpx.TimeoutException as e:
        return Sent(attempt, request, None, (), b"", started, time.time(), "timeout", str(e) or type(e).__name__)
    except httpx.HTTPError as e:
        return Sent(attempt, request, None, (), b"", started, time.time(), "connect_error", str(e) or type(e).__name__)
    status = response.status_code
    return Sent(attempt, request, status, tuple(response.headers.raw), body, started, time.time(), outcome_of(status))


async def carry_out(
    plan: Plan,
    build: Callable[[Attempt], Outgoing | None],
    client: httpx.AsyncClient,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Sent]:
    """Send the attempts of `plan` in order until one answers, or one fails in a way the rule
    does not handle; `build` gives an attempt's request (None: it cannot be sent, skipped)."""
    sent: list[Sent] = []
    for attempt in plan.attempts:
        request = build(attempt)
        if request is None:
            continue
        await sleep(attempt.wait(rng))
        result = await send(client, request, plan.rule.timeout_s, attempt)
        sent.append(result)
        if result.answered:
            break
        kind = failure_kind(result.status, result.outcome)
        if kind is None or not handles(plan.rule, kind, result.status):
            break  # e.g. a 400 from a chain step: the rule has nothing for it
    return sent


def reason(plan: Plan, sent: Sent, first: bool) -> str:
    """The `reason` of an attempt's decision row."""
    what = f"{plan.kind} ({plan.status})" if plan.status is not None else plan.kind
    result = str(sent.status) if sent.status is not None else sent.outcome
    where = f" at {sent.attempt.url}" if sent.attempt.url else ""
    head = f"after {what}: " if first else ""
    return f"{head}attempt {sent.attempt.number} {sent.attempt.action} {sent.attempt.model}{where}: {result}"
