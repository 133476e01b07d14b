"""Stochastic gradient Langevin dynamics on the localized tempered posterior.

One step with step size ε and a minibatch B of size b drawn with replacement:

    w ← w − (ε/2)·(nβ·∇L_B(w) + γ(w − w*)) + sqrt(ε)·ξ,   ξ ~ N(0, I).

Every ``thin`` steps the full-batch loss L_n(w) is recorded as a draw. Costs, in
gradient evaluations over n samples: b/n per step and one per recorded draw (the
full-batch loss is counted as a full gradient evaluation, an upper bound).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.loop import Timing, run_chunked
from lambda_hat.posterior import Posterior
from lambda_hat.result import RunOutput, mcmc_output, settings_used
from lambda_hat.runtime import map_chains


@dataclass(frozen=True)
class SGLDSettings:
    """SGLD's settings (see config/README.md).

    Attributes:
        step_size: ε.
        n_chains: independent chains run under ``vmap``.
        n_steps: steps per chain, burn-in included.
        burn_in: steps discarded at the start of each chain.
        thin: steps between recorded draws.
        batch_size: minibatch size b (clipped to n).
    """

    step_size: float
    n_chains: int
    n_steps: int
    burn_in: int
    thin: int
    batch_size: int

    @classmethod
    def from_dict(cls, s: dict) -> SGLDSettings:
        return cls(**{k: s[k] for k in cls.__dataclass_fields__})


def sgld_step(posterior: Posterior, step_size: float, batch_size: int):
    """A pure SGLD step ``one_step(key, w) -> w``."""

    grad_potential = jax.grad(posterior.potential)

    def one_step(key: jax.Array, w: jax.Array) -> jax.Array:
        k_batch, k_noise = jax.random.split(key)
        idx = jax.random.randint(k_batch, (batch_size,), 0, posterior.n)
        x, y = posterior.batch(idx)
        grad = grad_potential(w, x, y)
        noise = jax.random.normal(k_noise, w.shape, w.dtype)
        return w - 0.5 * step_size * grad + jnp.sqrt(step_size) * noise

    return one_step


def run(
    posterior: Posterior,
    keys: jax.Array,
    settings: dict,
    *,
    progress: Callable[[str], None],
) -> RunOutput:
    """Run ``len(keys)`` SGLD chains from w* and estimate λ̂.

    Args:
        posterior: the localized tempered posterior.
        keys: typed keys, one per chain, shape (chains,).
        settings: SGLD's settings (see :class:`SGLDSettings`).
        progress: where progress lines go.
    """
    s = SGLDSettings.from_dict(settings)
    b = min(s.batch_size, posterior.n)
    n_draws = s.n_steps // s.thin
    step = sgld_step(posterior, s.step_size, b)

    def draw(w, key):
        w = jax.lax.fori_loop(
            0, s.thin, lambda i, w: step(jax.random.fold_in(key, i), w), w
        )
        return w, posterior.full_loss(w)

    def chunk(ws, idx):
        def one_chain(key, w):
            draw_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
            return jax.lax.scan(draw, w, draw_keys)

        return map_chains(one_chain, keys, ws, work=b * posterior.d)

    timing = Timing()
    w0 = jnp.broadcast_to(posterior.w_star, (len(keys), posterior.d))
    _, losses = run_chunked(
        chunk, w0, n_draws, label="sgld", progress=progress, timing=timing, unit="draw"
    )

    steps = (np.arange(n_draws) + 1) * s.thin
    grad_evals = steps * (b / posterior.n) + np.arange(1, n_draws + 1)
    keep = steps > s.burn_in
    return mcmc_output(
        losses,
        steps,
        grad_evals,
        keep,
        nbeta=posterior.nbeta,
        L0=posterior.L0,
        timing=timing,
        summary_extra={"settings_used": settings_used(batch_size=b)},
    )
