"""The data directory: segments, views, merging, migrations, purge."""

import json
import os
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analysis.store import datadir as store_module
from analysis.store.datadir import (
    MERGE_FAN_IN,
    SegmentWriter,
    Store,
    StoreError,
    live_segments,
    new_id,
)
from analysis.store.schema import CONTENTS, DECISIONS, REQUESTS

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def request_row(i: int, **extra) -> dict:
    return {
        "id": f"r{i:05d}",
        "ts": T0 + timedelta(minutes=i),
        "provider": "openai",
        "endpoint": "chat",
        "model": "gpt-4o-mini",
        "input_tokens": 10 * i,
        "output_tokens": i,
        "cost_usd": 0.001 * i,
        "cost_source": "computed",
        "usage_source": "provider",
        "outcome": "ok",
        **extra,
    }


def content_row(i: int) -> dict:
    return {
        "id": f"r{i:05d}",
        "ts": T0 + timedelta(minutes=i),
        "prompt_text": f"user: question {i}",
        "response_text": f"answer {i}",
    }


def test_new_data_dir_has_the_exact_schema(data_dir):
    store = Store(data_dir)
    with store.connect() as con:
        requests = con.execute("DESCRIBE requests").fetchall()
        contents = con.execute("DESCRIBE contents").fetchall()
        decisions = con.execute("DESCRIBE decisions").fetchall()
    assert [(r[0], r[1]) for r in decisions] == [
        (c.name, c.sql_type.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")) for c in DECISIONS
    ]
    assert [(r[0], r[1]) for r in requests] == [
        (c.name, c.sql_type.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")) for c in REQUESTS
    ]
    assert [(r[0], r[1]) for r in contents] == [
        (c.name, c.sql_type.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")) for c in CONTENTS
    ]
    assert json.loads((data_dir / "meta.json").read_text()) == {"migrations": ["m001_initial", "m002_decisions"]}
    assert oct((data_dir / "salt").stat().st_mode & 0o777) == "0o600"


def test_written_batches_are_one_relation(data_dir):
    store = Store(data_dir)
    writer = SegmentWriter(store, "inst")
    writer.write([request_row(1), request_row(2)], [content_row(1)])
    writer.write([request_row(3)], [])
    with store.connect() as con:
        assert con.execute("SELECT id, input_tokens FROM requests ORDER BY id").fetchall() == [
            ("r00001", 10),
            ("r00002", 20),
            ("r00003", 30),
        ]
        assert con.execute("SELECT prompt_text FROM contents").fetchall() == [("user: question 1",)]
    assert sorted(p.name for p in (data_dir / "records").iterdir()) == [
        "inst-L0-000000000000-000000000000.parquet",
        "inst-L0-000000000001-000000000001.parquet",
    ]


def test_readers_and_writers_of_several_instances_work_at_once(data_dir):
    store = Store(data_dir)
    a, b = SegmentWriter(Store(data_dir)), SegmentWriter(Store(data_dir))
    a.write([request_row(1)], [])
    with store.connect() as con:  # a reader open while writers keep writing
        b.write([request_row(2)], [])
        a.write([request_row(3)], [])
        assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == 1  # its snapshot
    assert store.requests_frame()["id"].to_list() == ["r00001", "r00002", "r00003"]


def test_merging_keeps_every_row_once_and_bounds_the_file_count(data_dir):
    store = Store(data_dir)
    writer = SegmentWriter(store, "inst")
    n = MERGE_FAN_IN * MERGE_FAN_IN + 3
    for i in range(n):
        writer.write([request_row(i)], [content_row(i)])
        if i % 7 == 0:
            writer.maintain(now=0.0)
    writer.maintain(now=0.0)
    ids = store.requests_frame()["id"].to_list()
    assert ids == [f"r{i:05d}" for i in range(n)]
    assert store.contents_frame().height == n
    live = live_segments(data_dir / "records")
    assert sorted(s.level for s in live) == [0, 0, 0, 2]
    # Superseded files stay for a grace period (a running query may have listed them) ...
    assert len(os.listdir(data_dir / "records")) > len(live)
    writer.maintain(now=store_module.SUPERSEDED_GRACE_SECONDS + 1)
    # ... and are deleted after it.
    assert len(os.listdir(data_dir / "records")) == len(live)
    assert store.requests_frame().height == n


def test_a_half_written_file_is_never_read(data_dir):
    store = Store(data_dir)
    SegmentWriter(store, "inst").write([request_row(1)], [])
    (data_dir / "records" / ".inst-L0-000000000001-000000000001.parquet.tmp").write_bytes(b"PAR1 partial")
    assert store.requests_frame()["id"].to_list() == ["r00001"]


def test_old_segments_without_new_columns_read_as_null(data_dir):
    store = Store(data_dir)
    old = pl.DataFrame({"id": ["old1"], "ts": [T0], "provider": ["openai"], "input_tokens": [5]})
    old.write_parquet(data_dir / "records" / "old-L0-000000000000-000000000000.parquet")
    SegmentWriter(store, "new").write([request_row(1, team="support")], [])
    frame = store.requests_frame()
    assert frame.columns == [c.name for c in REQUESTS]
    assert frame.filter(pl.col("id") == "old1").select("input_tokens", "team").row(0) == (5, None)


def test_a_data_dir_from_a_newer_version_is_refused(data_dir):
    Store(data_dir)
    (data_dir / "meta.json").write_text(json.dumps({"migrations": ["m001_initial", "m099_future"]}))
    with pytest.raises(StoreError, match="newer llm-shadow"):
        Store(data_dir)


def test_missing_data_dir_is_an_error_when_not_creating(tmp_path):
    with pytest.raises(StoreError, match="no data directory"):
        Store(tmp_path / "nope", create=False)


def test_a_file_where_the_data_dir_should_be_is_an_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store(tmp_path / "file")


def test_purge_removes_old_content_only(data_dir):
    store = Store(data_dir)
    writer = SegmentWriter(store, "inst")
    writer.write([request_row(i) for i in range(10)], [content_row(i) for i in range(10)])
    deleted = store.purge_contents(T0 + timedelta(minutes=4))
    assert deleted == 4
    assert store.contents_frame()["id"].to_list() == [f"r{i:05d}" for i in range(4, 10)]
    assert store.requests_frame().height == 10
    assert store.purge_requests(T0 + timedelta(minutes=100)) == 10
    assert list((data_dir / "records").iterdir()) == []


def test_ids_are_time_ordered_and_unique():
    ids = [new_id(1_700_000_000 + i / 1000) for i in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    at = 1_764_500_000.123
    for made in [new_id(at) for _ in range(50)]:
        assert len(made) == 22 and made[:12] == f"{int(at * 1000):012x}" and int(made, 16) >= 0


def test_compact_merges_stopped_recorders_segments_and_later_deletes_them(data_dir):
    store = Store(data_dir)
    for name in ("a", "b"):
        writer = SegmentWriter(store, name)
        for i in range(5):
            n = {"a": 0, "b": 100}[name] + i
            writer.write([request_row(n)], [content_row(n)])
    before = store.requests_frame()
    hour_ago = time.time() - 3600
    for path in [*(data_dir / "records").iterdir(), *(data_dir / "contents").iterdir()]:
        os.utime(path, (hour_ago, hour_ago))
    # A recorder that is still writing is left alone.
    SegmentWriter(store, "c").write([request_row(500)], [])
    SegmentWriter(store, "c").write([request_row(501)], [])

    merged, deleted = store.compact()
    assert (merged, deleted) == (10 + 10, 0)  # a's and b's 5 requests and 5 contents segments
    assert sorted((s.instance, s.lo, s.hi) for s in live_segments(data_dir / "records")) == [
        ("a", 0, 4),
        ("b", 0, 4),
        ("c", 0, 0),
        ("c", 1, 1),
    ]
    after = store.requests_frame()
    assert after.height == before.height + 2
    assert after.filter(pl.col("id").is_in(before["id"].implode())).equals(before)  # each row once, unchanged

    # Once no query can still be reading them, the merged-away files go.
    merged, deleted = store.compact(now=time.time() + store_module.SUPERSEDED_GRACE_SECONDS + 1)
    assert deleted == 20
    assert len(list((data_dir / "records").iterdir())) == 4
    assert store.requests_frame().height == before.height + 2


def test_recorded_usage_keys_are_those_recorded_with_tokens(data_dir):
    store = Store(data_dir)
    SegmentWriter(store, "a").write(
        [
            request_row(1, usage_key="openai-batch:b1", usage_source="provider"),
            request_row(2, usage_key="openai-batch:b1", usage_source="none"),
            request_row(3, usage_key="openai-batch:b2", usage_source="none"),
            request_row(4),
        ],
        [],
    )
    assert store.recorded_usage_keys() == {"openai-batch:b1"}
