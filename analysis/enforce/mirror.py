"""Shadow-mode mirroring: a sampled share of the requests a routing rule would move, also sent to
its target model, off the client's path, so `llm-shadow evaluate --mirrored` can compare answers.

`evaluate` replays recorded requests later; a mirror measures the same thing on live traffic as
it happens. In shadow mode a routing rule with `mirror = 0.05` picks about 5% of the requests it
would route (by a hash of the request id, so the choice is stable and unbiased), and `Mirror`
sends each one's body, with the model set to the rule's target and streaming turned off, to the
same URL with the same credentials, from a small thread pool. The client's call is never held:
`submit` only queues (a full queue drops the request and counts it). Spending is capped per
rule: before a send, the spend so far plus the previous answer's cost (the first: nothing) must
stay within `mirror_max_spend`; each answer is charged at the price table's rate for the usage
the provider reports. Each answer is written at once to `<data>/mirrors/part-*.parquet`
(request id, rule, target, answer, cost, error); the recorded answer of the same request id is
in `contents`, and `evaluate --mirrored` compares the two (analysis.simulate.evaluation).

Only OpenAI-compatible chat bodies (a JSON object with `messages`) are mirrored; others are
counted as skipped. Failures are counted, never raised into the proxy.
"""

import hashlib
import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from analysis.parsers.exchange import Usage
from analysis.pricing.table import PriceTable
from analysis.simulate.policy import Policy
from analysis.store.modes import create_private_file, make_dir, restrict

MIRRORS_DIR = "mirrors"
SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8(),
    "ts": pl.Datetime("us", "UTC"),
    "rule": pl.Utf8(),
    "model": pl.Utf8(),
    "answer": pl.Utf8(),
    "cost_usd": pl.Float64(),
    "error": pl.Utf8(),
}


def chosen(request_id: str, share: float) -> bool:
    """Whether a request is in the mirrored share: a stable hash of its id, uniform in [0, 1)."""
    if share <= 0:
        return False
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True)
class Job:
    request_id: str
    rule: str
    model: str
    url: str
    body: dict
    headers: dict[str, str]


def mirrored_body(raw: bytes, model: str) -> dict | None:
    """The request body with the target model and no streaming; None when it is not a chat body."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or "messages" not in body:
        return None
    body["model"] = model
    body.pop("stream", None)
    body.pop("stream_options", None)
    return body


def post(url: str, body: dict, headers: dict[str, str], timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), method="POST")
    request.add_header("Content-Type", "application/json")
    for name, value in headers.items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class Mirror:
    """Queues mirrored requests and sends them from worker threads, within each rule's spend cap."""

    def __init__(
        self,
        policy: Policy,
        data_dir: Path,
        prices: PriceTable,
        *,
        workers: int = 2,
        max_pending: int = 100,
        timeout: float = 60.0,
        send: Callable[[str, dict, dict[str, str], float], dict] = post,
    ):
        self.rules = {r.name: r for r in policy.routing if r.mirror > 0}
        self.directory = Path(data_dir) / MIRRORS_DIR
        self.prices = prices
        self.timeout = timeout
        self.send = send
        self.counts: Counter[str] = Counter()  # sent, answered, skipped_*, dropped_queue_full, spend_cap, error
        self.spent: dict[str, float] = {name: 0.0 for name in self.rules}
        self._last_cost: dict[str, float] = {name: 0.0 for name in self.rules}
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_pending)
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def wants(self, rule: str | None, request_id: str) -> bool:
        """Whether this routed request is one to mirror (cheap: called on the event loop)."""
        mirrored = self.rules.get(rule) if rule else None
        return mirrored is not None and chosen(request_id, mirrored.mirror)

    def submit(self, request_id: str, rule: str, url: str, raw_body: bytes, headers: dict[str, str]) -> None:
        """Queue one request (never blocks: a full queue drops it and counts it)."""
        target = self.rules[rule].to
        body = mirrored_body(raw_body, target)
        if body is None:
            self._count("skipped_not_chat")
            return
        try:
            self._queue.put_nowait(Job(request_id, rule, target, url, body, headers))
        except queue.Full:
            self._count("dropped_queue_full")

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._send(job)
            finally:
                self._queue.task_done()

    def _send(self, job: Job) -> None:
        cap = self.rules[job.rule].mirror_max_spend_usd
        with self._lock:
            if self.spent[job.rule] + self._last_cost[job.rule] > cap:
                self.counts["spend_cap"] += 1
                return
            self.counts["sent"] += 1
        answer: str | None = None
        cost: float | None = None
        error: str | None = None
        try:
            payload = self.send(job.url, job.body, job.headers, self.timeout)
            answer = payload["choices"][0]["message"]["content"]
            usage = payload.get("usage") or {}
            cost = self.prices.cost(
                provider="openai",
                model=payload.get("model") or job.model,
                usage=Usage(input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens")),
                model_requested=job.model,
                warn_unpriced=False,
            ).cost_usd
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            error = f"unreachable: {e}"
        except (ValueError, KeyError, IndexError, TypeError) as e:
            error = f"unusable answer: {type(e).__name__}"
        with self._lock:
            self.counts["answered" if error is None else "error"] += 1
            if cost is not None:
                self.spent[job.rule] += cost
                self._last_cost[job.rule] = cost
            self._rows.append(
                {
                    "request_id": job.request_id,
                    "ts": datetime.now(UTC),
                    "rule": job.rule,
                    "model": job.model,
                    "answer": answer,
                    "cost_usd": cost,
                    "error": error,
                }
            )
            rows, self._rows = self._rows, []
        self._write(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        make_dir(self.directory)
        name = f"part-{time.time_ns()}-{os.getpid()}-{threading.get_ident()}.parquet"
        tmp = self.directory / f".{name}.tmp"
        pl.DataFrame(rows, schema=SCHEMA).write_parquet(tmp)
        restrict(tmp)  # answers are as private as the recorded ones
        os.replace(tmp, self.directory / name)

    def close(self, wait: float = 10.0) -> None:
        """Finish the queued sends (up to `wait` seconds) and write what is left."""
        deadline = time.monotonic() + wait
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            rows, self._rows = self._rows, []
            counts = {"counts": dict(self.counts), "spent_usd": dict(self.spent)}
        if rows:
            self._write(rows)
        if self.rules:
            make_dir(self.directory)
            counts_file = self.directory / f"counts-{time.time_ns()}-{os.getpid()}.json"
            create_private_file(counts_file, (json.dumps(counts) + "\n").encode())


def read_counts(data_dir: Path) -> Counter[str]:
    """What every closed mirror counted (sent, answered, error, spend_cap, skipped_*, dropped_*), added up."""
    total: Counter[str] = Counter()
    for path in sorted((Path(data_dir) / MIRRORS_DIR).glob("counts-*.json")):
        total.update(json.loads(path.read_text())["counts"])
    return total


def read_mirrors(data_dir: Path) -> pl.DataFrame:
    """Every mirrored answer kept under <data>/mirrors (empty frame when none)."""
    parts = sorted((Path(data_dir) / MIRRORS_DIR).glob("part-*.parquet"))
    if not parts:
        return pl.DataFrame(schema=SCHEMA)
    return pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
