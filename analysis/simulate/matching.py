"""Does a request meet a policy's conditions: one request at a time, or a whole frame at once.

`CompiledMatch.matches(record)` is the definition. `CompiledMatch.mask(frame)` computes the same
answer for every row of a `requests` frame without a Python loop over rows: text and regex
conditions are decided by the very same Python predicate, applied once per distinct value of
the column (there are few distinct models, teams or system prompts), then broadcast with
`is_in`; numeric and boolean conditions are plain column comparisons. So the batch simulator
and the one-request path can never disagree about a match.

A record is a mapping with the `requests` column names; `system_prompt` comes from `contents`
and is None when contents were not recorded (a regex condition then does not match).
"""

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import polars as pl

from analysis.simulate.policy import BOOL_CONDITIONS, SCOPE_COLUMNS, TEXT_CONDITIONS, Match

Record = Mapping[str, Any]


def requested_model(record: Record) -> str | None:
    """The model the client asked for: model_requested, else the model served."""
    return record.get("model_requested") or record.get("model")


def requested_model_expr() -> pl.Expr:
    """`requested_model` as a polars expression."""
    asked = pl.col("model_requested")
    return pl.when(asked.is_null() | (asked == "")).then(pl.col("model")).otherwise(asked)


def scope_value(record: Record, scope: str) -> str | None:
    """The group a scoped policy keeps separate state for; "*" for scope global."""
    if scope == "global":
        return "*"
    return record.get(SCOPE_COLUMNS[scope])


def scope_column(scope: str) -> str | None:
    """The record field `scope_value` reads for `scope`; None for scope global (its value "*")."""
    return None if scope == "global" else SCOPE_COLUMNS[scope]


def scope_expr(scope: str) -> pl.Expr:
    if scope == "global":
        return pl.lit("*", dtype=pl.Utf8)
    return pl.col(SCOPE_COLUMNS[scope]).cast(pl.Utf8)


def _pattern_predicate(patterns: tuple[str, ...]) -> Callable[[str | None], bool]:
    regex = re.compile("|".join(fnmatch.translate(p) for p in patterns))
    return lambda value: value is not None and regex.match(value) is not None


def _regex_predicate(pattern: str) -> Callable[[str | None], bool]:
    regex = re.compile(pattern)
    return lambda value: value is not None and regex.search(value) is not None


def _values_where(series: pl.Series, predicate: Callable[[str | None], bool]) -> list[str]:
    return [v for v in series.unique().to_list() if v is not None and predicate(v)]


class CompiledMatch:
    """A `Match` ready to test records (`matches`) or frames (`mask`)."""

    def __init__(self, match: Match):
        self.match = match
        self.text = [(key, _pattern_predicate(patterns)) for key, patterns in match.text]
        self.system_prompt = _regex_predicate(match.system_prompt_regex) if match.system_prompt_regex else None
        self.everything = match.is_empty  # e.g. a budget over all traffic: matches every record

    def matches(self, record: Record) -> bool:
        if self.everything:
            return True
        m = self.match
        for key, predicate in self.text:
            value = requested_model(record) if key == "model" else record.get(TEXT_CONDITIONS[key])
            if not predicate(value):
                return False
        for key, wanted in m.flags:
            if bool(record.get(BOOL_CONDITIONS[key])) != wanted:
                return False
        if m.min_input_tokens is not None or m.max_input_tokens is not None:
            tokens = record.get("input_tokens")
            if tokens is None:
                return False
            if m.min_input_tokens is not None and tokens < m.min_input_tokens:
                return False
            if m.max_input_tokens is not None and tokens > m.max_input_tokens:
                return False
        if self.system_prompt is not None and not self.system_prompt(record.get("system_prompt")):
            return False
        return True

    def explain(self, record: Record) -> list[tuple[str, bool]]:
        """Each condition in words, with whether `record` meets it (the reasons behind
        `matches`)."""
        m = self.match
        found: list[tuple[str, bool]] = []
        for (key, predicate), (_, patterns) in zip(self.text, m.text, strict=True):
            value = requested_model(record) if key == "model" else record.get(TEXT_CONDITIONS[key])
            wanted = patterns[0] if len(patterns) == 1 else " or ".join(patterns)
            found.append((f"{key} {value!r} is {wanted}", predicate(value)))
        for flag_key, flag_wanted in m.flags:
            flag = bool(record.get(BOOL_CONDITIONS[flag_key]))
            found.append(
                (f"{flag_key} is {str(flag).lower()} (wanted {str(flag_wanted).lower()})", flag == flag_wanted)
            )
        tokens = record.get("input_tokens")
        if m.min_input_tokens is not None:
            found.append(
                (f"input_tokens {tokens} >= {m.min_input_tokens}", tokens is not None and tokens >= m.min_input_tokens)
            )
        if m.max_input_tokens is not None:
            found.append(
                (f"input_tokens {tokens} <= {m.max_input_tokens}", tokens is not None and tokens <= m.max_input_tokens)
            )
        if self.system_prompt is not None:
            prompt = record.get("system_prompt")
            shown = "not recorded" if prompt is None else repr(prompt[:60] + ("..." if len(prompt) > 60 else ""))
            found.append((f"system prompt ({shown}) matches /{m.system_prompt_regex}/", self.system_prompt(prompt)))
        return found

    def mask(self, frame: pl.DataFrame) -> np.ndarray:
        """Boolean array: row i of `frame` matches (same answer as `matches`)."""
        m = self.match
        conditions: list[pl.Expr] = []
        for key, predicate in self.text:
            expr = requested_model_expr() if key == "model" else pl.col(TEXT_CONDITIONS[key])
            values = frame.select(expr.alias("v"))["v"]
            conditions.append(expr.is_in(_values_where(values, predicate)))
        for key, wanted in m.flags:
            conditions.append(pl.col(BOOL_CONDITIONS[key]).fill_null(False) == wanted)
        if m.min_input_tokens is not None:
            conditions.append(pl.col("input_tokens") >= m.min_input_tokens)
        if m.max_input_tokens is not None:
            conditions.append(pl.col("input_tokens") <= m.max_input_tokens)
        if self.system_prompt is not None:
            if "system_prompt" in frame.columns:
                found = _values_where(frame["system_prompt"], self.system_prompt)
                conditions.append(pl.col("system_prompt").is_in(found))
            else:
                conditions.append(pl.lit(False))
        if not conditions:
            return np.ones(frame.height, dtype=bool)
        combined = pl.all_horizontal(conditions).fill_null(False)
        return frame.select(combined.alias("m"))["m"].to_numpy()
