"""Tests of algo: mfa against exact answers: its density against a dense reference,
λ̂ of linear regression against the closed form, the DLN against Aoyagi's λ,
reproducibility, and divergence."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal
from test_vi import gaussian_posterior

from lambda_hat import keys, mfa
from lambda_hat.mfa import MFAParams, MixtureOfFactorAnalyzers
from lambda_hat.posterior import Posterior
from lambda_hat.sample import SAMPLE_RULE, run_method
from lambda_hat.tables import draws_table
from lambda_hat.targets import exact_linreg_llc, gaussian_nll

SETTINGS = dict(
    algo="mfa",
    gamma=1.0,
    beta=None,
    n_chains=2,
    n_steps=2000,
    learning_rate=0.01,
    warmup_steps=100,
    decay_to=0.01,
    clip_norm=100.0,
    batch_size=1000,
    eval_every=100,
    trace_samples=16,
    eval_samples=1000,
    control_variate=True,
    n_components=4,
    rank=4,
    samples_per_component=1,
    init_scale=0.5,
    diag_floor=1e-8,
    precondition=True,
)
ALGO_KEYS = [k for k in SETTINGS if k not in ("algo", "beta", "gamma")]


def linreg_spec(d_in: int) -> dict:
    return {
        "family": "linreg",
        "d_in": d_in,
        "n": 1000,
        "noise": 1.0,
        "train": {"steps": 1000, "lr": 0.05},
    }


def random_params(seed: int, M: int, d: int, r: int) -> MFAParams:
    rng = np.random.default_rng(seed)
    return MFAParams(
        mean=jnp.asarray(rng.normal(size=(M, d))),
        log_diag=jnp.asarray(0.5 * rng.normal(size=(M, d))),
        factor=jnp.asarray(rng.normal(size=(M, d, r))),
        logits=jnp.asarray(rng.normal(size=M)),
    )


def tiny_posterior(d: int, *, loss=None) -> Posterior:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, d))
    y = x @ rng.normal(size=(d, 1)) + rng.normal(size=(200, 1))

    def linear(w, x, y):
        return gaussian_nll(x @ w[:, None], y, 1.0)

    loss = loss or linear
    w_star = jnp.asarray(np.linalg.lstsq(x, y[:, 0], rcond=None)[0])
    return Posterior(
        w_star=w_star,
        x=jnp.asarray(x),
        y=jnp.asarray(y),
        beta=1.0 / math.log(200),
        gamma=1.0,
        L0=float(linear(w_star, jnp.asarray(x), jnp.asarray(y))),
        loss=loss,
    )


def test_log_q_matches_a_dense_mixture_and_sampling_matches_it():
    d, M, r = 5, 3, 2
    post = tiny_posterior(d)
    family = MixtureOfFactorAnalyzers.create(post, n_components=M, rank=r)
    assert not np.allclose(family.scale, 1.0)  # the preconditioner is exercised
    params = random_params(0, M, d, r)

    # The dense reference: component m of w is N(c + s⊙μ_m, S(D_m + K_mK_mᵀ)S).
    s, c = np.asarray(family.scale), np.asarray(family.center)
    diag = family.diag_floor + np.exp(np.asarray(params.log_diag))
    factor = np.asarray(params.factor)
    means = c + s * np.asarray(params.mean)
    covs = np.stack(
        [
            np.outer(s, s) * (np.diag(diag[m]) + factor[m] @ factor[m].T)
            for m in range(M)
        ]
    )
    logits = np.asarray(params.logits)
    weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    rng = np.random.default_rng(1)
    w = jnp.asarray(means[0] + 3 * s * rng.normal(size=(50, d)))

    @jax.jit
    def dense_log_q(w, means, covs, weights):
        per_comp = jax.vmap(multivariate_normal.logpdf, in_axes=(None, 0, 0))(
            w, means, covs
        )
        return jax.nn.logsumexp(per_comp + jnp.log(weights)[:, None], axis=0)

    dense = dense_log_q(w, means, covs, weights)
    log_q = jax.jit(lambda p, w: family.log_q(p, w))
    np.testing.assert_allclose(log_q(params, w), dense, rtol=1e-10)

    # Samples have the mixture's mean and covariance (within 5 standard errors).
    sample = jax.jit(lambda p, k: family.sample(p, k, 40000))
    ws = np.asarray(sample(params, jax.random.key(2, impl="threefry2x32")))
    mean = weights @ means
    cov = sum(
        weights[m] * (covs[m] + np.outer(means[m] - mean, means[m] - mean))
        for m in range(M)
    )
    se = np.sqrt(np.diag(cov) / len(ws))
    assert np.all(np.abs(ws.mean(axis=0) - mean) < 5 * se)
    tol = 5 * np.sqrt(2 / len(ws)) * cov.max()
    np.testing.assert_allclose(np.cov(ws.T), cov, atol=tol)

    # The exact expectation of the control variate's quadratic.
    g = np.linspace(-1.0, 1.0, d)
    h = np.linspace(0.5, 2.0, d)
    u = [means[m] - np.asarray(post.w_star) for m in range(M)]
    expected = sum(
        weights[m] * (g @ u[m] + 0.5 * (h @ u[m] ** 2 + h @ np.diag(covs[m])))
        for m in range(M)
    )
    value = jax.jit(lambda p: family.quadratic_expectation(p, post.w_star, h, g))(
        params
    )
    assert float(value) == pytest.approx(expected, rel=1e-10)


def test_draw_gives_one_weighted_sample_per_component():
    post = tiny_posterior(4)
    family = MixtureOfFactorAnalyzers.create(
        post, n_components=3, rank=2, samples_per_component=2
    )
    params = random_params(1, 3, 4, 2)
    draw = jax.jit(lambda p, k: family.draw(p, k))
    w, weights = draw(params, jax.random.key(2, impl="threefry2x32"))
    assert w.shape == (6, 4) and weights.shape == (6,)
    np.testing.assert_allclose(
        weights, np.repeat(np.asarray(jax.nn.softmax(params.logits)) / 2, 2)
    )
    assert float(weights.sum()) == pytest.approx(1.0)


def exact_within(row: dict, *, rel: float = 0.02) -> None:
    """λ̂ within 3 Monte Carlo standard errors and ``rel`` of the exact value."""
    assert row["status"] == "ok", row["message"]
    assert row["truth_kind"] == "exact"
    err = abs(row["llc_mean"] - row["truth"])
    assert err <= 3 * row["llc_se"], (row["llc_mean"], row["llc_se"], row["truth"])
    assert err <= rel * row["truth"], (row["llc_mean"], row["truth"])


def exact_llc(post: Posterior) -> float:
    """The closed-form λ̂ of a linear-regression posterior (noise 1)."""
    x = np.asarray(post.x)
    eigs, vecs = np.linalg.eigh(x.T @ x / post.n)
    grad = np.asarray(jax.grad(post.full_loss)(post.w_star))
    return exact_linreg_llc(
        eigs, vecs.T @ grad, n=post.n, beta=post.beta, gamma=post.gamma
    )


def test_run_method_linreg_is_exact_and_traced(make_target):
    # The whole sample step on a trained target: summary row, trace, work.
    settings = {**SETTINGS, "n_components": 1}
    row, out = run_method(
        make_target("linreg10", linreg_spec(10)),
        target="linreg10",
        method="mfa",
        rep=0,
        seed=0,
        settings=settings,
        progress=lambda s: None,
    )
    exact_within(row)
    assert row["ess"] is None and row["rhat"] is None
    assert row["converged"] is True
    # The posterior is Gaussian and so is q: weighted by π/q, q's 1000 final draws
    # are worth nearly 1000 of π's (measured: 994 on the truth suite's d = 10), and
    # the bound on KL(q‖π) is at rounding level.
    assert row["is_ess"] >= 0.9 * settings["eval_samples"], row["is_ess"]
    assert 0.0 <= row["kl_bound"] < 0.05, row["kl_bound"]
    assert json.loads(row["settings_used"]) == {"batch_size": 1000, "rank": 4}
    assert len(row["llc_chains"]) == 2

    # One record every eval_every steps, and the work it counts: M·b/n per step,
    # one per trace sample, then per fit the evaluation samples and one pass at w*
    # for the control variate (the preconditioner's pass is counted from the start).
    draws = out.draws
    assert draws_table(draws).num_rows == 2 * 20
    np.testing.assert_array_equal(draws["step"], np.arange(1, 21) * 100)
    per_record = 100 * 1 * 1000 / 1000 + settings["trace_samples"]
    np.testing.assert_allclose(draws["grad_evals"], 1 + np.arange(1, 21) * per_record)
    assert row["grad_evals"] == pytest.approx(
        2 * (draws["grad_evals"][-1] + settings["eval_samples"] + 1)
    )
    assert np.all(np.isfinite(draws["elbo"])) and np.all(draws["entropy"] != 0)
    assert np.all(draws["weight_min"] == 1.0)
    # The running λ̂ of the last record (16 fixed samples) is near the final one.
    assert (
        abs(draws["llc_running"][:, -1].mean() - row["llc_mean"]) < 0.3 * row["truth"]
    )


# The fitted q's λ̂ for linear regression differs from the exact value by Monte Carlo
# error plus the family's own bias: with a diagonal-plus-rank-r covariance the ELBO's
# optimum is not π when the Hessian is not diagonal-plus-low-rank. For d = 100 and
# r = 4 the mean-field optimum is 0.07% high and the fits land within 0.2%, less than
# three standard errors (2 fits × 1000 samples with the control variate: SE ≈ 0.065
# of 34). At d = 10 that bias (about −0.2% for M = 4, r = 4) is near three standard
# errors (SE ≈ 0.006 of 5), so there the factor has full rank r = d: the family holds
# π and only the fit's and the Monte Carlo error remain.
# Full batch (b = n): minibatch noise leaves fits about 1% apart on these targets,
# more than the Monte Carlo error of the control-variate estimate. w* is off the
# least-squares fit, so q's means must travel; at d = 100 that takes a mixture more
# than the default 2000 steps.
def fit_linreg(d: int, M: int, chain_keys: jax.Array):
    post = gaussian_posterior(d, 1000, gamma=1.0, seed=d)
    settings = {k: SETTINGS[k] for k in ALGO_KEYS}
    settings.update(
        n_components=M,
        rank=d if d <= 10 else 4,
        n_steps=4000 if d > 10 and M > 1 else 2000,
    )
    out = mfa.run(post, chain_keys, settings, progress=lambda s: None)
    assert out.status == "ok", out.message
    assert out.summary_extra["converged"] is True
    if M > 1:
        assert np.all(out.draws["weight_min"] <= 1 / M)
        assert np.all(out.draws["weight_max"] >= 1 / M)
    return post, out


def assert_exact(llc: np.ndarray, se: np.ndarray, truth: float) -> None:
    """The mean of independent fits' λ̂ is within 3 SE and 2% of the truth."""
    mean = float(np.mean(llc))
    pooled_se = float(np.sqrt(np.sum(se**2)) / len(se))
    err = abs(mean - truth)
    assert err <= 3 * pooled_se, (mean, pooled_se, truth)
    assert err <= 0.02 * truth, (mean, truth)


@pytest.mark.parametrize("M", [1, 4])
def test_linreg_llc_is_exact_at_d100(M):
    chain_keys = keys.chain_keys(jax.random.key(M, impl="threefry2x32"), 2)
    post, out = fit_linreg(100, M, chain_keys)
    est = out.estimate
    assert_exact(
        np.asarray(est.llc_chains),
        np.asarray(est.extra["llc_se_chains"]),
        exact_llc(post),
    )


def chain_key(rep: int) -> jax.Array:
    """Chain 0's key of a replicate of the sample job, as keys.chain_keys makes it."""
    wildcards = {"target": "linreg", "method": "mfa", "rep": rep}
    return jax.random.fold_in(keys.job_key(0, SAMPLE_RULE, wildcards), 0)


@pytest.fixture(scope="module")
def mixture_d10():
    """M = 4 at d = 10, three fits: replicate 0's chain, replicate 1's, and
    replicate 0's again (one compiled run serves two tests)."""
    return fit_linreg(10, 4, jnp.stack([chain_key(0), chain_key(1), chain_key(0)]))


def test_linreg_llc_is_exact_at_d10_with_a_mixture(mixture_d10):
    post, out = mixture_d10
    est = out.estimate
    independent = [0, 1]  # fit 2 repeats fit 0
    assert_exact(
        np.asarray(est.llc_chains)[independent],
        np.asarray(est.extra["llc_se_chains"])[independent],
        exact_llc(post),
    )


def test_same_keys_same_numbers_other_replicates_differ(mixture_d10):
    # Fits whose keys come from the same seed and wildcards reproduce each other
    # within rounding (vmap may reorder a sum), whatever fits run beside them;
    # another replicate's key gives other numbers.
    _, out = mixture_d10
    llc = np.asarray(out.estimate.llc_chains)
    elbo = out.draws["elbo"]
    assert llc[0] == pytest.approx(llc[2], rel=1e-10)
    np.testing.assert_allclose(elbo[0], elbo[2], rtol=1e-10)
    assert abs(llc[0] - llc[1]) > 1e-6
    assert np.max(np.abs(elbo[0] - elbo[1])) > 1e-6


def test_non_finite_elbo_ends_the_run_as_diverged():
    # A loss that is NaN farther than 1e-3 from w*: q's first samples land there.
    def barrier(w, x, y):
        u = w - w_star
        return gaussian_nll(x @ w[:, None], y, 1.0) - jnp.log(1e-6 - u @ u)

    post = tiny_posterior(3, loss=barrier)
    w_star = post.w_star
    post = Posterior(
        w_star=w_star,
        x=post.x,
        y=post.y,
        beta=post.beta,
        gamma=post.gamma,
        L0=float(barrier(w_star, post.x, post.y)),
        loss=barrier,
    )
    settings = {k: SETTINGS[k] for k in ALGO_KEYS}
    settings.update(
        n_steps=200,
        n_chains=1,
        eval_samples=10,
        n_components=1,
        rank=1,
        trace_samples=0,
        control_variate=False,
    )
    k = keys.chain_keys(jax.random.key(0, impl="threefry2x32"), 1)
    out = mfa.run(post, k, settings, progress=lambda s: None)
    assert out.status == "diverged"
    assert "chain 0: non-finite ELBO at step 100" in out.message
    assert out.summary_extra["converged"] is False


def _dln_row(make_target, name: str, widths: list, *, rank: int, **settings) -> dict:
    """MFA's summary row on a deep linear network started at its teacher (n = 10^4)."""
    spec = {
        "family": "dln",
        "widths": widths,
        "rank": rank,
        "n": 10000,
        "noise": 1.0,
        "train": {"steps": 0},
    }
    row, _ = run_method(
        make_target(name, spec),
        target=name,
        method="mfa",
        rep=0,
        seed=0,
        settings={**SETTINGS, **settings},
        progress=lambda s: None,
    )
    return row


# A mixture of Gaussians cannot follow the curved symmetry orbits of a deep linear
# network (W2·W1 = W2G·G⁻¹W1): q sits across them, pays the loss of leaving them, and
# its λ̂ lands near 15 whatever M, r, the number of steps or γ (measured: M = 1..16,
# r = 4..47 (full covariance), γ = 1..100, all 13.2 to 15.3). The ELBO stays ≥ 14 nats
# below log Z (importance sampling), so the failure is the family's, not the fit's.
@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Gaussian mixtures overestimate the DLN's λ (≈ 15 vs 9)",
)
def test_dln_llc_is_near_aoyagi(make_target):
    row = _dln_row(make_target, "dln", [5, 4, 3, 5], rank=2, n_steps=1000)
    assert row["status"] == "ok"
    assert row["truth"] == 9.0
    assert abs(row["llc_mean"] - 9.0) <= 0.15 * 9.0, row["llc_mean"]


def _redundant_unit_prediction(d_in: int, hidden: int, d_out: int, r: int) -> float:
    """λ̂ of a Gaussian q on the network [d_in, hidden, d_out] with a rank-r teacher.

    The r units the teacher uses are a regular rank-r product, r(d_in + d_out − r)/2.
    Each of the other units adds an outer product xyᵀ (x ∈ R^d_out, y ∈ R^d_in) that
    only the sum over units needs to keep small. Under a Gaussian the cross terms of
    that sum vanish, so each unit pays on its own: with x, y independent of widths s,
    the ELBO −nβ·d_in·d_out·s⁴ + (d_in + d_out)·log s is highest at
    nβ·d_in·d_out·s⁴ = (d_in + d_out)/4, and that is its share of λ̂ (the localizer
    left out).
    """
    return r * (d_in + d_out - r) / 2 + (hidden - r) * (d_in + d_out) / 4


@pytest.mark.slow
def test_dln_overestimate_is_the_gaussian_familys(make_target):
    """Why VI misses the DLN's λ, pinned: on [4, 12, 4] with a rank-1 teacher (λ = 8)
    MFA lands where a Gaussian that charges every redundant hidden unit separately
    must (25.5 predicted; measured 22.95 in the truth suite, the localizer taking
    the rest), not near λ nor at d/2 = 48. If a change to the family ever lets the
    units cancel, this fails and the DLN criterion should be tried again."""
    row = _dln_row(make_target, "dln_wide", [4, 12, 4], rank=1)
    predicted = _redundant_unit_prediction(4, 12, 4, r=1)
    assert row["status"] == "ok" and row["truth"] == 8.0
    assert 0.8 * predicted <= row["llc_mean"] <= 1.05 * predicted, row["llc_mean"]
