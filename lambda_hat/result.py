"""What every method hands back: its draws and its estimate."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from lambda_hat.estimate import Estimate, mcmc_estimate, running_llc
from lambda_hat.loop import Timing


@dataclass
class RunOutput:
    """The result of one method on one target.

    Attributes:
        draws: columns of the draws table. Per-draw columns have shape (draws,)
            (``step``, ``grad_evals``, ``burn_in``); per-chain columns have shape
            (chains, draws) (``loss``, ``llc_running``, and method-specific ones such
            as ``elbo``).
        estimate: λ̂ and its uncertainty.
        grad_evals: gradient evaluations of one chain (the draws' last value).
        timing: compile and run seconds.
        status: ``ok`` or ``diverged``.
        message: why a run diverged, else empty.
        summary_extra: further columns of the summary row (for example divergences).
    """

    draws: dict[str, np.ndarray]
    estimate: Estimate
    grad_evals: float
    timing: Timing
    status: str = "ok"
    message: str = ""
    summary_extra: dict = field(default_factory=dict)


def settings_used(**values) -> str:
    """The ``settings_used`` column: what a run took where its settings leave the
    choice to the target (a cap at d, a derived default, an adapted value), as JSON
    with sorted keys. Plain Python numbers and lists only."""
    return json.dumps(values, sort_keys=True)


def diverged_message(values: np.ndarray, steps: np.ndarray, what: str = "loss") -> str:
    """Name the first non-finite value of each chain, or return '' if all are finite.

    Args:
        values: shape (chains, draws).
        steps: the step of each draw, shape (draws,).
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return ""
    parts = []
    for c in np.flatnonzero(bad.any(axis=1)):
        first = int(np.argmax(bad[c]))
        parts.append(f"chain {c}: non-finite {what} at step {int(steps[first])}")
    return "; ".join(parts)


def mcmc_output(
    losses: np.ndarray,
    steps: np.ndarray,
    grad_evals: np.ndarray,
    keep: np.ndarray,
    *,
    nbeta: float,
    L0: float,
    timing: Timing,
    extra_draws: dict[str, np.ndarray] | None = None,
    summary_extra: dict | None = None,
) -> RunOutput:
    """Assemble an MCMC method's draws, estimate and status from its loss draws.

    Args:
        losses: full-batch loss of each draw, shape (chains, draws).
        steps: the step of each draw, shape (draws,).
        grad_evals: gradient evaluations up to each draw, shape (draws,) or
            (chains, draws); one chain's total is the last column (mean over chains).
        keep: bool, shape (draws,): False for burn-in draws.
        nbeta: nβ of the posterior.
        L0: L_n(w*).
        timing: compile and run seconds.
        extra_draws: method-specific columns of the draws table.
        summary_extra: further columns of the summary row.
    """
    draws = {
        "step": steps,
        "grad_evals": grad_evals,
        "loss": losses,
        "llc_running": running_llc(losses, keep, nbeta, L0),
        "burn_in": ~keep,
        **(extra_draws or {}),
    }
    message = diverged_message(losses, steps)
    total = np.asarray(grad_evals)[..., -1].mean() if len(steps) else 0.0
    return RunOutput(
        draws=draws,
        estimate=mcmc_estimate(losses[:, keep], nbeta, L0),
        grad_evals=float(total),
        timing=timing,
        status="diverged" if message else "ok",
        message=message,
        summary_extra=summary_extra or {},
    )
