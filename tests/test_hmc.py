"""HMC (NUTS) against an exact answer on a singular posterior, and its bookkeeping.

Each HMC run compiles two NUTS programs (about 12 s of CPU) and the truth-suite
slice (tests/test_truth.py) fills the default suite's time budget, so the tests here
are marked slow but the config check; the slice runs HMC against the exact λ̂ of the
d = 10 linear regression and checks its gradient evaluation count in the default
suite.
"""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat import hmc, keys
from lambda_hat.config import ConfigError, check_method
from lambda_hat.posterior import make_posterior
from lambda_hat.sample import COMMON, run_method
from lambda_hat.targets import load_target

QUIET = {"progress": lambda s: None}
# A two-parameter deep linear network x ↦ b·a·x with a rank-0 teacher (a* = 0): its
# posterior is not Gaussian (the width in a depends on b) and holds the singular
# point a = b = 0 within a few γ-widths of w*, yet its E_π[L_n] is a 2-d integral.
DLN2 = {"family": "dln", "widths": [1, 1, 1], "rank": 0, "n": 1000}
DLN2["train"] = {"steps": 0}


def _settings(**overrides) -> dict:
    """An hmc method's settings with the schema's defaults filled in."""
    from conftest import validated

    method = {"algo": "hmc", **overrides}
    config = validated({"seed": 0, "targets": {"t": DLN2}, "methods": {"h": method}})
    return config["methods"]["h"]


def _algo_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in COMMON}


def _run_method(path, name, settings, seed=0):
    return run_method(
        path, target=name, method="hmc", rep=0, seed=seed, settings=settings, **QUIET
    )


def _quadrature_llc(posterior, *, half_width=7.0, points=1601) -> float:
    """nβ(E_π[L_n] − L0) of a 2-parameter posterior on a grid around w*.

    The grid spans ±7 localization widths (1/√γ) on each axis with a spacing of
    about 0.009, a tenth of the narrowest posterior width here (1/√(nβ·b*²)); the
    integrand is smooth, so the Riemann sum is accurate to far below the Monte
    Carlo error it is compared with.
    """
    w_star = np.asarray(posterior.w_star)
    grid = np.linspace(-half_width, half_width, points) / np.sqrt(posterior.gamma)
    a, b = np.meshgrid(w_star[0] + grid, w_star[1] + grid, indexing="ij")
    w = np.stack([a.ravel(), b.ravel()], axis=1)
    loss = np.asarray(jax.jit(jax.vmap(posterior.full_loss))(jnp.asarray(w)))
    log_p = -posterior.nbeta * (loss - posterior.L0)
    log_p -= 0.5 * posterior.gamma * np.sum((w - w_star) ** 2, axis=1)
    weight = np.exp(log_p - log_p.max())
    return float(
        posterior.nbeta * (np.sum(weight * loss) / weight.sum() - posterior.L0)
    )


@pytest.fixture(scope="module")
def dln2(make_target):
    """The two-parameter DLN, its posterior and one HMC run of 2 chains on it."""
    path = make_target("dln2", DLN2, seed=2)
    settings = _settings(n_chains=2, n_warmup=200, n_samples=3000, thin=2)
    row, out = _run_method(path, "dln2", settings)
    posterior = make_posterior(load_target(path), beta=None, gamma=settings["gamma"])
    return path, posterior, settings, row, out


@pytest.mark.slow
def test_singular_two_parameter_dln_matches_quadrature(dln2):
    # E_π[L_n] of this singular, non-Gaussian posterior by quadrature is the exact
    # finite-n λ̂; HMC must agree within its Monte Carlo error. (The asymptotic λ
    # is 1/2; at n = 1000 the finite-n value is about half of that.)
    _, posterior, _, row, _ = dln2
    exact = _quadrature_llc(posterior)
    assert row["status"] == "ok", row["message"]
    assert row["truth_kind"] == "aoyagi" and row["truth"] == 0.5
    assert abs(row["llc_mean"] - exact) < 3 * row["llc_se"], (row, exact)
    # The quadrature value itself is far from the asymptotic λ, so the check above
    # tells HMC apart from an estimator that returns λ.
    assert abs(exact - 0.5) > 10 * row["llc_se"]
    assert row["rhat"] < 1.02


@pytest.mark.slow
def test_gradient_evaluations_count_adaptation_and_every_leapfrog(dln2):
    _, _, settings, row, out = dln2
    n_draws = settings["n_samples"] // settings["thin"]
    grad_evals = out.draws["grad_evals"]
    assert grad_evals.shape == (2, n_draws)
    steps = out.draws["step"]
    assert steps[0] == settings["n_warmup"] + settings["thin"]
    assert steps[-1] == settings["n_warmup"] + settings["n_samples"]
    # Each transition takes at least one leapfrog step (one gradient), each draw
    # evaluates L_n once, and w* costs one: the first draw comes after the whole
    # adaptation.
    per_draw = np.diff(grad_evals, axis=1)
    assert (per_draw >= settings["thin"] + 1).all()
    assert (grad_evals[:, 0] >= 1 + settings["n_warmup"] + settings["thin"] + 1).all()
    # NUTS trajectories on this posterior are several steps long, so most of a
    # chain's cost is leapfrog steps, not the 1 + draws that bookkeeping adds.
    assert (
        grad_evals[:, -1] > 3 * (settings["n_warmup"] + settings["n_samples"])
    ).all()
    # The summary row counts all chains, and records each chain's adapted step size.
    assert row["grad_evals"] == pytest.approx(grad_evals[:, -1].sum())
    step_sizes = json.loads(row["settings_used"])["step_size"]
    assert len(step_sizes) == 2 and all(0 < e < 10 for e in step_sizes), step_sizes
    # A draw is marked divergent when any of its `thin` transitions diverged.
    marked = int(out.draws["divergent"].sum())
    assert marked <= row["divergences"] <= settings["thin"] * marked
    accept = out.draws["accept_rate"]
    assert ((accept >= 0) & (accept <= 1)).all()
    assert abs(accept.mean() - settings["target_accept"]) < 0.1


@pytest.mark.slow
def test_chain_does_not_depend_on_how_many_run_beside_it(dln2):
    # Chain c's key is fold_in(job key, c) whatever n_chains is, so chain 0 alone and
    # chain 0 of two take the same random numbers. Batching under vmap can change
    # the last bits of a sum, and NUTS amplifies such differences chaotically (here
    # about tenfold every few transitions: they reach 1e-12 after 60 transitions
    # and swamp the draws after 150), so the runs compared are short: 20 adaptation
    # transitions and 10 draws, where they stay below 1e-10.
    _, posterior, settings, _, _ = dln2
    short = _algo_settings(
        {**settings, "n_warmup": 20, "n_samples": 10, "thin": 1, "n_chains": 1}
    )
    job = keys.job_key(0, "sample", {"target": "dln2", "method": "hmc", "rep": 0})
    one = hmc.run(posterior, keys.chain_keys(job, 1), short, **QUIET)
    two = hmc.run(posterior, keys.chain_keys(job, 2), short, **QUIET)
    np.testing.assert_allclose(
        one.draws["loss"][0], two.draws["loss"][0], rtol=1e-10, atol=0
    )
    np.testing.assert_array_equal(
        one.draws["grad_evals"][0], two.draws["grad_evals"][0]
    )
    # and the second chain is a different chain.
    assert not np.allclose(two.draws["loss"][0], two.draws["loss"][1])


@pytest.mark.slow
def test_non_finite_loss_ends_as_diverged_not_a_crash(dln2):
    _, posterior, settings, _, _ = dln2
    bad = eqx.tree_at(
        lambda p: p.moments, posterior, tuple(m * jnp.nan for m in posterior.moments)
    )
    small = {**settings, "n_chains": 1, "n_warmup": 20, "n_samples": 8, "thin": 1}
    key = keys.chain_keys(jax.random.key(0, impl="threefry2x32"), 1)
    out = hmc.run(bad, key, _algo_settings(small), **QUIET)
    assert out.status == "diverged"
    assert "chain 0: non-finite loss" in out.message


@pytest.mark.parametrize(
    "spec",
    [
        {"family": "linreg", "d_in": 4, "d_out": 2, "bias": True, "n": 300},
        {"family": "dln", "widths": [3, 4, 2, 3], "rank": 1, "n": 300},
    ],
    ids=["linreg-bias", "dln"],
)
@pytest.mark.slow
def test_full_batch_loss_from_moments_matches_the_loss_over_samples(make_target, spec):
    # linreg and dln targets evaluate L_n from the data's second moments; the value
    # and the gradient must be those of the mean over the n samples, to rounding.
    spec = {**spec, "train": {"steps": 0}}
    posterior = make_posterior(
        load_target(make_target("moments", spec)), beta=None, gamma=1.0
    )
    assert posterior.moment_loss is not None
    key = jax.random.key(3, impl="threefry2x32")
    w = posterior.w_star + 0.3 * jax.random.normal(key, posterior.w_star.shape)

    def over_samples(v):
        return posterior.loss(v, posterior.x, posterior.y)

    # Compiled whole: run op by op, the two gradients take seconds to dispatch.
    value, grad = jax.jit(jax.value_and_grad(posterior.full_loss))(w)
    value_n, grad_n = jax.jit(jax.value_and_grad(over_samples))(w)
    np.testing.assert_allclose(value, value_n, rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad, grad_n, rtol=1e-9, atol=1e-12)


def test_config_checks_name_the_key():
    check_method("h", _settings(n_samples=8, thin=2))
    with pytest.raises(ConfigError, match=r"methods\.h: n_samples = 6 and thin = 2"):
        check_method("h", _settings(n_samples=6, thin=2))


@pytest.mark.slow
def test_default_dln(make_target, default_config):
    # The default HMC settings on the default DLN (λ = 9 by Aoyagi's formula). At
    # n = 10^4 and γ = 1 HMC lands 12-20% below the asymptotic λ on networks of
    # these widths (7.2 to 7.9 for three teachers; 8.2 at n = 10^5 and 8.4 at
    # n = 10^6): the finite-n λ̂ of a singular model approaches λ slowly in n. This
    # checks the run is healthy and lands in that neighbourhood.
    spec = default_config["targets"]["dln"]
    path = make_target("dln", spec, seed=default_config["seed"])
    settings = default_config["methods"]["hmc"]
    row, _ = _run_method(path, "dln", settings, seed=default_config["seed"])
    assert row["status"] == "ok", row["message"]
    assert row["rhat"] < 1.05
    assert 6.5 < row["llc_mean"] < 8.5
