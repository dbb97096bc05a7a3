"""The row types are the schema: same names, order and types; a misspelt column fails."""

import types
import typing
from dataclasses import fields
from datetime import UTC, datetime

import pytest

from analysis.store.datadir import rows_to_frame
from analysis.store.rows import ContentRow, RequestRow
from analysis.store.schema import CONTENTS, REQUESTS

SQL_TYPES = {
    str: {"VARCHAR"},
    int: {"BIGINT", "INTEGER"},
    float: {"DOUBLE"},
    bool: {"BOOLEAN"},
    datetime: {"TIMESTAMPTZ"},
}


def _base(annotation) -> type:
    """str from `str | None`, and from `str`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


@pytest.mark.parametrize(("row_type", "columns"), [(RequestRow, REQUESTS), (ContentRow, CONTENTS)])
def test_a_row_type_has_the_columns_of_its_relation(row_type, columns):
    hints = typing.get_type_hints(row_type)
    assert [f.name for f in fields(row_type)] == [c.name for c in columns]
    for column in columns:
        assert column.sql_type in SQL_TYPES[_base(hints[column.name])], column.name


def test_a_misspelt_column_fails_where_the_row_is_made():
    with pytest.raises(TypeError, match="input_token"):
        RequestRow(id="r1", ts=datetime.now(UTC), input_token=3)


def test_the_writer_rejects_a_column_it_does_not_know():
    with pytest.raises(ValueError, match="not a column: input_token"):
        rows_to_frame([{"id": "r1", "input_token": 3}], REQUESTS)


def test_rows_and_dicts_make_the_same_frame():
    ts = datetime(2026, 3, 3, tzinfo=UTC)
    typed = rows_to_frame([RequestRow(id="r1", ts=ts, input_tokens=3, cost_usd=0.5)], REQUESTS)
    plain = rows_to_frame([{"id": "r1", "ts": ts, "input_tokens": 3, "cost_usd": 0.5}], REQUESTS)
    assert typed.equals(plain)
    assert typed.columns == [c.name for c in REQUESTS]
