"""The facts of a request: what the policies need to know about it, apart from history.

`Facts` describes one request (enforce mode computes it per request: PolicyEngine.observe);
`FrameFacts` holds the same fields as columns for many requests (the simulator computes it
vectorised: analysis.simulate.batch.frame_facts); `OneRequestFacts` reads one request's
`Facts` as a one-row frame (enforce mode's decision). `EngineState` is what the policies remember
between requests. Times are integer microseconds since the epoch, windows are calendar
windows in UTC.
"""

import functools
import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from analysis.simulate.semantic import SemanticIndex
from analysis.simulate.state import BudgetState, CacheState, RateState

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
MICROSECOND = timedelta(microseconds=1)


def to_microseconds(ts: datetime) -> int:
    """A timezone-aware (or UTC-naive) datetime as integer microseconds since the epoch."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // MICROSECOND


def window_of(ts_us: int, window: str) -> int:
    """Number of the calendar window (UTC) holding `ts_us`: hours or days since the epoch, or
    year * 12 + month - 1."""
    if window == "hour":
        return ts_us // HOUR_US
    if window == "day":
        return ts_us // DAY_US
    moment = EPOCH + timedelta(microseconds=ts_us)
    return moment.year * 12 + moment.month - 1


def window_start(window_id: int, window: str) -> datetime:
    if window == "hour":
        return EPOCH + timedelta(microseconds=window_id * HOUR_US)
    if window == "day":
        return EPOCH + timedelta(microseconds=window_id * DAY_US)
    return datetime(window_id // 12, window_id % 12 + 1, 1, tzinfo=UTC)


# State keys are strings, "<scope value><US><part>": a str caches its hash, a tuple does not,
# and the replay loop looks each key up several times. RS stands for a NULL scope value.
KEY_SEPARATOR = "\x1f"
NO_VALUE = "\x1e"


# The exact cache's key part of a streamed request: its prompt_hash and this. prompt_hash leaves
# out `stream` (the answer is the same), but enforce mode replays a stored answer's bytes as they
# came, so a streamed answer can only answer streamed requests and a JSON one JSON requests.
STREAMED = ":stream"


def state_key(scope_value: str | None, part: str | int) -> str:
    """The key of a scoped piece of state: a cached prompt, a budget window."""
    return f"{NO_VALUE if scope_value is None else scope_value}{KEY_SEPARATOR}{part}"


def state_key_expr(scope: pl.Expr, part: pl.Expr) -> pl.Expr:
    """`state_key` as a polars expression (NULL where `part` is NULL)."""
    return pl.concat_str([scope.fill_null(NO_VALUE), pl.lit(KEY_SEPARATOR), part.cast(pl.Utf8)])


def split_state_key(key: str) -> tuple[str | None, str]:
    scope, _, part = key.partition(KEY_SEPARATOR)
    return (None if scope == NO_VALUE else scope), part


def shared_strings(values: "pl.Series | list") -> list:
    """A string column as a list in which equal strings are one object: a million rows with a
    few distinct values (models, teams, budget windows) then cost a list, not a million
    strings. Mostly distinct columns come back as they are."""
    series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.Utf8)
    distinct = series.drop_nulls().unique(maintain_order=True).to_list()
    if len(distinct) * 4 > len(series):
        return series.to_list()
    lookup = np.array([*distinct, None], dtype=object)
    codes = series.cast(pl.Enum(distinct)).to_physical().fill_null(len(distinct)).to_numpy()
    return lookup[codes].tolist()


def number_or_none(value: float) -> float | None:
    """A computed cost, None for NaN (could not be priced)."""
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(slots=True)
class Facts:
    """What the policies need to know about one request, independent of earlier traffic."""

    id: str
    ts_us: int
    cost_usd: float | None
    latency_ms: float | None
    ok: bool  # the request succeeded, so its response could be cached
    tokens: int  # input + output, for tokens-per-minute limits
    model: str | None
    exact_key: str | None = None  # state_key(scope value, prompt_hash)
    exact_seen_before: bool = False  # an earlier request had the same exact_key
    exact_excluded: str | None = None
    semantic_pid: int = -1
    semantic_row: int = -1
    semantic_excluded: str | None = None
    route: int = -1  # index of the routing rule that matched
    route_cost: float | None = None
    route_model: str | None = None  # the model after routing (the recorded one if not routed)
    batch: int = -1  # index of the batch policy that matched
    batch_cost: float | None = None
    budget_keys: tuple = ()  # per budget: state_key(scope value, window), None where it does not apply
    downgrade_costs: tuple = ()  # per budget: cost at its downgrade model, or None
    rate_keys: tuple = ()  # per rate limit: scope value, or None when it does not apply


@dataclass
class EngineState:
    """Everything a policy remembers; one per simulation run (or per enforce process)."""

    exact: CacheState | None = None
    # Every exact-cache key seen (for `excluded_duplicate`, a finding of the simulator's);
    # None where nobody reads it: enforce mode, whose process would keep every key for ever.
    exact_seen: set | None = field(default_factory=set)
    semantic: SemanticIndex | None = None
    budgets: list[BudgetState] = field(default_factory=list)
    rates: list[RateState] = field(default_factory=list)
    # (engine, what its replay loop walks per budget and rate limit, bound to this state's
    # methods): made by analysis.simulate.replay.replay_steps on the first replay, then reused.
    replay_steps: tuple | None = None


# Columns of money, NaN (not None) where unknown, so the replay loop handles plain floats.
MONEY_COLUMNS = ("cost_usd", "route_cost", "batch_cost")
# The columns a row of the replay loop starts with, in the order it unpacks them; then come the
# request's arrival and its cost before budgets, and its budget keys, downgrade costs (NaN where
# unpriced) and rate-limit keys as three tuples (FrameFacts.rows, OneRequestFacts.rows).
REPLAY_COLUMNS = (
    "id",
    "ts_us",
    "ok",
    "tokens",
    "batch",
    "route_model",
    "exact_key",
    "exact_excluded",
    "semantic_pid",
    "semantic_row",
    "semantic_excluded",
)
REPLAY_VALUES = operator.attrgetter(*REPLAY_COLUMNS)  # a Facts' REPLAY_COLUMNS values, as a tuple
# The Facts fields that are one column each (the per-budget and per-rate-limit tuples are split).
ROW_FIELDS = tuple(name for name in Facts.__slots__ if name not in ("budget_keys", "downgrade_costs", "rate_keys"))
ROW_VALUES = operator.attrgetter(*ROW_FIELDS)  # a Facts' ROW_FIELDS values, as a tuple


@functools.lru_cache(maxsize=64)  # a policy's few budget and rate-limit counts: names made once, not per request
def split_columns(budgets: int, rate_limits: int) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The names of the columns the per-budget and per-rate-limit tuples are split into:
    per budget (`budget_key.N`, `downgrade_cost.N`), per rate limit `rate_key.N`."""
    return (
        tuple((f"budget_key.{b}", f"downgrade_cost.{b}") for b in range(budgets)),
        tuple(f"rate_key.{r}" for r in range(rate_limits)),
    )


@dataclass
class FrameFacts:
    """The facts of many requests as columns: the `Facts` fields, with the per-budget and
    per-rate-limit tuples split into one column each (`budget_key.0`, `rate_key.1`, ...).

    A column is a list, a numpy array or a polars Series: the simulator keeps big columns
    compact and the replay pass turns them into lists a chunk at a time (`chunk`)."""

    columns: dict[str, list]
    budgets: int
    rate_limits: int

    def __len__(self) -> int:
        return len(self.columns["id"])

    @classmethod
    def from_facts(cls, facts: list[Facts], budgets: int, rate_limits: int) -> "FrameFacts":
        budget_columns, rate_columns = split_columns(budgets, rate_limits)
        columns = {name: [getattr(f, name) for f in facts] for name in ROW_FIELDS}
        for name in MONEY_COLUMNS:
            columns[name] = [math.nan if v is None else v for v in columns[name]]
        for b, (key_column, cost_column) in enumerate(budget_columns):
            columns[key_column] = [f.budget_keys[b] for f in facts]
            columns[cost_column] = [math.nan if f.downgrade_costs[b] is None else f.downgrade_costs[b] for f in facts]
        for r, column in enumerate(rate_columns):
            columns[column] = [f.rate_keys[r] for f in facts]
        return cls(columns, budgets, rate_limits)

    def chunk(self, name: str, start: int, stop: int) -> list:
        """Rows [start, stop) of a column as a list of Python values."""
        values = self.columns[name]
        if isinstance(values, pl.Series):
            return values.slice(start, stop - start).to_list()
        if isinstance(values, np.ndarray):
            return values[start:stop].tolist()
        return values[start:stop]

    def row(self, names: tuple[str, ...], index: int) -> "list | tuple":
        """The values of row `index` in columns `names`, as Python values (not numpy scalars)."""
        columns = self.columns
        return [v.item() if isinstance(v, np.generic) else v for v in (columns[name][index] for name in names)]

    def chunks(self, names: tuple[str, ...], start: int, stop: int) -> list[list]:
        """`chunk` of several columns, in one call."""
        return [self.chunk(name, start, stop) for name in names]

    def array(self, name: str, rows: slice = slice(None)) -> np.ndarray:
        """Rows of a numeric column as float64, NaN for None."""
        values = self.columns[name][rows]
        if isinstance(values, np.ndarray):
            return values.astype(np.float64, copy=False)
        if isinstance(values, pl.Series):
            return values.cast(pl.Float64).fill_null(math.nan).to_numpy()
        if len(values) < 1000:
            return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        return pl.Series(values, dtype=pl.Float64).fill_null(math.nan).to_numpy()

    def arrival(self, rows: slice = slice(None)) -> np.ndarray:
        """When each response had arrived: request start + latency (0 when unknown), in
        microseconds."""
        latency_us = (np.nan_to_num(self.array("latency_ms", rows)) * 1000).astype(np.int64)
        return np.asarray(self.columns["ts_us"][rows], dtype=np.int64) + latency_us

    def pre_budget_cost(self, rows: slice = slice(None)) -> np.ndarray:
        """Cost of each request after routing and batch, before budgets (NaN: unpriced)."""
        route = np.asarray(self.columns["route"][rows])
        batch = np.asarray(self.columns["batch"][rows])
        routed = np.where(route >= 0, self.array("route_cost", rows), self.array("cost_usd", rows))
        return np.where(batch >= 0, self.array("batch_cost", rows), routed)

    def rows(self, start: int, stop: int) -> Iterator[tuple]:
        """Rows [start, stop) as the replay loop reads them (see REPLAY_COLUMNS), plain Python values."""
        budget_columns, rate_columns = split_columns(self.budgets, self.rate_limits)
        rows = slice(start, stop)
        # Per row a tuple of its budget keys, of its downgrade costs, of its rate-limit keys (an
        # empty tuple each when the policy has none: zip() of nothing would end the rows at once).
        nothing = [()] * (stop - start)
        keys = self.chunks(tuple(k for k, _ in budget_columns), start, stop)
        costs = self.chunks(tuple(c for _, c in budget_columns), start, stop)
        rate_keys = self.chunks(rate_columns, start, stop)
        return zip(
            *self.chunks(REPLAY_COLUMNS, start, stop),
            self.arrival(rows).tolist(),
            self.pre_budget_cost(rows).tolist(),
            zip(*keys, strict=True) if keys else nothing,
            zip(*costs, strict=True) if costs else nothing,
            zip(*rate_keys, strict=True) if rate_keys else nothing,
            strict=True,
        )


class OneRequestLayout:
    """How a `OneRequestFacts` reads a list of columns from a request's `Facts`: one reader per
    list of column names read (decision_row's, a few per policy), made once. Columns of the
    Facts' own fields only are read with one attrgetter; others (`budget_key.N` ...) from all
    the values in layout order (ROW_FIELDS, then per budget its key, per budget its downgrade
    cost, per rate limit its key; money NaN where unknown, as in a FrameFacts)."""

    def __init__(self, budgets: int, rate_limits: int) -> None:
        self.budgets, self.rate_limits = budgets, rate_limits
        budget_columns, rate_columns = split_columns(budgets, rate_limits)
        keys, costs = tuple(k for k, _ in budget_columns), tuple(c for _, c in budget_columns)
        self.index = {name: i for i, name in enumerate((*ROW_FIELDS, *keys, *costs, *rate_columns))}
        self.money = tuple(self.index[name] for name in (*MONEY_COLUMNS, *costs))
        # A request's downgrade costs when none was worked out (the policy downgrades nothing:
        # every call), and the same as a FrameFacts has them.
        self.no_costs, self.nan_costs = (None,) * budgets, (math.nan,) * budgets
        self.readers: dict[tuple[str, ...], Callable[[Facts], tuple]] = {}

    def reader(self, names: tuple[str, ...]) -> Callable[[Facts], tuple]:
        """Reads columns `names` of a request's Facts, as a tuple, in one call."""
        reader = self.readers.get(names)
        if reader is not None:
            return reader
        if len(names) > 1 and all(name in ROW_FIELDS for name in names):
            reader = operator.attrgetter(*names)  # money as it is: None where unknown (see `row`)
        else:
            positions = operator.itemgetter(*[self.index[name] for name in names])

            def reader(one: Facts) -> tuple:
                values = positions(self.values(one))
                return values if len(names) > 1 else (values,)  # itemgetter of one gives the value

        self.readers[names] = reader
        return reader

    def values(self, one: Facts) -> list:
        """All of `one`'s values in layout order, NaN for an unknown amount of money."""
        values = [*ROW_VALUES(one), *one.budget_keys, *one.downgrade_costs, *one.rate_keys]
        for position in self.money:
            if values[position] is None:
                values[position] = math.nan
        return values


@functools.lru_cache(maxsize=64)  # a policy's few budget and rate-limit counts
def one_request_layout(budgets: int, rate_limits: int) -> OneRequestLayout:
    """The `OneRequestLayout` of a policy with `budgets` budgets and `rate_limits` rate limits."""
    return OneRequestLayout(budgets, rate_limits)


class OneRequestFacts:
    """One request's facts read as a one-row FrameFacts is read by `replay` and `decision_row`
    (`rows`, `row`): enforce mode decides one request
    per call, and a FrameFacts of one row (a dict of one-element lists, one per column) cost
    more to make than the decision's rules. It reads the request's `Facts` themselves: `load`
    gives it the next request's; an engine keeps one (as it keeps one Trace) rather than making
    one per request."""

    one: Facts  # the request's facts: set by `load`

    def __init__(self, layout: OneRequestLayout) -> None:
        self.layout = layout

    def load(self, one: Facts) -> None:
        """Read `one` from now on (the request being decided)."""
        self.one = one

    def __len__(self) -> int:
        return 1

    def rows(self, start: int, stop: int) -> tuple[tuple]:
        """The one row, as the replay loop reads it (see REPLAY_COLUMNS), made from the Facts at once
        (its arrival and cost before budgets as FrameFacts' `arrival` and `pre_budget_cost` give them)."""
        one = self.one
        costs = one.downgrade_costs
        if None in costs:  # unpriced, or no downgrade: NaN, as in a FrameFacts
            layout = self.layout
            nan = math.nan
            costs = layout.nan_costs if costs == layout.no_costs else tuple([nan if c is None else c for c in costs])
        ms = one.latency_ms
        cost = one.batch_cost if one.batch >= 0 else (one.route_cost if one.route >= 0 else one.cost_usd)
        return (
            (
                *REPLAY_VALUES(one),
                one.ts_us + (0 if ms is None or ms != ms else int(ms * 1000)),  # arrival
                math.nan if cost is None else cost,  # cost before budgets
                one.budget_keys,
                costs,
                one.rate_keys,
            ),
        )

    # The readers are looked up inline (the layout's method only makes a missing one): enforce
    # mode reads once or twice per call. Read with only the Facts' own fields, an unknown amount
    # of money is None, not NaN as in a FrameFacts (decision_row takes either): a live request's
    # cost is unknown on every call, and its conversion cost more than the read.
    def row(self, names: tuple[str, ...], index: int) -> tuple:
        layout = self.layout
        return (layout.readers.get(names) or layout.reader(names))(self.one)
