"""Every table's pyarrow schema, in one place, and atomic Parquet writers.

- ``DRAWS``: one row per chain and draw of a run (``draws.parquet``).
- ``LLC``: one self-describing row per run; a run's ``summary.parquet`` holds its row
  and ``results/llc.parquet`` holds all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lambda_hat.io import atomic_path

# Columns filled by some methods only are nullable and stay null elsewhere.
DRAWS = pa.schema(
    [
        pa.field("chain", pa.int32(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("grad_evals", pa.float64(), nullable=False),
        pa.field("burn_in", pa.bool_(), nullable=False),
        pa.field("loss", pa.float64()),
        pa.field("llc_running", pa.float64()),
        pa.field("elbo", pa.float64()),
        pa.field("entropy", pa.float64()),
        pa.field("grad_norm", pa.float64()),
        pa.field("weight_min", pa.float64()),
        pa.field("weight_max", pa.float64()),
        pa.field("accept_rate", pa.float64()),
        pa.field("divergent", pa.bool_()),
    ]
)

LLC = pa.schema(
    [
        pa.field("target", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("algo", pa.string(), nullable=False),
        pa.field("rep", pa.int32(), nullable=False),
        pa.field("family", pa.string()),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("key_data", pa.list_(pa.uint32())),
        pa.field("key_impl", pa.string()),
        pa.field("key_labels", pa.list_(pa.string())),
        pa.field("n", pa.int64()),
        pa.field("d", pa.int64()),
        pa.field("beta", pa.float64()),
        pa.field("gamma", pa.float64()),
        pa.field("L0", pa.float64()),
        pa.field("grad_norm_star", pa.float64()),
        pa.field("n_chains", pa.int32()),
        pa.field("llc_mean", pa.float64()),
        pa.field("llc_se", pa.float64()),
        pa.field("llc_chains", pa.list_(pa.float64())),
        pa.field("llc_chain_sd", pa.float64()),
        pa.field("ess", pa.float64()),
        pa.field("rhat", pa.float64()),
        pa.field("divergences", pa.int64()),
        pa.field("converged", pa.bool_()),
        pa.field("is_ess", pa.float64()),
        pa.field("kl_bound", pa.float64()),
        pa.field("llc_is", pa.float64()),
        pa.field("truth", pa.float64()),
        pa.field("truth_kind", pa.string()),
        pa.field("truth_se", pa.float64()),
        pa.field("rel_error", pa.float64()),
        pa.field("grad_evals", pa.float64()),
        pa.field("wall_s", pa.float64()),
        pa.field("compile_s", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        pa.field("settings", pa.string()),
        pa.field("settings_used", pa.string()),
        pa.field("version", pa.string()),
    ]
)

TRUTH_KINDS = ("exact", "aoyagi", "reference")
# Summary columns added after the first tables were written: a file without them reads
# them as null, so results from an older version still aggregate and report.
LATER_LLC_COLUMNS = ("is_ess", "kl_bound", "llc_is", "settings_used")
SORT_KEYS = ["target", "method", "rep"]


def draws_table(draws: dict[str, np.ndarray]) -> pa.Table:
    """Long-format draws table from a method's columns.

    Per-chain columns have shape (chains, draws); per-draw ones have shape (draws,) and
    are repeated for every chain.
    """
    per_chain = {k: np.asarray(v) for k, v in draws.items() if np.ndim(v) == 2}
    chains, n_draws = next(iter(per_chain.values())).shape
    cols = {"chain": np.repeat(np.arange(chains, dtype=np.int32), n_draws)}
    for name, value in draws.items():
        value = np.asarray(value)
        cols[name] = value.ravel() if value.ndim == 2 else np.tile(value, chains)
    unknown = set(cols) - set(DRAWS.names)
    if unknown:
        raise ValueError(f"draws columns not in the DRAWS schema: {sorted(unknown)}")
    size = chains * n_draws
    arrays = [
        pa.array(cols[f.name], type=f.type)
        if f.name in cols
        else pa.nulls(size, type=f.type)
        for f in DRAWS
    ]
    return pa.Table.from_arrays(arrays, schema=DRAWS)


def rows_table(rows: Iterable[dict], schema: pa.Schema = LLC) -> pa.Table:
    """A table of ``schema`` from dict rows.

    Missing keys are null; unknown ones are refused.
    """
    rows = list(rows)
    for row in rows:
        unknown = set(row) - set(schema.names)
        if unknown:
            raise ValueError(f"columns not in the schema: {sorted(unknown)}")
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


def write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a Parquet file atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | os.PathLike, schema: pa.Schema) -> pa.Table:
    """Read a Parquet file and cast it to ``schema``, naming the file if that fails."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"cannot read Parquet file {path}: {err}") from err
    for name in LATER_LLC_COLUMNS if schema is LLC else ():
        if name not in table.column_names:
            field = schema.field(name)
            table = table.append_column(field, pa.nulls(len(table), field.type))
    missing = set(schema.names) - set(table.column_names)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}")
    return table.select(schema.names).cast(schema)


def aggregate(paths: Iterable[str | os.PathLike]) -> pa.Table:
    """All runs' summary rows in one table, sorted by target, method and replicate.

    Targets with no exact or asymptotic truth are measured against the HMC reference:
    the mean λ̂ of their ``hmc`` runs that finished, with its standard error.
    """
    tables = [read_table(p, LLC) for p in paths]
    if not tables:
        return LLC.empty_table()
    df = pa.concat_tables(tables).to_pandas()
    df = df.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
    df = _fill_reference(df)
    return pa.Table.from_pandas(df, schema=LLC, preserve_index=False)


def _fill_reference(df: pd.DataFrame) -> pd.DataFrame:
    ref = df[(df["algo"] == "hmc") & (df["status"] == "ok")]
    for target, group in ref.groupby("target"):
        # The reference does not measure itself.
        rows = (df["target"] == target) & df["truth"].isna() & (df["algo"] != "hmc")
        if not rows.any():
            continue
        value = float(group["llc_mean"].mean())
        se = float(np.sqrt(np.sum(group["llc_se"] ** 2)) / len(group))
        df.loc[rows, "truth"] = value
        df.loc[rows, "truth_se"] = se
        df.loc[rows, "truth_kind"] = "reference"
    has_truth = df["truth"].notna() & (df["truth"] != 0)
    df["rel_error"] = np.where(
        has_truth, (df["llc_mean"] - df["truth"]) / df["truth"], np.nan
    )
    df.loc[~has_truth, "rel_error"] = None
    return df
