"""The truth suite: its config, a small slice of it through Snakemake, the benchmark."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lambda_hat.config import check_config

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "config" / "truth.yaml"


def _truth_config() -> dict:
    from conftest import validated

    return validated(yaml.safe_load(TRUTH.read_text()))


def test_truth_suite_config_is_valid_and_covers_the_cases():
    config = _truth_config()
    check_config(config)
    targets = config["targets"]
    linreg_d = sorted(t["d_in"] for t in targets.values() if t["family"] == "linreg")
    assert linreg_d == [10, 100, 1000]
    dlns = [t for t in targets.values() if t["family"] == "dln"]
    widths = [t["widths"] for t in dlns]
    sizes = [sum(a * b for a, b in zip(w, w[1:], strict=False)) for w in widths]
    assert min(sizes) <= 60 and 8000 <= max(sizes) <= 12000
    assert len({len(w) for w in widths}) >= 3  # several depths
    assert len({t["rank"] for t in dlns}) >= 3  # several teacher ranks
    # A layer narrower than input and output (the rank matters), and a hidden layer
    # wider than input + output (λ = d_in·d_out/2 whatever the rank).
    assert any(min(w[1:-1]) < min(w[0], w[-1]) for w in widths)
    assert any(len(w) == 3 and w[1] > w[0] + w[2] for w in widths)
    assert any(t["family"] == "mlp" for t in targets.values())
    assert {m["algo"] for m in config["methods"].values()} == {
        "sgld",
        "hmc",
        "mfa",
        "flow",
    }


def _slice_config() -> dict:
    """The suite's d = 10 linear regression and its MLP (shrunk), SGLD and HMC.

    Two truth kinds: exact and the HMC reference (tests/test_pipeline.py covers
    Aoyagi's λ). Each job is a process that compiles its sampler, about 10 s of CPU
    for HMC, so the slice is two targets.
    """
    config = copy.deepcopy(yaml.safe_load(TRUTH.read_text()))
    config["name"] = "truth-slice"
    targets = config["targets"]
    config["targets"] = {
        "linreg_d10": targets["linreg_d10"],
        "mlp_d33": {**targets["mlp_d33"], "n": 300, "train": {"steps": 500}},
    }
    config["methods"] = {
        "sgld": {
            **{k: v for k, v in config["methods"]["sgld"].items() if k != "per_target"},
            "n_steps": 4000,
            "burn_in": 1000,
        },
        "hmc": {**config["methods"]["hmc"], "n_warmup": 100, "n_samples": 2000},
    }
    return config


@pytest.fixture(scope="module")
def truth_slice(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("truth-slice")
    configfile = workdir / "slice.yaml"
    configfile.write_text(yaml.safe_dump(_slice_config()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        "results/llc.parquet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_slice_rows_truths_and_errors(truth_slice):
    llc = pd.read_parquet(truth_slice / "results" / "llc.parquet")
    runs = sorted(zip(llc["target"], llc["method"], strict=True))
    assert runs == [(t, m) for t in ("linreg_d10", "mlp_d33") for m in ("hmc", "sgld")]
    assert (llc["status"] == "ok").all(), llc["message"].tolist()
    by = llc.set_index(["target", "method"])

    assert (by.loc["linreg_d10", "truth_kind"] == "exact").all()
    # The MLP has no closed form: SGLD is measured against HMC, which is not.
    hmc, sgld = by.loc[("mlp_d33", "hmc")], by.loc[("mlp_d33", "sgld")]
    assert sgld["truth_kind"] == "reference"
    assert sgld["truth"] == pytest.approx(hmc["llc_mean"])
    assert sgld["truth_se"] == pytest.approx(hmc["llc_se"])
    assert pd.isna(hmc["truth_kind"]) and pd.isna(hmc["truth"])
    assert np.isnan(hmc["rel_error"])

    measured = llc[llc["truth"].notna()]
    assert len(measured) == 3
    expected = (measured["llc_mean"] - measured["truth"]) / measured["truth"]
    np.testing.assert_allclose(measured["rel_error"], expected, rtol=1e-12)
    # HMC's cost counts every leapfrog step: more than one gradient per transition.
    hmc_runs = llc[llc["algo"] == "hmc"]
    assert (hmc_runs["grad_evals"] > 4 * 2100).all()
    assert (hmc_runs["divergences"] >= 0).all()


def test_slice_hmc_within_3_se_and_3_percent_of_exact_linreg(truth_slice):
    # HMC on the d = 10 linear regression (exact λ̂ ≈ 4.97). nβ(L_n − L0) has a
    # standard deviation near √(d/2) ≈ 2.2 under this Gaussian posterior; 4 × 2000
    # draws with an ESS near 3000 give a standard error near 0.04, so 3% of λ̂
    # (0.15) is about 4 standard errors: failing either bound by chance has a
    # probability below 1e-3.
    llc = pd.read_parquet(truth_slice / "results" / "llc.parquet")
    lin = llc.set_index(["target", "method"]).loc[("linreg_d10", "hmc")]
    err = lin["llc_mean"] - lin["truth"]
    assert abs(err) < 3 * lin["llc_se"], (lin["llc_mean"], lin["llc_se"], lin["truth"])
    assert abs(err) < 0.03 * lin["truth"]
    assert lin["ess"] > 1000 and lin["rhat"] < 1.01
    # A Gaussian posterior, adapted: no divergent transitions after adaptation.
    assert lin["divergences"] == 0


@pytest.mark.parametrize("target", ["linreg_d10", "mlp_d33"])
def test_slice_hmc_counts_adaptation_and_every_leapfrog(truth_slice, target):
    settings = _slice_config()["methods"]["hmc"]
    run = truth_slice / "results" / "runs" / target / "hmc" / "0"
    draws = pd.read_parquet(run / "draws.parquet")
    summary = pd.read_parquet(run / "summary.parquet").iloc[0]
    grad_evals = np.stack(
        [g["grad_evals"].to_numpy() for _, g in draws.groupby("chain")]
    )
    assert grad_evals.shape == (4, settings["n_samples"])
    steps = draws.loc[draws["chain"] == 0, "step"].to_numpy()
    assert steps[0] == settings["n_warmup"] + 1
    assert steps[-1] == settings["n_warmup"] + settings["n_samples"]
    # One gradient at w*, one per leapfrog step (a transition takes at least one)
    # and one per draw for L_n: the first draw comes after the whole adaptation.
    assert (np.diff(grad_evals, axis=1) >= 2).all()
    assert (grad_evals[:, 0] >= 1 + settings["n_warmup"] + 2).all()
    # The run's cost is every chain's, the draws' last values summed.
    assert summary["grad_evals"] == pytest.approx(grad_evals[:, -1].sum())
    assert summary["divergences"] >= int(draws["divergent"].sum())
    accept = draws["accept_rate"].to_numpy()
    assert ((accept >= 0) & (accept <= 1)).all()
    assert abs(accept.mean() - settings["target_accept"]) < 0.1


def test_accuracy_benchmark_writes_every_method_and_target(truth_slice, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "accuracy", ROOT / "benchmarks" / "accuracy.py"
    )
    accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy)
    out = tmp_path / "accuracy.md"
    llc = truth_slice / "results" / "llc.parquet"
    assert accuracy.main([str(llc), "--out", str(out), "--note", "A slice."]) == 0
    text = out.read_text()
    assert "cores" in text and "jax " in text and "A slice." in text
    per_method = text.split("## Per method")[1].split("## Per target")[0]
    assert "| hmc | 2 | 0 |" in per_method and "| sgld | 2 | 0 |" in per_method
    per_target = text.split("## Per target")[1]
    for target in ("linreg_d10", "mlp_d33"):
        assert per_target.count(f"| {target} |") == 2
