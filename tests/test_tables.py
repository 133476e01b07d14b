"""Table schemas, atomic writes and the aggregate."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from lambda_hat.tables import (
    DRAWS,
    LLC,
    aggregate,
    draws_table,
    read_table,
    rows_table,
    write_table,
)


def row(target, method, rep, algo="sgld", llc=1.0, truth=None, kind=None, se=0.1):
    return {
        "target": target,
        "method": method,
        "algo": algo,
        "rep": rep,
        "seed": 0,
        "key_data": [1, 2],
        "llc_mean": llc,
        "llc_se": se,
        "truth": truth,
        "truth_kind": kind,
        "status": "ok",
    }


def test_draws_table_is_long_and_typed():
    draws = {
        "step": np.array([10, 20, 30]),
        "grad_evals": np.array([1.0, 2.0, 3.0]),
        "burn_in": np.array([True, False, False]),
        "loss": np.arange(6.0).reshape(2, 3),
    }
    table = draws_table(draws)
    assert table.schema == DRAWS
    assert table.column("chain").to_pylist() == [0, 0, 0, 1, 1, 1]
    assert table.column("step").to_pylist() == [10, 20, 30] * 2
    assert table.column("loss").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert table.column("elbo").null_count == 6


def test_unknown_columns_are_refused():
    with pytest.raises(ValueError, match="not in the DRAWS schema"):
        draws_table({"step": np.arange(2), "bogus": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="not in the schema"):
        rows_table([{**row("a", "m", 0), "bogus": 1}])


def test_aggregate_is_independent_of_input_order(tmp_path):
    paths = []
    for i, (t, m, r) in enumerate(
        [("b", "sgld", 1), ("a", "sgld", 0), ("b", "sgld", 0)]
    ):
        path = tmp_path / f"{i}.parquet"
        write_table(rows_table([row(t, m, r, truth=2.0, kind="exact")]), path)
        paths.append(path)
    forward = aggregate(paths)
    backward = aggregate(paths[::-1])
    assert forward.equals(backward)
    assert forward.schema == LLC
    assert forward.column("target").to_pylist() == ["a", "b", "b"]
    assert forward.column("rep").to_pylist() == [0, 0, 1]
    assert forward.column("rel_error").to_pylist() == [-0.5, -0.5, -0.5]


def test_hmc_is_the_reference_where_no_truth_is_known(tmp_path):
    rows = [
        row("mlp", "hmc", 0, algo="hmc", llc=4.0, se=0.1),
        row("mlp", "hmc", 1, algo="hmc", llc=6.0, se=0.1),
        row("mlp", "sgld", 0, llc=4.5),
        row("lr", "sgld", 0, llc=3.0, truth=2.0, kind="exact"),
    ]
    path = tmp_path / "s.parquet"
    write_table(rows_table(rows), path)
    df = aggregate([path]).to_pandas().set_index(["target", "method", "rep"])
    sgld = df.loc[("mlp", "sgld", 0)]
    assert sgld["truth"] == 5.0 and sgld["truth_kind"] == "reference"
    assert sgld["rel_error"] == pytest.approx(-0.1)
    assert sgld["truth_se"] == pytest.approx(math.sqrt(0.02) / 2)
    assert math.isnan(df.loc[("mlp", "hmc", 0)]["truth"])
    assert df.loc[("lr", "sgld", 0)]["truth_kind"] == "exact"


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write_table(rows_table([row("a", "m", 0)]), path)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    table = rows_table([row("b", "m", 0)])
    original = pq.write_table

    def failing(t, where):
        original(t, where)
        raise Boom

    monkeypatch.setattr(pq, "write_table", failing)
    with pytest.raises(Boom):
        write_table(table, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_reading_a_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"nope")
    with pytest.raises(ValueError, match="broken.parquet"):
        read_table(path, LLC)


def test_summary_files_written_before_the_importance_columns_still_read(tmp_path):
    """A summary.parquet from before is_ess, kl_bound, llc_is and settings_used
    existed aggregates, the four read as null; any other missing column is still an
    error that names the file."""
    table = rows_table([row("t", "m", 0)])
    old = table.drop_columns(["is_ess", "kl_bound", "llc_is", "settings_used"])
    pq.write_table(old, tmp_path / "old.parquet")
    read = read_table(tmp_path / "old.parquet", LLC)
    assert read.schema == LLC
    assert read.column("is_ess").null_count == 1
    assert read.column("settings_used").null_count == 1
    assert aggregate([tmp_path / "old.parquet"]).num_rows == 1
    pq.write_table(old.drop_columns(["llc_se"]), tmp_path / "broken.parquet")
    with pytest.raises(ValueError, match=r"broken\.parquet lacks .*\['llc_se'\]"):
        read_table(tmp_path / "broken.parquet", LLC)
