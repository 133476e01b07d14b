"""λ̂ from draws: per chain, pooled, with Monte Carlo error and MCMC diagnostics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import numpy as np
from blackjax import diagnostics

# Jitted once per shape: run op by op, blackjax's diagnostics take seconds to dispatch.
_ess = jax.jit(diagnostics.effective_sample_size)
_rhat = jax.jit(diagnostics.rhat)


@dataclass
class Estimate:
    """A λ̂ with its uncertainty.

    Attributes:
        llc_mean: pooled λ̂ (mean over chains).
        llc_se: its standard error (MCMC: from the ESS; VI: Monte Carlo error of the
            evaluation samples, pooled over chains).
        llc_chains: λ̂ of each chain.
        ess: effective sample size of the pooled loss draws (MCMC only).
        rhat: rank-normalized split R̂ of the loss draws (MCMC only).
    """

    llc_mean: float
    llc_se: float
    llc_chains: list[float]
    ess: float | None = None
    rhat: float | None = None
    extra: dict = field(default_factory=dict)


def running_llc(losses: np.ndarray, keep: np.ndarray, nbeta: float, L0: float):
    """Running λ̂ of each chain: nβ(mean of the kept losses so far − L0).

    Args:
        losses: shape (chains, draws).
        keep: bool, shape (draws,): False for burn-in draws.

    Returns:
        shape (chains, draws), NaN before the first kept draw.
    """
    kept = np.where(keep[None, :], losses, 0.0)
    count = np.cumsum(keep).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.cumsum(kept, axis=1) / count[None, :]
    mean[:, count == 0] = np.nan
    return nbeta * (mean - L0)


def mcmc_estimate(losses: np.ndarray, nbeta: float, L0: float) -> Estimate:
    """λ̂ from post-burn-in loss draws of shape (chains, draws).

    The standard error is nβ·sd(L)/sqrt(ESS), with the ESS of all chains together.
    ESS and R̂ come from blackjax's diagnostics; R̂ needs at least two chains.
    """
    losses = np.asarray(losses, dtype=np.float64)
    chains, draws = losses.shape
    llc_chains = nbeta * (losses.mean(axis=1) - L0)
    llc_mean = float(llc_chains.mean())
    ess = float(_ess(losses))
    if not math.isfinite(ess) or ess <= 0:
        ess = float(losses.size)
    sd = float(losses.std(ddof=1)) if losses.size > 1 else float("nan")
    se = nbeta * sd / math.sqrt(ess)
    r = float(_rhat(losses)) if chains >= 2 else None
    return Estimate(
        llc_mean=llc_mean,
        llc_se=float(se),
        llc_chains=[float(v) for v in llc_chains],
        ess=ess,
        rhat=r,
    )
