"""sink/mined.py: the one reader of mining outputs. A part written before an optional column existed reads it as
null; a part without a row column is not a mining output; scores are aligned with the ids or an error."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streammine.errors import StreamMineError
from streammine.sink.mined import MinedRow, iter_mined_rows, read_batches

_S, _F = pa.list_(pa.string()), pa.list_(pa.float32())


def _part(path, rows, extra=()):
    schema = pa.schema([("query_id", pa.string()), ("query", pa.string()), ("positive_ids", _S),
                        ("negative_ids", _S), ("positive_scores", _F), ("negative_scores", _F), *extra])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path), row_group_size=2)
    return str(path)


def _row(i, n_neg=2, **kw):
    return dict({"query_id": f"q{i}", "query": f"query {i}", "positive_ids": [f"p{i}"],
                 "negative_ids": [f"n{i}_{j}" for j in range(n_neg)], "positive_scores": [0.9],
                 "negative_scores": [0.5 - 0.1 * j for j in range(n_neg)]}, **kw)


def test_rows_in_part_order_with_optional_columns_null_where_an_older_part_lacks_them(tmp_path):
    old = _part(tmp_path / "a.parquet", [_row(0), _row(1, n_neg=0)])  # no prompt, no cross-encoder columns
    new = _part(tmp_path / "b.parquet", [_row(2, prompt="Represent: ", positive_ce_scores=[3.0],
                                              negative_ce_scores=[1.0, 0.5])],
                extra=[("positive_ce_scores", _F), ("negative_ce_scores", _F), ("prompt", pa.string())])
    rows = list(iter_mined_rows([old, new], ("bi-encoder", "cross-encoder"), batch_rows=1))
    assert [r.query_id for r in rows] == ["q0", "q1", "q2"]
    assert [r.part_url for r in rows] == [old, old, new]
    assert rows[0].prompt is None and rows[2].prompt == "Represent: "
    assert rows[0].scores("cross-encoder") is None and rows[2].scores("cross-encoder") == ([3.0], [1.0, 0.5])
    assert rows[1].negative_ids == [] and rows[1].scores("bi-encoder") == ([pytest.approx(0.9)], [])
    with pytest.raises(StreamMineError, match="has no positive_ce_scores/negative_ce_scores.*cross-encoder"):
        rows[0].require_scores("cross-encoder")
    # columns a part lacks are left out of its batches, and named
    present = [p for _, p, _ in read_batches([old, new], ["query_id", "prompt"])]
    assert present[0] == ["query_id"] and present[-1] == ["query_id", "prompt"]


def test_a_part_without_a_row_column_is_not_a_mining_output(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"query_id": ["q"], "query": ["t"], "positive_ids": [["p"]]}), str(path))
    with pytest.raises(StreamMineError, match="x.parquet: not a streammine mining output part.*negative_ids"):
        list(iter_mined_rows([str(path)]))


def test_scores_not_aligned_with_the_ids_are_an_error_naming_the_part_and_query(tmp_path):
    bad = _part(tmp_path / "bad.parquet", [_row(0), _row(1, negative_scores=[0.4])])
    assert len(list(iter_mined_rows([bad]))) == 2  # not asked for: not read, not checked
    with pytest.raises(StreamMineError, match="bad.parquet: query 'q1': positive_scores/negative_scores are not "
                                              "aligned"):
        list(iter_mined_rows([bad], ("bi-encoder",)))
    with pytest.raises(StreamMineError, match="not aligned"):
        MinedRow("q", "t", ["p"], ["a", "b"], scores={"cross-encoder": ([1.0], [0.5])})
