"""The whole pipeline through Snakemake on the tiny config: outputs, logs, hand runs."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from snakemake_runs import finished_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.getbasetemp())


def test_table_rows_carry_truth_and_provenance(finished):
    llc = pd.read_parquet(finished / "results" / "llc.parquet")
    assert set(llc["truth_kind"]) == {"exact", "aoyagi"}
    assert llc["rel_error"].notna().all()
    assert (llc["seed"] == 0).all()
    assert llc["key_data"].map(len).eq(2).all()
    assert llc["key_labels"].map(lambda labels: labels[0]).eq("rule=sample").all()
    assert (llc["grad_evals"] > 0).all() and (llc["wall_s"] > 0).all()
    # What each run used where its settings leave the choice to the target.
    used = llc["settings_used"].map(json.loads)
    assert (used.map(lambda u: u["batch_size"]) <= llc["n"]).all()


def test_logs_have_progress(finished):
    text = (finished / "logs" / "sample" / "linreg" / "sgld" / "0.log").read_text()
    assert "draw 30/30" in text
    assert "λ̂ =" in text


def test_hand_run_gives_the_same_draws(finished, tmp_path):
    # The first log line is the exact command; run it again into other paths.
    log = (finished / "logs" / "sample" / "dln" / "sgld" / "0.log").read_text()
    command = log.splitlines()[0].split(" INFO lambda-hat ", 1)[1]
    args = shlex.split(command)
    draws, summary = tmp_path / "draws.parquet", tmp_path / "summary.parquet"
    args[args.index("--draws") + 1] = str(draws)
    args[args.index("--summary") + 1] = str(summary)
    lambda_hat = shutil.which("lambda-hat", path=str(Path(sys.executable).parent))
    subprocess.run([lambda_hat, *args], cwd=finished, check=True, capture_output=True)
    original = finished / "results" / "runs" / "dln" / "sgld" / "0" / "draws.parquet"
    assert draws.read_bytes() == original.read_bytes()
    rows = [
        pd.read_parquet(p) for p in (summary, original.with_name("summary.parquet"))
    ]
    assert rows[0]["llc_mean"].equals(rows[1]["llc_mean"])
