"""Would a semantic-cache hit have been a wrong answer? Compare the two answers we recorded.

A semantic cache answers a request with the stored answer of a similar earlier prompt. Whether
that answer is right for the new request is what a live cache can never know. A shadow run
can: every request went upstream and its real answer was recorded, so for each simulated hit
we hold both the answer the request really got and the answer the cache would have served (the
earlier request's recorded answer). When they disagree, the cached answer was probably wrong
for this request. This is possible only because we observed before acting.

Two answers agree when:

- both are structured (JSON objects or arrays): they parse to the same value;
- either is short (a label, a number, a yes/no: at most SHORT_WORDS words): they are equal
  once case, surrounding whitespace and final punctuation are set aside;
- otherwise: the cosine similarity of their embeddings (the semantic cache's own embedder)
  reaches `answer_threshold`.

`agreement` gives a score per pair (1.0 or 0.0 for the exact comparisons, the cosine otherwise;
None when either answer was not recorded); a pair agrees when its score reaches the threshold.
It is an estimate: two right answers worded very differently count as a disagreement, and the
same wrong answer twice as agreement. A person's labels (`llm-shadow label`) check it.
"""

import json
import re
from collections.abc import Sequence

import numpy as np

from analysis.simulate.embedders import Embedder

SHORT_WORDS = 8
_SPACES = re.compile(r"\s+")


def _structured(text: str) -> object | None:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


def _plain(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower()).rstrip(".!?;: ")


def agreement(real: Sequence[str | None], served: Sequence[str | None], embedder: Embedder) -> list[float | None]:
    """Per pair, how far the answer served agrees with the real one (see the module text)."""
    scores: list[float | None] = [None] * len(real)
    to_embed: list[int] = []
    for i, (a, b) in enumerate(zip(real, served, strict=True)):
        if a is None or b is None:
            continue
        parsed_a, parsed_b = _structured(a), _structured(b)
        if parsed_a is not None and parsed_b is not None:
            scores[i] = 1.0 if parsed_a == parsed_b else 0.0
        elif len(a.split()) <= SHORT_WORDS or len(b.split()) <= SHORT_WORDS:
            scores[i] = 1.0 if _plain(a) == _plain(b) else 0.0
        elif a == b:
            scores[i] = 1.0
        else:
            to_embed.append(i)
    if to_embed:
        texts = list(dict.fromkeys([real[i] for i in to_embed] + [served[i] for i in to_embed]))
        vectors = embedder.embed(texts)
        row = {text: n for n, text in enumerate(texts)}
        left = vectors[[row[real[i]] for i in to_embed]]
        right = vectors[[row[served[i]] for i in to_embed]]
        cosines = np.clip((left * right).sum(axis=1), -1.0, 1.0)
        for i, value in zip(to_embed, cosines.tolist(), strict=True):
            scores[i] = float(value)
    return scores
