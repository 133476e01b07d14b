"""Stage B: one method on one target, from the artifact to the draws and summary."""

from __future__ import annotations

import importlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lambda_hat import __version__, keys
from lambda_hat.posterior import make_posterior
from lambda_hat.result import RunOutput
from lambda_hat.tables import draws_table, rows_table, write_table
from lambda_hat.targets import load_target

log = logging.getLogger(__name__)

# algo name -> module with run(posterior, keys, settings, *, progress) -> RunOutput
ALGOS = {
    "sgld": "lambda_hat.sgld",
    "hmc": "lambda_hat.hmc",
    "mfa": "lambda_hat.mfa",
    "flow": "lambda_hat.flow",
}
# Settings that are about the posterior or the run, not the algorithm.
COMMON = ("algo", "beta", "gamma", "replicates")
SAMPLE_RULE = "sample"


def algo_module(algo: str):
    """The module implementing ``algo``; a clear error for an unknown name."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; expected one of {sorted(ALGOS)}")
    return importlib.import_module(ALGOS[algo])


def run_method(
    target_dir: str | Path,
    *,
    target: str,
    method: str,
    rep: int,
    seed: int,
    settings: dict,
    progress: Callable[[str], None] = log.info,
) -> tuple[dict, RunOutput]:
    """Run one method on one target; return its summary row and its output."""
    algo = settings["algo"]
    module = algo_module(algo)
    wildcards = {"target": target, "method": method, "rep": rep}
    record = keys.key_record(seed, SAMPLE_RULE, wildcards)
    job_key = keys.job_key(seed, SAMPLE_RULE, wildcards)

    loaded = load_target(target_dir)
    posterior = make_posterior(
        loaded, beta=settings.get("beta"), gamma=settings["gamma"]
    )
    chain_keys = keys.chain_keys(job_key, int(settings["n_chains"]))
    progress(
        f"{algo} on {target} (method {method}, rep {rep}): n = {posterior.n}, "
        f"d = {posterior.d}, nβ = {posterior.nbeta:.6g}, γ = {posterior.gamma:g}, "
        f"{len(chain_keys)} chains"
    )
    algo_settings = {k: v for k, v in settings.items() if k not in COMMON}

    t0 = time.perf_counter()
    out = module.run(posterior, chain_keys, algo_settings, progress=progress)
    wall = time.perf_counter() - t0

    est = out.estimate
    truth, truth_kind = loaded.truth(posterior.beta, posterior.gamma)
    ok = out.status == "ok" and math.isfinite(est.llc_mean)
    rel = (est.llc_mean - truth) / truth if ok and truth else None
    row = {
        "target": target,
        "method": method,
        "algo": algo,
        "rep": rep,
        "family": loaded.spec["family"],
        "seed": record["seed"],
        "key_data": record["key_data"],
        "key_impl": record["impl"],
        "key_labels": record["labels"],
        "n": posterior.n,
        "d": posterior.d,
        "beta": posterior.beta,
        "gamma": posterior.gamma,
        "L0": posterior.L0,
        "grad_norm_star": loaded.meta["grad_norm"],
        "n_chains": len(chain_keys),
        "llc_mean": est.llc_mean if ok else math.nan,
        "llc_se": est.llc_se if ok else math.nan,
        "llc_chains": est.llc_chains,
        "llc_chain_sd": float(np.std(est.llc_chains, ddof=1))
        if len(est.llc_chains) > 1
        else None,
        "ess": est.ess,
        "rhat": est.rhat,
        "truth": truth,
        "truth_kind": truth_kind,
        "rel_error": rel,
        "grad_evals": out.grad_evals * len(chain_keys),
        "wall_s": wall,
        "compile_s": out.timing.compile_s,
        "status": out.status,
        "message": out.message,
        "settings": json.dumps(settings, sort_keys=True),
        "version": __version__,
        **out.summary_extra,
    }
    if out.status != "ok":
        progress(f"run ended as {out.status}: {out.message}")
    else:
        se = row["llc_se"]
        truth_text = f", truth {truth:.6g} ({truth_kind})" if truth is not None else ""
        progress(f"λ̂ = {row['llc_mean']:.6g} ± {se:.3g}{truth_text}")
    return row, out


def write_run(row: dict, out: RunOutput, draws_path: Path, summary_path: Path) -> None:
    """Write a run's draws and summary tables (each atomically)."""
    write_table(draws_table(out.draws), draws_path)
    write_table(rows_table([row]), summary_path)
