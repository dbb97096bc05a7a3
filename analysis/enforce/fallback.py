"""Sending a call and its fallback plan live: retries with backoff, then the chain, until one answers.

The plan comes from the rule the simulator applies too (analysis.simulate.fallback.Plan). This
module only carries it out: wait the attempt's backoff (with jitter, `asyncio.sleep`, so the
proxy's event loop keeps serving other calls), send the attempt with an async HTTP client, and
stop at the first answer (2xx) or at a failure the rule does not handle. The client's own call
is sent the same way (`send` with no attempt), so a call that times out or cannot connect is
rescued like one answered 429 or 5xx (addons.fallback sends the calls a rule covers through the
proxy's relay, analysis.enforce.relay, for that).

An attempt gets the rule's `timeout_s` to connect and send its answer's status and headers (a
failed answer's body too). An answer that came back 2xx is kept open (`Sent.stream`): its body is
handed on as it arrives, so a rescued stream reaches the client event by event. Each attempt is
returned with what came back, so the proxy can record it as a call of its own (a row of
`requests`) and log it in `decisions`. Nothing is sent again once the first byte of an answer
went to the client.
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
    """One call sent (the client's own, `attempt` None, or an attempt of a plan) and what came
    back: a status and the body bytes as received (still content-encoded), or an outcome without
    status (timeout, connect_error). An answer (2xx) sent with `keep_open` comes back with its
    body unread: `stream` is the open response (read it with `aiter_raw`, then `aclose`)."""

    attempt: Attempt | None
    request: Outgoing
    status: int | None
    headers: HeaderFields
    body: bytes
    started: float  # unix time
    ended: float
    outcome: str  # ok | rate_limited | server_error | client_error | timeout | connect_error | upstream_cut | ...
    error: str | None = None
    stream: httpx.Response | None = None
    chunks: tuple[tuple[float, bytes], ...] = ()  # the body as it arrived: (unix time, bytes)
    truncated: bool = False  # `chunks` holds only the first bytes of a longer body

    @property
    def answered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"


async def send(
    client: httpx.AsyncClient,
    request: Outgoing,
    timeout_s: float | None,
    attempt: Attempt | None,
    keep_open: bool = False,
) -> Sent:
    """Send `request`; within `timeout_s` (None: no limit) its answer's status and headers must
    come, and a failed answer's body. An answer kept open is returned unread."""
    started = time.time()
    response: httpx.Response | None = None
    try:
        async with asyncio.timeout(timeout_s):
            # Not client.build_request: it would add httpx's own Accept, Accept-Encoding and
            # User-Agent to what the client sent (only Host and the body's length are set here).
            outgoing = httpx.Request(
                request.method,
                request.url,
                headers=list(request.headers),
                content=request.body,
                extensions={"timeout": client.timeout.as_dict()},
            )
            response = await client.send(outgoing, stream=True)
            if keep_open and 200 <= response.status_code < 300:
                opened, response = response, None
                return Sent(
                    attempt,
                    request,
                    opened.status_code,
                    tuple(opened.headers.raw),
                    b"",
                    started,
                    started,
                    "ok",
                    stream=opened,
                )
            body = b"".join([chunk async for chunk in response.aiter_raw()])  # as received, not decoded
    except TimeoutError:
        return Sent(attempt, request, None, (), b"", started, time.time(), "timeout", f"no answer in {timeout_s:g} s")
    except httpx.TimeoutException as e:
        return Sent(attempt, request, None, (), b"", started, time.time(), "timeout", str(e) or type(e).__name__)
    except httpx.HTTPError as e:
        if response is not None:  # the answer started, then broke
            return Sent(
                attempt,
                request,
                response.status_code,
                tuple(response.headers.raw),
                b"",
                started,
                time.time(),
                "upstream_cut",
                str(e) or type(e).__name__,
            )
        return Sent(attempt, request, None, (), b"", started, time.time(), "connect_error", str(e) or type(e).__name__)
    finally:
        if response is not None:
            await response.aclose()
    status = response.status_code
    ended = time.time()
    return Sent(
        attempt,
        request,
        status,
        tuple(response.headers.raw),
        body,
        started,
        ended,
        outcome_of(status),
        chunks=((ended, body),) if body else (),
    )


async def carry_out(
    plan: Plan,
    build: Callable[[Attempt], Outgoing | None],
    client: httpx.AsyncClient,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    keep_open: bool = False,
) -> list[Sent]:
    """Send the attempts of `plan` in order until one answers, or one fails in a way the rule
    does not handle; `build` gives an attempt's request (None: it cannot be sent, skipped). With
    `keep_open`, the attempt that answered comes back unread (`Sent.stream`)."""
    sent: list[Sent] = []
    for attempt in plan.attempts:
        request = build(attempt)
        if request is None:
            continue
        await sleep(attempt.wait(rng))
        result = await send(client, request, plan.rule.timeout_s, attempt, keep_open)
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
    attempt = sent.attempt
    assert attempt is not None  # the client's own call has no row of kind fallback
    where = f" at {attempt.url}" if attempt.url else ""
    head = f"after {what}: " if first else ""
    return f"{head}attempt {attempt.number} {attempt.action} {attempt.model}{where}: {result}"
