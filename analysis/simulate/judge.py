"""An optional judge: a chat model labels a run's sampled semantic-cache pairs, its spend capped.

A person's labels (analysis.simulate.labels) are the reference, but reading hundreds of pairs
takes time. `llm-shadow label RUN_ID --judge-url URL --judge-model M` asks any OpenAI-compatible
chat endpoint, for each sampled pair, whether the earlier question's answer also answers the
request; "yes" is y, "no" is n, anything else skip. Verdicts go to `<run>/judge.json`, apart
from the person's `labels.json`, and give their own precision per threshold. Before each call,
what was spent so far plus the cost of the previous call (the first: a 1,000-token estimate) must
stay within `max_spend_usd`; each call's real cost comes from the price table and the usage the
endpoint reports, so a judge model without a price is refused (its spend could not be capped).
"""

import json
import os
from pathlib import Path
from typing import Any

from analysis.parsers.exchange import Usage
from analysis.pricing.table import PriceTable
from analysis.simulate.evaluation import EvaluationError, _post
from analysis.store.modes import create_private_file

JUDGE_FILE = "judge.json"
INSTRUCTION = (
    "You check a cache of customer-support answers. Reply with one word: 'yes' if an answer "
    "written for question A also correctly answers question B, otherwise 'no'."
)


def verdict(text: str | None) -> str:
    """y, n or skip from the judge's reply."""
    word = (text or "").strip().lower().lstrip("'\"*").split(maxsplit=1)
    if not word:
        return "skip"
    first = word[0].rstrip(".!,'\"*")
    return {"yes": "y", "no": "n"}.get(first, "skip")


def load_judgements(directory: Path) -> dict[str, str]:
    path = Path(directory) / JUDGE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def judge_pairs(
    pairs: list[dict[str, Any]],
    directory: Path,
    *,
    url: str,
    model: str,
    api_key: str | None,
    prices: PriceTable,
    max_spend_usd: float,
    timeout: float = 60.0,
) -> tuple[dict[str, str], float, int]:
    """Judge the pairs not judged yet; (all verdicts, USD spent now, pairs left by the cap)."""
    price = prices.resolve(model, None)
    if price is None:
        raise EvaluationError(f"judge model {model!r} has no price, so its spend cannot be capped")
    judged = load_judgements(directory)
    spent, previous, left = 0.0, None, 0
    endpoint = url.rstrip("/") + "/chat/completions"
    for pair in pairs:
        if pair["request_id"] in judged:
            continue
        estimate = (
            previous
            if previous is not None
            else prices.cost(provider=None, model=model, usage=Usage(input_tokens=1000, output_tokens=5)).cost_usd
            or 0.0
        )
        if spent + estimate > max_spend_usd:
            left += 1
            continue
        body = {
            "model": model,
            "temperature": 0,
            "max_tokens": 5,
            "messages": [
                {"role": "system", "content": INSTRUCTION},
                {
                    "role": "user",
                    "content": f"Question A: {pair.get('cached_prompt')}\n\nQuestion B: {pair.get('request_prompt')}",
                },
            ],
        }
        payload = _post(endpoint, body, api_key, timeout)
        usage = payload.get("usage") or {}
        cost = prices.cost(
            provider=None,
            model=model,
            usage=Usage(input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens")),
        ).cost_usd
        previous = cost if cost is not None else estimate
        spent += previous
        try:
            text = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        judged[pair["request_id"]] = verdict(text)
        path = Path(directory) / JUDGE_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        create_private_file(tmp, (json.dumps(judged, indent=1, sort_keys=True) + "\n").encode())
        os.replace(tmp, path)
    return judged, spent, left
