"""What every method hands back: its draws and its estimate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lambda_hat.estimate import Estimate
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
