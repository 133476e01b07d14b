"""The HTML report, built from fake runs written with the real table schemas.

No sampling happens here: every run's draws are made up with numpy (AR(1) losses) and
its summary row is computed from them: λ̂ per chain, the ESS an AR(1) series of that
length has, and R̂ from the chains' means and variances. The experiment holds, on
purpose, a diverged run, a short chain, a negative λ̂, a target whose w* is not a
minimum and a VI fit that did not converge, so that every flag has something to find.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup
from PIL import Image

from lambda_hat import report
from lambda_hat.estimate import running_llc
from lambda_hat.result import diverged_message
from lambda_hat.tables import (
    DRAWS,
    aggregate,
    draws_table,
    rows_table,
    write_table,
)

# name -> (n, d, L0, truth, truth_kind, ‖∇L_n(w*)‖). mlp's gradient is far above
# 3·sqrt(d/n) ≈ 0.54, so mlp is the target whose w* is not a minimum; it has no truth
# and gets the HMC runs' mean as its reference from aggregate().
TARGETS = {
    "linreg": (1000, 10, 1.41, 4.97, "exact", 1e-9),
    "dln": (10000, 47, 1.42, 9.0, "aoyagi", 0.06),
    "mlp": (1000, 33, 0.22, None, None, 2.0),
}
# method -> (algo, replicates)
METHODS = {
    "sgld": ("sgld", 2),
    "short": ("sgld", 1),
    "hmc": ("hmc", 1),
    "vi": ("mfa", 1),
}
DIVERGED = ("dln", "sgld", 1)
NEGATIVE = ("linreg", "hmc")
NOT_CONVERGED = ("mlp", "vi")
# The VI fit whose q is far from π: its draws weighted by π/q are worth 2.5 of π's.
FAR_FROM_POSTERIOR = ("dln", "vi")
CHAINS = 4
DRAWS_PER_CHAIN = 2000
RHO = 0.5
SHORT_DRAWS = 12
THIN = 10


def ar1(rng, shape, rho):
    """Unit-variance AR(1) series along the last axis."""
    out = np.empty(shape)
    out[..., 0] = rng.standard_normal(shape[:-1])
    for t in range(1, shape[-1]):
        out[..., t] = rho * out[..., t - 1] + math.sqrt(
            1 - rho**2
        ) * rng.standard_normal(shape[:-1])
    return out


def diagnostics(losses: np.ndarray, rho: float) -> tuple[float, float]:
    """ESS and R̂ of (chains, draws) AR(1) losses with coefficient ``rho``.

    The ESS is the AR(1) one, N(1 − ρ)/(1 + ρ); R̂ is Gelman and Rubin's
    sqrt(var⁺ / W) from the within-chain variance W and the variance of chain means.
    """
    chains, draws = losses.shape
    ess = chains * draws * (1 - rho) / (1 + rho)
    within = losses.var(axis=1, ddof=1).mean()
    between = losses.mean(axis=1).var(ddof=1)
    var_plus = (draws - 1) / draws * within + between
    return ess, math.sqrt(var_plus / within)


def base_row(target, method, rep, algo):
    n, d, L0, truth, kind, grad = TARGETS[target]
    beta = 1 / math.log(n)
    return {
        "target": target,
        "method": method,
        "algo": algo,
        "rep": rep,
        "family": target,
        "seed": 0,
        "key_data": [0, rep],
        "key_impl": "threefry2x32",
        "key_labels": [f"target={target}", f"method={method}", f"rep={rep}"],
        "n": n,
        "d": d,
        "beta": beta,
        "gamma": 1.0,
        "L0": L0,
        "grad_norm_star": grad,
        "n_chains": CHAINS,
        "truth": truth,
        "truth_kind": kind,
        "grad_evals": 0.0,
        "wall_s": 1.5 + rep,
        "compile_s": 0.5,
        "status": "ok",
        "message": "",
        "settings": json.dumps({"algo": algo}),
        "version": "test",
    }


def mcmc_run(rng, target, method, rep, algo):
    """Draws and summary row of a fake MCMC run whose λ̂ is near the truth (or 5)."""
    row = base_row(target, method, rep, algo)
    n, _, L0, truth, _, _ = TARGETS[target]
    nbeta = n * row["beta"]
    level = -0.8 if (target, method) == NEGATIVE else (truth or 5.0)
    draws_per_chain = SHORT_DRAWS if method == "short" else DRAWS_PER_CHAIN
    noise = ar1(rng, (CHAINS, draws_per_chain), RHO)
    losses = L0 + (level + 1.5 * noise) / nbeta
    if (target, method, rep) == DIVERGED:
        losses[2, 300:] = np.inf
    steps = (np.arange(draws_per_chain) + 1) * THIN
    keep = steps > steps[draws_per_chain // 5]
    grad_evals = steps * 0.1 + np.arange(1, draws_per_chain + 1)
    if algo == "hmc":  # HMC counts leapfrog steps per chain
        grad_evals = np.broadcast_to(grad_evals * 5, losses.shape).copy()
    draws = {
        "step": steps,
        "grad_evals": grad_evals,
        "burn_in": ~keep,
        "loss": losses,
        "llc_running": running_llc(losses, keep, nbeta, L0),
    }
    if algo == "hmc":
        draws["accept_rate"] = np.full(losses.shape, 0.8)
        draws["divergent"] = np.zeros(losses.shape, bool)
        row["divergences"] = 0
    message = diverged_message(losses, steps)
    # A diverged chain's infinite losses stand in for finite ones in its diagnostics.
    kept = np.where(np.isfinite(losses), losses, L0)[:, keep]
    llc_chains = nbeta * (kept.mean(axis=1) - L0)
    ess, rhat = diagnostics(kept, RHO)
    row |= {
        "llc_mean": float(llc_chains.mean()),
        "llc_se": float(nbeta * kept.std(ddof=1) / math.sqrt(ess)),
        "llc_chains": [float(v) for v in llc_chains],
        "ess": ess,
        "rhat": rhat,
        "grad_evals": float(np.max(grad_evals)) * CHAINS,
    }
    if message:
        row |= {
            "status": "diverged",
            "message": message,
            "llc_mean": math.nan,
            "llc_se": math.nan,
        }
    return draws, row


def vi_run(rng, target, method, rep, algo):
    """Draws (ELBO only) and summary row of a fake VI fit."""
    row = base_row(target, method, rep, algo)
    truth = TARGETS[target][3] or 5.0
    steps = np.arange(1, 501)
    elbo = -50.0 * np.exp(-steps / 80.0)[None, :] - 3.0
    elbo = elbo + 0.3 * rng.standard_normal((CHAINS, len(steps)))
    draws = {
        "step": steps,
        "grad_evals": steps * 1.0,
        "elbo": elbo,
        "burn_in": steps < 0,
    }
    row |= {
        "llc_mean": truth * 1.05,
        "llc_se": 0.03,
        "llc_chains": [truth * 1.05] * CHAINS,
        "ess": None,
        "rhat": None,
        "converged": (target, method) != NOT_CONVERGED,
        "grad_evals": 500.0 * CHAINS,
    }
    far = (target, method) == FAR_FROM_POSTERIOR
    row |= {
        "is_ess": 2.5 if far else 950.0,
        "kl_bound": 11.0 if far else 0.01,
        "llc_is": truth * (0.8 if far else 1.0),
    }
    return draws, row


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Runs, llc.parquet and the built report of the fake experiment."""
    root = tmp_path_factory.mktemp("experiment")
    rng = np.random.default_rng(0)
    summaries = []
    for target, (method, (algo, reps)) in itertools.product(TARGETS, METHODS.items()):
        for rep in range(reps):
            make = vi_run if algo == "mfa" else mcmc_run
            draws, row = make(rng, target, method, rep, algo)
            run_dir = root / "runs" / target / method / str(rep)
            write_table(draws_table(draws), run_dir / "draws.parquet")
            write_table(rows_table([row]), run_dir / "summary.parquet")
            summaries.append(run_dir / "summary.parquet")
    write_table(aggregate(summaries), root / "llc.parquet")
    index = report.build_report(
        root / "llc.parquet",
        runs_dir=root / "runs",
        out_dir=root / "report",
        title="fake <experiment>",
        config_digest="0123456789ab",
    )
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")
    return {"root": root, "index": index, "soup": soup}


def summary_row(soup, target, method):
    rows = soup.select(
        f'table.summary tbody tr[data-target="{target}"][data-method="{method}"]'
    )
    assert len(rows) == 1, (target, method)
    return rows[0]


def flag_keys(tr) -> set[str]:
    return {
        cls.removeprefix("flag-")
        for span in tr.select("span.flag")
        for cls in span["class"]
        if cls.startswith("flag-")
    }


def test_every_target_and_method_has_one_summary_row(experiment):
    rows = experiment["soup"].select("table.summary tbody tr")
    seen = [(tr["data-target"], tr["data-method"]) for tr in rows]
    assert sorted(seen) == sorted(itertools.product(TARGETS, METHODS))
    runs = experiment["soup"].select("table.runs tbody tr")
    assert len(runs) == sum(reps for _, reps in METHODS.values()) * len(TARGETS)


def test_every_image_is_an_embedded_png_that_decodes(experiment):
    images = experiment["soup"].find_all("img")
    # λ̂ by method, error against cost, then per target the running λ̂ and one trace
    # figure per method.
    assert len(images) == 2 + len(TARGETS) * (1 + len(METHODS))
    prefix = "data:image/png;base64,"
    for img in images:
        assert img["src"].startswith(prefix), img.get("alt")
        assert img.get("alt")
        data = base64.b64decode(img["src"][len(prefix) :], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.format == "PNG"
            assert im.width > 300 and im.height > 200


def test_problem_flags_sit_in_their_rows(experiment):
    soup = experiment["soup"]
    # The diverged replicate: its target × method row and its run row.
    assert "diverged" in flag_keys(summary_row(soup, "dln", "sgld"))
    run = soup.select_one(
        'table.runs tr[data-target="dln"][data-method="sgld"][data-rep="1"]'
    )
    assert "diverged" in flag_keys(run)
    assert "non-finite loss at step" in run.get_text()
    # 4 chains of 12 draws, 10 kept, with ρ = 0.5 have an ESS of about 13.
    for target in TARGETS:
        assert "ess" in flag_keys(summary_row(soup, target, "short"))
    assert "negative" in flag_keys(summary_row(soup, *NEGATIVE))
    assert "not_converged" in flag_keys(summary_row(soup, *NOT_CONVERGED))
    # A VI fit far from π: flagged, its importance ESS shown and marked, the bound
    # on KL(q‖π) (11 nats on λ̂ = 9.45: 1.16 per unit), the ESS and the re-weighted
    # λ̂ in the flag's explanation; the other VI fits show their ESS (950) unflagged.
    far = summary_row(soup, *FAR_FROM_POSTERIOR)
    assert "far_from_posterior" in flag_keys(far)
    why = far.select_one("span.flag-far_from_posterior")["title"]
    assert "KL(q‖π) ≥ 11 nats, 1.16 per unit" in why
    label = far.select_one("span.flag-far_from_posterior").get_text(strip=True)
    assert label == "KL ≥ 11 (1.16/λ̂)"
    assert "2.5 draws" in why and "7.2" in why
    assert far.select_one("td.bad").get_text(strip=True) == "2"
    for target in ("linreg", "mlp"):
        row = summary_row(soup, target, "vi")
        assert "far_from_posterior" not in flag_keys(row)
        assert "950" in [td.get_text(strip=True) for td in row.select("td")]
    for method in METHODS:
        assert "grad_norm" in flag_keys(summary_row(soup, "mlp", method))
    # A clean row: 4 × 1600 kept draws with ρ = 0.5 have an ESS near 2100 and an R̂ of
    # 1 + O(1/ESS), well within 1.01.
    clean = summary_row(soup, "linreg", "sgld")
    assert flag_keys(clean) == set()
    assert "problem" not in (clean.get("class") or [])
    assert "problem" in summary_row(soup, "dln", "sgld")["class"]


def test_pooled_row_shows_replicates_and_truth(experiment):
    soup = experiment["soup"]
    llc = pd.read_parquet(experiment["root"] / "llc.parquet")
    reps = llc[(llc["target"] == "linreg") & (llc["method"] == "sgld")]
    pooled = report.pool(llc).set_index(["target", "method"])
    row = pooled.loc[("linreg", "sgld")]
    assert row["llc_mean"] == pytest.approx(reps["llc_mean"].mean())
    se = math.sqrt((reps["llc_se"] ** 2).sum()) / 2
    assert row["llc_se"] == pytest.approx(se)
    assert row["ess_min"] == pytest.approx(reps["ess"].min())
    assert row["rhat_max"] == pytest.approx(reps["rhat"].max())
    cells = [td.get_text(" ", strip=True) for td in summary_row(soup, "linreg", "sgld")]
    assert report.fmt_pm(row["llc_mean"], row["llc_se"]) in cells
    assert "exact" in cells and "4.97" in cells
    assert any(c.startswith("sd ") for c in cells)
    # The diverged replicate is left out of the pool and counted.
    dln = pooled.loc[("dln", "sgld")]
    assert dln["finished"] == 1 and dln["replicates"] == 2
    assert math.isfinite(dln["llc_mean"])
    # mlp has no truth: its non-HMC rows are measured against the HMC reference.
    assert pooled.loc[("mlp", "sgld"), "truth_kind"] == "reference"
    assert pooled.loc[("mlp", "vi"), "kind"] == "VI"
    # Every non-HMC row is also measured against HMC on its target; HMC is not.
    hmc = llc[(llc["target"] == "dln") & (llc["algo"] == "hmc")]["llc_mean"].mean()
    vi = pooled.loc[("dln", "vi")]
    assert vi["rel_error_hmc"] == pytest.approx((vi["llc_mean"] - hmc) / hmc)
    assert math.isnan(pooled.loc[("dln", "hmc"), "rel_error_hmc"])
    vi_cells = [td.get_text(strip=True) for td in summary_row(soup, "dln", "vi")]
    assert report.fmt(vi["rel_error_hmc"], "+.1%") in vi_cells
    # A run that ended normally reads "finished", its flags beside it.
    assert "finished" in summary_row(soup, "linreg", "sgld").get_text()
    # A VI row's ESS is its importance ESS, not a chain's.
    assert pooled.loc[("mlp", "vi"), "ess_min"] == pytest.approx(950.0)
    assert pooled.loc[("mlp", "vi"), "mc_error"] == pytest.approx(0.03)


def test_header_names_the_experiment(experiment):
    soup = experiment["soup"]
    # The title is escaped, not markup.
    assert soup.h1.get_text() == "fake <experiment>"
    meta = soup.select_one("dl.meta").get_text(" ", strip=True)
    assert "0123456789ab" in meta
    assert "commit" in meta
    assert "CPUs" in meta


def test_files_for_snakemakes_report(experiment):
    out = experiment["root"] / "report"
    for name in ("index.html", "summary.csv", "llc_by_method.png", "error_vs_cost.png"):
        assert (out / name).stat().st_size > 0
    for target in TARGETS:
        assert (out / "running" / f"{target}.png").is_file()
        for method in METHODS:
            assert (out / "traces" / target / f"{method}.png").is_file()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(TARGETS) * len(METHODS)


def test_report_without_git(experiment, tmp_path, monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert report.git_commit() is None
    # One run is enough here, and keeps the second build short.
    llc = pq.read_table(experiment["root"] / "llc.parquet")
    write_table(llc.slice(0, 1), tmp_path / "llc.parquet")
    index = report.build_report(
        tmp_path / "llc.parquet",
        runs_dir=experiment["root"] / "runs",
        out_dir=tmp_path / "report",
    )
    assert "git commit not available" in index.read_text(encoding="utf-8")


def test_git_commit_outside_a_checkout(tmp_path):
    assert report.git_commit(tmp_path) is None


def test_read_draws_tolerates_absent_optional_columns(tmp_path):
    table = draws_table(
        {
            "step": np.arange(3),
            "grad_evals": np.arange(3.0),
            "burn_in": np.zeros(3, bool),
            "loss": np.ones((2, 3)),
        }
    )
    old = table.drop_columns(["elbo", "llc_running"])
    pq.write_table(old, tmp_path / "draws.parquet")
    draws = report.read_draws(tmp_path / "draws.parquet")
    assert draws["elbo"].isna().all() and draws["llc_running"].isna().all()
    assert len(draws) == 6
    assert set(report.DRAW_COLUMNS) <= set(draws.columns)
    assert set(draws.columns) <= set(DRAWS.names)


def test_missing_draws_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="draws.parquet"):
        report.read_draws(tmp_path / "nowhere" / "draws.parquet")
    pq.write_table(
        draws_table(
            {
                "step": np.arange(2),
                "grad_evals": np.arange(2.0),
                "burn_in": np.zeros(2, bool),
                "loss": np.ones((1, 2)),
            }
        ).drop_columns(["grad_evals"]),
        tmp_path / "draws.parquet",
    )
    with pytest.raises(ValueError, match="grad_evals"):
        report.read_draws(tmp_path / "draws.parquet")


@pytest.mark.parametrize(
    ("mean", "se", "text"),
    [
        (9.06892, 0.13686, "9.07 ± 0.14"),
        (4.96712, 0.0123, "4.967 ± 0.012"),
        (123.4, 15.0, "123 ± 15"),
        (float("nan"), 0.1, "–"),
        (2.5, None, "2.5"),
    ],
)
def test_fmt_pm(mean, se, text):
    assert report.fmt_pm(mean, se) == text


def test_grad_norm_threshold():
    # sqrt(d / n) = 0.1: 3 times that is the threshold.
    assert not report.grad_norm_large(0.29, n=1000, d=10)
    assert report.grad_norm_large(0.31, n=1000, d=10)
    assert not report.grad_norm_large(float("nan"), n=1000, d=10)


def test_far_from_posterior_is_judged_per_unit_of_llc():
    """The flag reads the KL bound per unit of λ̂, not the importance ESS, which
    collapses in high dimension even for a good q (measured: linear regression at
    d = 1,000, ESS 1, bound 15 nats, λ̂ 499 within 0.8%)."""
    base = base_row("linreg", "vi", 0, "mfa") | {"llc_se": 0.1, "converged": True}
    good = base | {"llc_mean": 499.0, "is_ess": 1.0, "kl_bound": 15.0}
    bad = base | {"llc_mean": 12.6, "is_ess": 1.7, "kl_bound": 10.2}
    tiny = base | {"llc_mean": 0.2, "is_ess": 900.0, "kl_bound": 0.05}

    def keys(row):
        frame = rows_table([row]).to_pandas()
        return {f.key for f in report.flags(frame)}

    assert "far_from_posterior" not in keys(good)
    assert "far_from_posterior" in keys(bad)
    # λ̂ near 0 counts as 1, so a small bound does not flag a tiny λ̂.
    assert "far_from_posterior" not in keys(tiny)
    assert report.kl_per_llc(10.2, 12.6) == pytest.approx(0.81, abs=0.01)
    assert math.isnan(report.kl_per_llc(None, 1.0))
