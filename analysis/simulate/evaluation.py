"""Routing quality, measured: send recorded requests a rule would move to its target model, and
compare the answers with the ones recorded.

A routing rule saves money by sending requests to a cheaper model; whether that model answers
as well is what the simulation alone cannot say ("quality: unverified"). `evaluate` takes a
random sample (seeded) of the recorded requests each rule would route, replays each one's
recorded body with the rule's target model through the real provider (the user's key; the
recorded host, or `upstream` to point elsewhere), stores the answers, and compares each with the
answer the original model gave (analysis.simulate.agreement: exact for short or structured
answers, embedding similarity otherwise). Per rule: the agreement rate with a Wilson 95%
interval and what the evaluation cost. Spending is capped: before each call the cost of the
request at the target's price (the simulator's own estimate) is checked against what is left of
`max_spend_usd`, and the real cost of each answer is counted.

Only OpenAI-compatible chat requests (endpoint `chat`) with a recorded body and answer are sent;
the others are counted as not evaluated, by reason. Results are kept under
`<data>/evaluations/<evaluation_id>/` (evaluation.json, answers.parquet); the newest evaluation of
a rule with the same target is what `simulate` and the report show in place of "unverified".
"""

import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from analysis.parsers.exchange import Usage
from analysis.pricing.table import PriceTable
from analysis.simulate.agreement import agreement
from analysis.simulate.embedders import Embedder
from analysis.simulate.labels import wilson
from analysis.store.modes import create_private_file, make_dir, restrict

EVALUATIONS_DIR = "evaluations"


class EvaluationError(RuntimeError):
    """The provider could not be reached or answered something unusable."""


@dataclass
class Candidate:
    request_id: str
    rule: str
    target: str
    body: dict
    url: str
    recorded_answer: str
    estimated_cost: float


def _chat_answer(payload: dict) -> str | None:
    try:
        return payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None


def _post(url: str, body: dict, api_key: str | None, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), method="POST")
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise EvaluationError(f"{url} answered HTTP {e.code}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise EvaluationError(f"cannot reach {url}: {e}") from e
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{url} did not answer JSON") from e


def candidates(
    policy,
    decisions: pl.DataFrame,
    requests: pl.DataFrame,
    *,
    rule: str | None,
    sample: int,
    upstream: str | None,
    seed: int = 0,
) -> tuple[list[Candidate], dict[str, dict[str, int]]]:
    """Per routing rule (or only `rule`), a random sample of up to `sample` routed requests that
    can be replayed, and the counts of those that cannot, by reason. `requests` carries the
    `request_json` and `response_text` columns and is row-aligned with `decisions`."""
    frame = decisions.select("id", "routed_by", "simulated_cost_usd").hstack(
        requests.select("endpoint", "host", "path", "request_json", "response_text").get_columns()
    )
    chosen: list[Candidate] = []
    skipped: dict[str, dict[str, int]] = {}
    for routing in policy.routing:
        if rule is not None and routing.name != rule:
            continue
        mine = frame.filter(pl.col("routed_by") == routing.name)
        reasons = {
            "not a chat request": (pl.col("endpoint") != "chat").fill_null(True),
            "no recorded body": pl.col("request_json").is_null(),
            "no recorded answer": pl.col("response_text").is_null(),
        }
        counts: dict[str, int] = {}
        usable = pl.lit(True)
        for reason, test in reasons.items():
            counts[reason] = int(mine.filter(usable & test).height)
            usable = usable & ~test
        skipped[routing.name] = {k: v for k, v in counts.items() if v}
        usable_rows = mine.filter(usable)
        order = np.random.default_rng(seed).permutation(usable_rows.height)[:sample].tolist()
        for row in usable_rows[order].iter_rows(named=True) if order else []:
            body = json.loads(row["request_json"])
            body["model"] = routing.to
            body.pop("stream", None)
            body.pop("stream_options", None)
            base = upstream.rstrip("/") if upstream else f"https://{row['host']}"
            path = row["path"] if not upstream else "/v1/chat/completions"
            if upstream and upstream.rstrip("/").endswith("/v1"):
                path = "/chat/completions"
            chosen.append(
                Candidate(
                    row["id"],
                    routing.name,
                    routing.to,
                    body,
                    base + path,
                    row["response_text"],
                    float(row["simulated_cost_usd"] or 0.0),
                )
            )
    return chosen, skipped


def run_evaluation(
    policy,
    chosen: list[Candidate],
    skipped: dict[str, dict[str, int]],
    *,
    prices: PriceTable,
    embedder: Embedder,
    api_key: str | None,
    max_spend_usd: float,
    answer_threshold: float = 0.8,
    timeout: float = 60.0,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Send the candidates within the spend cap; (summary per rule, one row per answer)."""
    spent = 0.0
    rows: list[dict[str, Any]] = []
    stopped_by_cap: dict[str, int] = {}
    for candidate in chosen:
        if spent + candidate.estimated_cost > max_spend_usd:
            stopped_by_cap[candidate.rule] = stopped_by_cap.get(candidate.rule, 0) + 1
            continue
        payload = _post(candidate.url, candidate.body, api_key, timeout)
        usage = payload.get("usage") or {}
        cost = prices.cost(
            provider="openai",
            model=payload.get("model") or candidate.target,
            usage=Usage(input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens")),
            model_requested=candidate.target,
        ).cost_usd
        cost = candidate.estimated_cost if cost is None else cost
        spent += cost
        rows.append(
            {
                "request_id": candidate.request_id,
                "rule": candidate.rule,
                "model": payload.get("model") or candidate.target,
                "recorded_answer": candidate.recorded_answer,
                "answer": _chat_answer(payload),
                "cost_usd": cost,
            }
        )
    answers = pl.DataFrame(
        rows,
        schema={
            "request_id": pl.Utf8,
            "rule": pl.Utf8,
            "model": pl.Utf8,
            "recorded_answer": pl.Utf8,
            "answer": pl.Utf8,
            "cost_usd": pl.Float64,
        },
    )
    return summarise(policy, answers, skipped, stopped_by_cap, embedder, answer_threshold)


def summarise(
    policy,
    answers: pl.DataFrame,
    skipped: dict[str, dict[str, int]],
    stopped_by_cap: dict[str, int],
    embedder: Embedder,
    answer_threshold: float = 0.8,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Compare each answer with the recorded one; per rule, the agreement rate with its interval."""
    scores = agreement(answers["recorded_answer"].to_list(), answers["answer"].to_list(), embedder)
    answers = answers.with_columns(pl.Series("answer_agreement", scores, dtype=pl.Float64))
    summary = {}
    for routing in policy.routing:
        if routing.name not in skipped:
            continue
        mine = answers.filter(pl.col("rule") == routing.name)
        compared = mine.filter(pl.col("answer_agreement").is_not_null())
        agreed = int((compared["answer_agreement"] >= answer_threshold).sum())
        interval = wilson(agreed, compared.height)
        summary[routing.name] = {
            "to": routing.to,
            "evaluated": compared.height,
            "agreed": agreed,
            "agreement_rate": agreed / compared.height if compared.height else None,
            "interval": list(interval) if interval else None,
            "cost_usd": float(mine["cost_usd"].sum() or 0.0),
            "not_evaluated": {
                **skipped[routing.name],
                **({"spend cap": stopped_by_cap[routing.name]} if routing.name in stopped_by_cap else {}),
            },
        }
    return summary, answers


def mirrored_answers(
    policy, mirrors: pl.DataFrame, contents: pl.DataFrame, *, rule: str | None
) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
    """The answers shadow-mode mirroring got (analysis.enforce.mirror) beside the answers the
    same requests really got (`contents`: id, response_text), in run_evaluation's shape, and the
    mirrored requests that cannot be compared, by reason, per rule."""
    recorded = contents.select(pl.col("id").alias("request_id"), pl.col("response_text").alias("recorded_answer"))
    joined = mirrors.join(recorded.unique("request_id", keep="first"), on="request_id", how="left")
    rows = []
    skipped: dict[str, dict[str, int]] = {}
    for routing in policy.routing:
        if rule is not None and routing.name != rule:
            continue
        mine = joined.filter((pl.col("rule") == routing.name) & (pl.col("model") == routing.to))
        reasons = {
            "mirror failed": int(mine["error"].is_not_null().sum()),
            "no recorded answer": int((mine["error"].is_null() & mine["recorded_answer"].is_null()).sum()),
        }
        skipped[routing.name] = {k: v for k, v in reasons.items() if v}
        rows.append(mine.filter(pl.col("error").is_null() & pl.col("recorded_answer").is_not_null()))
    answers = pl.concat(rows) if rows else joined.clear()
    return answers.select("request_id", "rule", "model", "recorded_answer", "answer", "cost_usd"), skipped


def save_evaluation(data_dir: Path, summary: dict[str, Any], answers: pl.DataFrame, info: dict[str, Any]) -> str:
    now = datetime.now(UTC)
    evaluation_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    directory = Path(data_dir) / EVALUATIONS_DIR / evaluation_id
    make_dir(directory, Path(data_dir))
    answers.write_parquet(directory / "answers.parquet")
    restrict(directory / "answers.parquet", Path(data_dir))
    document = {"evaluation_id": evaluation_id, "created_at": now.isoformat(), **info, "rules": summary}
    tmp = directory / f".evaluation.json.{os.getpid()}.tmp"
    create_private_file(tmp, (json.dumps(document, indent=1) + "\n").encode(), Path(data_dir))
    os.replace(tmp, directory / "evaluation.json")
    return evaluation_id


def latest_evaluations(data_dir: Path | None) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest stored evaluation of each (rule name, target model)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    root = Path(data_dir) / EVALUATIONS_DIR if data_dir is not None else None
    if root is None or not root.is_dir():
        return found
    for directory in sorted(root.iterdir()):
        path = directory / "evaluation.json"
        if not path.is_file():
            continue
        document = json.loads(path.read_text())
        for name, rule in document["rules"].items():
            if rule["evaluated"]:
                found[(name, rule["to"])] = {**rule, "evaluation_id": document["evaluation_id"]}
    return found


def attach_evaluations(
    routing: dict[str, Any], by_policy: list[dict[str, Any]], found: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """Put the newest evaluation of each routing rule (same name, same target) where the result
    said "quality: unverified": the rule's quality becomes "measured"."""
    measured = {}
    for rule in routing["rules"]:
        evaluation = found.get((rule["name"], rule["to"]))
        if evaluation is not None:
            rule["quality"] = "measured"
            rule["evaluation"] = evaluation
            measured[rule["name"]] = evaluation
    for row in by_policy:
        if row["kind"] == "routing" and row["name"] in measured:
            row["quality"] = "measured"
            row["evaluation"] = measured[row["name"]]
    if routing["rules"] and all(r["quality"] == "measured" for r in routing["rules"]):
        routing["quality"] = "measured"
