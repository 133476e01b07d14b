"""The No-U-Turn sampler (NUTS) on the full-batch localized tempered posterior.

HMC is the reference method: it samples π(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²)
with full-batch gradients and a Metropolis correction, so its only error is Monte
Carlo error, which the ESS measures. Each chain

1. starts at w* and runs Stan's window adaptation (blackjax ``window_adaptation``):
   ``n_warmup`` NUTS transitions that tune the step size to ``target_accept`` and a
   diagonal inverse mass matrix to the posterior's variances. Every chain adapts
   its own step size and mass matrix, under ``jax.vmap``; these transitions are the
   burn-in and are not recorded;
2. keeps its adapted state and parameters and runs ``n_samples`` NUTS transitions,
   recording the full-batch loss L_n(w) every ``thin`` transitions as a draw.

Cost, in full-batch gradient evaluations per chain: one at w*, one per leapfrog step
(adaptation included; NUTS reports the steps of each transition) and one per
recorded draw for L_n(w) (a forward pass, counted as a gradient evaluation like
SGLD's draws: an upper bound). Chains under ``vmap`` advance in lockstep, so the wall
time follows the longest trajectory of each transition while the count above is the
work each chain needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn

from lambda_hat.loop import Timing, run_chunked
from lambda_hat.posterior import Posterior
from lambda_hat.result import RunOutput, mcmc_output, settings_used

# A chain's key is folded with one of these for its adaptation and its sampling.
WARMUP, SAMPLING = 0, 1


@dataclass(frozen=True)
class HMCSettings:
    """NUTS's settings (see config/README.md).

    Attributes:
        n_chains: independent chains run under ``vmap``.
        n_warmup: adaptation transitions per chain (discarded).
        n_samples: transitions per chain after adaptation.
        thin: transitions between recorded draws.
        target_accept: the mean acceptance rate the step size is tuned to.
        max_num_doublings: cap k on trajectory doublings: at most 2^k − 1 leapfrog
            steps per transition.
        initial_step_size: where the step size adaptation starts.
    """

    n_chains: int
    n_warmup: int
    n_samples: int
    thin: int
    target_accept: float
    max_num_doublings: int
    initial_step_size: float

    @classmethod
    def from_dict(cls, s: dict) -> HMCSettings:
        return cls(**{k: s[k] for k in cls.__dataclass_fields__})


def adapt(posterior: Posterior, s: HMCSettings):
    """A pure ``adapt_chain(key) -> (state, step_size, inverse_mass_matrix, info)``.

    One chain's window adaptation from w*, with the chain's key folded with
    ``WARMUP``. ``info`` holds, per transition, the leapfrog steps
    (``num_integration_steps``, shape (n_warmup,)) and whether it diverged.
    """
    warmup = blackjax.window_adaptation(
        blackjax.nuts,
        posterior.logdensity,
        is_mass_matrix_diagonal=True,
        initial_step_size=s.initial_step_size,
        target_acceptance_rate=s.target_accept,
        # Keep only what the cost and the log need: the full transition info holds
        # whole trajectory end states, n_warmup × d floats per chain.
        adaptation_info_fn=get_filter_adapt_info_fn(
            info_keys={"num_integration_steps", "is_divergent"}
        ),
        max_num_doublings=s.max_num_doublings,
    )

    def adapt_chain(key: jax.Array):
        key = jax.random.fold_in(key, WARMUP)
        (state, params), info = warmup.run(key, posterior.w_star, s.n_warmup)
        return state, params["step_size"], params["inverse_mass_matrix"], info.info

    return adapt_chain


def nuts_draw(posterior: Posterior, s: HMCSettings):
    """A pure ``draw(carry, key) -> (carry, record)`` for one chain.

    ``carry`` is (NUTS state, step size, inverse mass matrix). One draw runs ``thin``
    NUTS transitions and records the full-batch loss at the end, the mean acceptance
    rate, whether any transition diverged, and the leapfrog steps taken.
    """
    kernel = blackjax.nuts.build_kernel()

    def transition(carry, key):
        state, step_size, inv_mass = carry
        state, info = kernel(
            key,
            state,
            posterior.logdensity,
            step_size,
            inv_mass,
            max_num_doublings=s.max_num_doublings,
        )
        out = (info.acceptance_rate, info.is_divergent, info.num_integration_steps)
        return (state, step_size, inv_mass), out

    def draw(carry, key):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(s.thin))
        carry, (accept, divergent, leapfrogs) = jax.lax.scan(transition, carry, keys)
        loss = posterior.full_loss(carry[0].position)
        return carry, {
            "loss": loss,
            "accept_rate": jnp.mean(accept),
            "divergent": jnp.any(divergent),
            "n_divergent": jnp.sum(divergent),
            "leapfrogs": jnp.sum(leapfrogs),
        }

    return draw


def _adapt_chains(
    posterior: Posterior,
    keys: jax.Array,
    s: HMCSettings,
    *,
    timing: Timing,
    progress: Callable[[str], None],
):
    """Window adaptation of every chain under ``vmap``, compiled ahead and timed.

    Returns:
        The chains' NUTS states (positions of shape (chains, d)), step sizes, shape
        (chains,), inverse mass matrices, shape (chains, d), and the leapfrog steps
        of each adaptation transition, shape (chains, n_warmup), as numpy.
    """
    progress(f"hmc: window adaptation, {s.n_warmup} transitions per chain")
    adapt_all = jax.jit(jax.vmap(adapt(posterior, s)))
    t0 = time.perf_counter()
    compiled = adapt_all.lower(keys).compile()
    t1 = time.perf_counter()
    states, step_sizes, inv_masses, info = compiled(keys)
    leapfrogs = np.asarray(info.num_integration_steps, dtype=np.float64)
    t2 = time.perf_counter()
    timing.compile_s += t1 - t0
    timing.run_s += t2 - t1
    step_text = ", ".join(f"{float(e):.3g}" for e in np.asarray(step_sizes))
    progress(
        f"hmc: adaptation done in {t2 - t1:.1f} s: step sizes {step_text}; "
        f"{leapfrogs.mean():.1f} leapfrog steps per transition, "
        f"{int(np.sum(info.is_divergent))} divergent transitions (all chains)"
    )
    return states, step_sizes, inv_masses, leapfrogs


def run(
    posterior: Posterior,
    keys: jax.Array,
    settings: dict,
    *,
    progress: Callable[[str], None],
) -> RunOutput:
    """Adapt and run ``len(keys)`` NUTS chains from w* and estimate λ̂.

    Args:
        posterior: the localized tempered posterior.
        keys: typed keys, one per chain, shape (chains,).
        settings: NUTS's settings (see :class:`HMCSettings`).
        progress: where progress lines go.
    """
    s = HMCSettings.from_dict(settings)
    n_draws = s.n_samples // s.thin
    timing = Timing()
    # JAX's key reuse checker (a debug mode) misreads blackjax's NUTS under vmap:
    # batching turns the trajectory's lax.cond, whose one branch draws from a fresh
    # per-step key, into a select of both branches, which it takes for a reuse.
    with jax.debug_key_reuse(False):
        states, step_sizes, inv_masses, warm_leapfrogs = _adapt_chains(
            posterior, keys, s, timing=timing, progress=progress
        )
        draw = nuts_draw(posterior, s)

        def chunk(carry, idx):
            def one_chain(key, c):
                key = jax.random.fold_in(key, SAMPLING)
                draw_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
                return jax.lax.scan(draw, c, draw_keys)

            return jax.vmap(one_chain)(keys, carry)

        _, rec = run_chunked(
            chunk,
            (states, step_sizes, inv_masses),
            n_draws,
            label="hmc",
            progress=progress,
            timing=timing,
            unit="draw",
        )

    # One gradient at w*, the adaptation's leapfrog steps, then each draw's leapfrog
    # steps and its full-batch loss.
    start = 1.0 + warm_leapfrogs.sum(axis=1, keepdims=True)
    grad_evals = start + np.cumsum(rec["leapfrogs"] + 1.0, axis=1)
    steps = s.n_warmup + (np.arange(n_draws) + 1) * s.thin
    divergences = int(rec["n_divergent"].sum())
    if divergences:
        progress(f"hmc: {divergences} divergent transitions after adaptation")
    return mcmc_output(
        rec["loss"],
        steps,
        grad_evals,
        np.ones(n_draws, dtype=bool),
        nbeta=posterior.nbeta,
        L0=posterior.L0,
        timing=timing,
        extra_draws={"accept_rate": rec["accept_rate"], "divergent": rec["divergent"]},
        summary_extra={
            "divergences": divergences,
            "settings_used": settings_used(
                step_size=[float(e) for e in np.asarray(step_sizes)]
            ),
        },
    )
