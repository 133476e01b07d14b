"""Tests of the shared VI machinery in lambda_hat.vi: the ELBO against a closed form,
sticking the landing, the optimizer's schedule, the estimate and its checks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lambda_hat.config import ConfigError, check_method
from lambda_hat.mfa import MFAParams, MixtureOfFactorAnalyzers
from lambda_hat.posterior import Posterior
from lambda_hat.targets import gaussian_nll
from lambda_hat.vi import (
    VISettings,
    control_variate_losses,
    converged,
    elbo_estimate,
    gradient_moments,
    importance_diagnostics,
    make_optimizer,
    vi_estimate,
)

VI_DEFAULTS = dict(
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
)


def linear_loss(w, x, y):
    """Mean Gaussian NLL (noise 1) of the linear model y = x·w."""
    return gaussian_nll(x @ w[:, None], y, 1.0)


def gaussian_posterior(d: int, n: int, *, gamma: float, seed: int = 0) -> Posterior:
    """The posterior of a linear regression: exactly Gaussian.

    w* is the least-squares fit moved a little, so that ∇L_n(w*) ≠ 0 and the
    posterior's mean is not w*.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=(d, 1)) + rng.normal(size=(n, 1))
    w_ls = np.linalg.lstsq(x, y[:, 0], rcond=None)[0]
    w_star = jnp.asarray(w_ls + 0.05 * rng.normal(size=d))
    L0 = float(linear_loss(w_star, jnp.asarray(x), jnp.asarray(y)))
    return Posterior(
        w_star=w_star,
        x=jnp.asarray(x),
        y=jnp.asarray(y),
        beta=1.0 / math.log(n),
        gamma=gamma,
        L0=L0,
        loss=linear_loss,
    )


def exact_gaussian(post: Posterior):
    """π's mean, covariance and log Z, from the closed form of a quadratic loss.

    −log π̃(w) = nβ(L0 + gᵀu + ½uᵀHu) + (γ/2)uᵀu with u = w − w*, so π is
    N(w* − nβA⁻¹g, A⁻¹) with A = nβH + γI, and
    log Z = −nβL0 + ½(nβ)²gᵀA⁻¹g + (d/2)log 2π − ½ log det A.
    """
    x = np.asarray(post.x)
    nb, d = post.nbeta, post.d
    H = x.T @ x / post.n
    g = np.asarray(jax.grad(post.full_loss)(post.w_star))
    A = nb * H + post.gamma * np.eye(d)
    cov = np.linalg.inv(A)
    mean = np.asarray(post.w_star) - nb * cov @ g
    log_z = (
        -nb * post.L0
        + 0.5 * nb**2 * g @ cov @ g
        + 0.5 * d * math.log(2 * math.pi)
        - 0.5 * np.linalg.slogdet(A)[1]
    )
    return mean, cov, log_z


def params_equal_to(family: MixtureOfFactorAnalyzers, mean, cov, logits) -> MFAParams:
    """MFA parameters whose every component is N(mean, cov) (needs rank = d)."""
    s = np.asarray(family.scale)
    c = np.asarray(family.center)
    cov_z = cov / np.outer(s, s)
    eig, vec = np.linalg.eigh(cov_z)
    delta = 0.5 * eig[0]
    factor = vec * np.sqrt(eig - delta)
    M, d = len(logits), len(mean)
    return MFAParams(
        mean=jnp.tile((mean - c) / s, (M, 1)),
        log_diag=jnp.full((M, d), math.log(delta - family.diag_floor)),
        factor=jnp.tile(factor, (M, 1, 1)),
        logits=jnp.asarray(logits, dtype=jnp.float64),
    )


def test_elbo_equals_log_z_when_q_is_the_posterior():
    post = gaussian_posterior(6, 400, gamma=2.0)
    mean, cov, log_z = exact_gaussian(post)
    logits = [0.3, -1.0, 0.5]
    family = MixtureOfFactorAnalyzers.create(post, n_components=3, rank=post.d)
    exact = params_equal_to(family, mean, cov, logits)
    # Half the covariance: ELBO = log Z − KL(q‖π) with KL = ½(d/2 − d − d·log ½).
    narrow = params_equal_to(family, mean, 0.5 * cov, logits)
    kl = 0.5 * post.d * (0.5 - 1 - math.log(0.5))
    key = jax.random.key(1, impl="threefry2x32")

    def keys(start):
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(1000))

    def elbo(params, k, x, y):
        return elbo_estimate(post, family, params, k, x, y)[0]

    @jax.jit
    def estimates(params, keys_full, keys_batched):
        full = jax.vmap(lambda k: elbo(params, k, post.x, post.y))(keys_full)

        def minibatch(k):
            k_idx, k_draw = jax.random.split(k)
            idx = jax.random.randint(k_idx, (50,), 0, post.n)
            return elbo(params, k_draw, post.x[idx], post.y[idx])

        return full, jax.vmap(minibatch)(keys_batched)

    # Full batch, q = π: log π̃(w) − log q(w) = log Z at every w, so every estimate
    # equals log Z up to rounding, and the STL gradient vanishes.
    full, batched = (np.asarray(v) for v in estimates(exact, keys(0), keys(2000)))
    np.testing.assert_allclose(full, log_z, rtol=0, atol=1e-7)
    grads = jax.jit(jax.grad(elbo))(exact, keys(8000)[0], post.x, post.y)
    for leaf in jax.tree.leaves(grads):
        assert np.max(np.abs(leaf)) < 1e-6

    # Minibatches of 50 and q ≠ π: the estimates are unbiased, so their means lie
    # within 4 standard errors of the truth (a false alarm about once in 16 000).
    def within(values, expected):
        se = values.std(ddof=1) / math.sqrt(len(values))
        assert se > 0
        assert abs(values.mean() - expected) < 4 * se

    within(batched, log_z)
    full, batched = (np.asarray(v) for v in estimates(narrow, keys(4000), keys(6000)))
    within(full, log_z - kl)
    within(batched, log_z - kl)
    assert full.mean() < log_z - 0.5 * kl


def test_gradient_moments_mean_is_the_full_gradient():
    post = gaussian_posterior(5, 250, gamma=1.0)
    mean, square = gradient_moments(post, chunk=64)
    np.testing.assert_allclose(
        mean, jax.grad(post.full_loss)(post.w_star), rtol=1e-10, atol=1e-12
    )
    # For this linear model each per-sample gradient is −r_i·x_i.
    x, y = np.asarray(post.x), np.asarray(post.y)[:, 0]
    resid = y - x @ np.asarray(post.w_star)
    np.testing.assert_allclose(square, np.mean((resid[:, None] * x) ** 2, axis=0))


def test_optimizer_warms_up_then_decays_and_clips():
    s = VISettings(
        **{**VI_DEFAULTS, "clip_norm": 1.0, "learning_rate": 0.1, "warmup_steps": 4}
    )
    opt = make_optimizer(s)
    params = jnp.zeros(3)
    state = opt.init(params)
    # The learning rate starts at 0, so the first update is 0; Adam's first moment
    # (1 − b1)·g sees the gradient clipped to norm 1.
    updates, state = opt.update(jnp.array([1e6, 0.0, 0.0]), state, params)
    assert np.all(np.asarray(updates) == 0.0)
    adam_state = state[1][0]
    np.testing.assert_allclose(adam_state.mu, [0.1, 0.0, 0.0])
    # Then the rate rises to the peak at the end of warm-up and decays to
    # decay_to × peak at n_steps.
    update = jax.jit(opt.update)
    for _ in range(s.warmup_steps):
        updates, state = update(jnp.array([1.0, 0.0, 0.0]), state, params)
    assert float(updates[0]) == pytest.approx(-0.1, rel=1e-6)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="multiple of eval_every"):
        VISettings(**{**VI_DEFAULTS, "n_steps": 150})
    with pytest.raises(ValueError, match="warmup_steps"):
        VISettings(**{**VI_DEFAULTS, "warmup_steps": 2000})
    with pytest.raises(ValueError, match="lack the keys"):
        VISettings.from_dict({"n_steps": 10})
    spec = {"algo": "mfa", **VI_DEFAULTS, "eval_every": 300}
    with pytest.raises(ConfigError, match=r"methods\.m\.n_steps"):
        check_method("m", spec)
    spec = {"algo": "mfa", **VI_DEFAULTS, "warmup_steps": 5000}
    with pytest.raises(ConfigError, match=r"methods\.m\.warmup_steps"):
        check_method("m", spec)


def test_control_variate_keeps_the_mean_and_cuts_the_variance():
    # L = Q + independent noise, with E[Q] known: the adjusted losses keep the mean
    # of L and lose Q's variance.
    rng = np.random.default_rng(0)
    quad = rng.chisquare(5, size=(3, 4000))
    noise = 0.1 * rng.normal(size=(3, 4000))
    losses = 2.0 + quad + noise
    adjusted = control_variate_losses(losses, quad, np.full(3, 5.0))
    assert adjusted.std(axis=1).max() < 0.11
    np.testing.assert_allclose(adjusted.mean(axis=1), 7.0, atol=0.01)
    # A constant quadratic carries no information and is left alone.
    same = control_variate_losses(losses, np.ones((3, 4000)), np.ones(3))
    np.testing.assert_array_equal(same, losses)


def test_vi_estimate_pools_chains():
    rng = np.random.default_rng(1)
    losses = 1.0 + rng.normal(size=(4, 900)) * 0.01
    est = vi_estimate(losses, nbeta=100.0, L0=1.0)
    per_chain = 100.0 * (losses.mean(axis=1) - 1.0)
    np.testing.assert_allclose(est.llc_chains, per_chain)
    assert est.llc_mean == pytest.approx(per_chain.mean())
    # Each chain's SE is about 100·0.01/30; pooled over 4 chains, half that.
    assert est.llc_se == pytest.approx(100 * 0.01 / 30 / 2, rel=0.1)
    assert est.ess is None and est.rhat is None


def test_converged_flags_a_rising_or_falling_trace():
    steps = np.arange(100)
    flat = -100 + 50 * (1 - np.exp(-steps / 5.0))
    rising = -100 + 0.5 * steps
    assert converged(np.stack([flat, flat])) is True
    assert converged(np.stack([flat, rising])) is False
    # A fit that went backwards: the ELBO fell over the second half, or ended
    # below where it started (measured: one of four flow fits on a 2-parameter
    # network at the origin drifted away, ELBO −13,520 → −341,924, λ̂ 3·10^5).
    assert converged(np.stack([flat, -100 - 0.5 * steps])) is False
    away = -100 - 5000 * (1 - np.exp(-steps / 5.0))
    assert converged(np.stack([flat, away])) is False
    assert converged(flat[None, :3]) is None
    # A fit that starts at its optimum gains nothing and only jitters (measured:
    # the flow on linreg d = 10, ±0.02 nats): level, not "not converged".
    jitter = -222.8 + 0.02 * np.sin(steps)
    assert converged(np.stack([jitter, jitter + 0.01])) is True
    assert converged(np.stack([jitter, jitter - 0.002 * steps])) is False


def test_importance_diagnostics_of_an_exact_and_a_collapsed_q():
    rng = np.random.default_rng(3)
    losses = 2.0 + 0.01 * rng.random((2, 500))
    # q = π: every weight equal, all 500 draws count, no KL, λ̂ unchanged.
    exact = importance_diagnostics(np.full((2, 500), -7.0), losses, 100.0, 2.0)
    assert exact["is_ess"] == pytest.approx(500.0)
    assert exact["kl_bound"] == pytest.approx(0.0, abs=1e-12)
    assert exact["llc_is"] == pytest.approx(100.0 * (losses.mean() - 2.0))
    # One draw outweighs the rest by e^30: q's draws are worth one draw of π, the
    # bound is log-mean-exp minus the mean, and λ̂ re-weighted is that draw's.
    log_w = np.zeros((2, 500))
    log_w[1, 7] = 30.0
    collapsed = importance_diagnostics(log_w, losses, 100.0, 2.0)
    assert collapsed["is_ess"] == pytest.approx(1.0, abs=1e-9)
    kl = 30.0 + math.log((1 + 499 * math.exp(-30.0)) / 500) - 30.0 / 500
    assert collapsed["kl_bound"] == pytest.approx(kl)
    llc0 = 100.0 * (losses[0].mean() - 2.0)
    llc1 = 100.0 * (losses[1, 7] - 2.0)
    assert collapsed["llc_is"] == pytest.approx((llc0 + llc1) / 2, rel=1e-9)
    # A weight that is not finite leaves nothing to say.
    log_w[0, 0] = -np.inf
    nothing = importance_diagnostics(log_w, losses, 1.0, 0.0)
    assert all(math.isnan(v) for v in nothing.values())


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, (3, 40), elements=st.floats(-50, 50)),
    st.floats(-1e3, 1e3),
)
def test_importance_diagnostics_bounds(log_w, shift):
    """1 ≤ ESS ≤ S and KL bound ≥ 0 (Jensen) whatever the weights; both, and the
    re-weighted λ̂, ignore a constant added to log w (π̃'s normalization)."""
    losses = np.linspace(0.0, 1.0, 120).reshape(3, 40)
    out = importance_diagnostics(log_w, losses, 10.0, 0.0)
    assert 1.0 - 1e-9 <= out["is_ess"] <= 40.0 + 1e-9
    assert out["kl_bound"] >= -1e-9
    moved = importance_diagnostics(log_w + shift, losses, 10.0, 0.0)
    for key in out:
        assert moved[key] == pytest.approx(out[key], rel=1e-9, abs=1e-9)
