"""Flow VI: the family's exact density, the basis, keys under vmap, and λ̂ accuracy.

λ̂ is checked against the exact finite-n value of linear regression and against
Aoyagi's λ for the default deep linear network.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat import flow, keys
from lambda_hat.posterior import Posterior

FAMILY = {
    "k": None,
    "basis": "bottom",
    "lanczos_steps": 0,
    "flow_layers": 2,
    "knots": 6,
    "interval": 4.0,
    "nn_width": 16,
    "nn_depth": 1,
    "n_samples": 4,
    "scale_floor": 1e-6,
    "noise_floor": 1e-3,
}
# The shared VI settings, sized for tests.
VI = {
    "n_steps": 200,
    "learning_rate": 0.01,
    "warmup_steps": 20,
    "decay_to": 0.01,
    "clip_norm": 100.0,
    "batch_size": 64,
    "eval_every": 50,
    "trace_samples": 4,
    "eval_samples": 50,
    "control_variate": False,
}


def quadratic_posterior(d: int, n: int = 400, seed: int = 0) -> Posterior:
    """A linear-regression posterior built by hand (no training), Hessian xᵀx/n."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)))
    y = x @ jnp.ones(d) + jnp.asarray(rng.normal(size=n))
    w_star = jnp.linalg.lstsq(x, y)[0]

    def loss(w, x, y):
        return 0.5 * jnp.mean((y - x @ w) ** 2)

    return Posterior(
        w_star=w_star,
        x=x,
        y=y,
        beta=1 / math.log(n),
        gamma=1.0,
        L0=float(loss(w_star, x, y)),
        loss=loss,
    )


def perturbed(params, scale: float, seed: int):
    """``params`` with every leaf moved by scale·N(0, 1): a flow far from identity."""
    leaves, tree = jax.tree.flatten(params)
    ks = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [
        x + scale * jax.random.normal(k, x.shape, x.dtype)
        for x, k in zip(leaves, ks, strict=True)
    ]
    return jax.tree.unflatten(tree, moved)


@pytest.mark.parametrize(("k", "basis"), [(5, "bottom"), (2, "random"), (1, "top")])
def test_log_q_is_the_change_of_variables_density(k, basis):
    """log q(w) from the inverse equals log N(z)+log N(c) − log|det ∂w/∂(z, c)|.

    The right side maps (z, c) forward, c the coordinates of the complement noise in an
    orthonormal complement basis, and takes the Jacobian's determinant (d×d, test only).
    """
    d = 5
    post = quadratic_posterior(d)
    s = flow.FlowSettings.from_dict(FAMILY)
    fam = flow.FlowFamily(post, s, flow.make_basis(post, k=k, basis=basis, steps=0))
    params = perturbed(fam.init(post, jax.random.key(1)), 0.3, seed=2)

    q, _ = jnp.linalg.qr(jnp.concatenate([fam.U, jnp.eye(d)], axis=1))
    complement = q[:, k:d]

    def forward(zc):
        z, c = zc[:k], zc[k:]
        v = (
            fam.latent(params, z[None])[0] @ fam.U.T
            + fam._noise(params) * complement @ c
        )
        return fam.w_star + fam._scale(params) * v

    zc = jax.random.normal(jax.random.key(3), (6, d), jnp.float64)
    w = jax.vmap(forward)(zc)
    log_det = jax.vmap(lambda x: jnp.linalg.slogdet(jax.jacfwd(forward)(x))[1])(zc)
    expected = -0.5 * jnp.sum(zc**2, axis=1) - 0.5 * d * math.log(2 * math.pi) - log_det
    np.testing.assert_allclose(fam.log_q(params, w), expected, rtol=1e-10, atol=1e-9)


def test_lanczos_restarts_give_a_complete_eigenbasis():
    """A null space of dimension 3 breaks the Krylov iteration; restarts finish it."""
    eigs = jnp.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.5])
    rot, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (6, 6), jnp.float64))
    a = rot @ jnp.diag(eigs) @ rot.T
    theta, v = flow.lanczos(
        lambda x: a @ x, 6, 6, key=jax.random.key(1), dtype=jnp.float64
    )
    np.testing.assert_allclose(theta, eigs, atol=1e-12)
    np.testing.assert_allclose(v.T @ v, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(v.T @ a @ v, np.diag(theta), atol=1e-12)


def test_basis_ends_of_the_spectrum():
    """``bottom`` and ``top`` take the smallest and largest Hessian eigenvalues."""
    post = quadratic_posterior(8)
    eigs = np.linalg.eigvalsh(np.asarray(post.x.T @ post.x / post.n))
    bottom = flow.make_basis(post, k=3, basis="bottom", steps=8)
    top = flow.make_basis(post, k=3, basis="top", steps=8)
    np.testing.assert_allclose(bottom.curvature, eigs[:3], rtol=1e-10)
    np.testing.assert_allclose(top.curvature, eigs[-3:], rtol=1e-10)
    for b in (bottom, top):
        np.testing.assert_allclose(b.U.T @ b.U, np.eye(3), atol=1e-12)


def _shapes(jaxpr) -> list[tuple[int, ...]]:
    """The shapes of every value a jaxpr and its sub-jaxprs (scan, cond, jit) make."""
    shapes = []
    for eqn in jaxpr.eqns:
        shapes += [tuple(getattr(v.aval, "shape", ())) for v in eqn.outvars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes += _shapes(inner)
    return shapes


def test_no_d_by_d_array_in_a_step_or_the_basis():
    """Every intermediate of an ELBO step (gradient included) and of the Lanczos
    basis has at most one axis of length d: memory is linear in d."""
    from lambda_hat import vi

    d = 300
    post = quadratic_posterior(d, n=64)
    s = flow.FlowSettings.from_dict({**FAMILY, "k": 4})
    fam = flow.FlowFamily(post, s, flow.make_basis(post, k=4, basis="bottom", steps=0))
    settings = vi.VISettings.from_dict(VI)
    optimizer = vi.make_optimizer(settings)
    step = vi.make_step(post, fam, optimizer, 32)

    def one(key):
        params = fam.init(post, key)
        return step((params, optimizer.init(params)), key)

    key = jax.random.key(0)
    shapes = _shapes(jax.make_jaxpr(one)(key).jaxpr)
    hvp = flow.hessian_vector_product(post)
    shapes += _shapes(
        jax.make_jaxpr(lambda k: flow.lanczos(hvp, d, 18, key=k, dtype=jnp.float64))(
            key
        ).jaxpr
    )
    assert any(d in shape for shape in shapes)
    assert not [shape for shape in shapes if sum(n >= d for n in shape) >= 2]


# ---------------------------------------------------------------- keys and vmap

GUARD = {**FAMILY, **VI, "k": 3, "flow_layers": 1, "n_chains": 4}


def _fit(post, chain_keys):
    return flow.run(post, chain_keys, GUARD, progress=lambda s: None)


def _chain_keys(c: int | None = None):
    """The four typed chain keys, or chain c's alone (shape (1,)), made afresh.

    A fit consumes the keys it is given, and the key-reuse checker refuses a slice of
    a key array, so chain c's key is rebuilt from its key data.
    """
    chain_keys = keys.chain_keys(keys.job_key(0, "sample", {"rep": 0}), 4)
    if c is None:
        return chain_keys
    data = jax.random.key_data(chain_keys)[c : c + 1]
    return jax.random.wrap_key_data(data, impl=keys.IMPL)


@pytest.fixture(scope="module")
def guard():
    """The posterior (d = 5, k = 3) and a 4-chain fit from typed keys."""
    post = quadratic_posterior(5, n=200)
    return post, _fit(post, _chain_keys())


def test_vmapped_fits_match_fits_run_alone(guard):
    """The ancestor's failure: flow VI under vmap from typed keys. Chain c of a
    4-chain fit equals fitting chain c alone.

    What depends only on keys is bit-identical: each fit's starting parameters and its
    draws from them. The fitted numbers agree to a relative 1e-9, not bitwise: XLA on
    CPU drops a batch axis of size 1, and then lowers the same product to a different
    dot kernel (YNNPACK for an unbatched dot, XLA's own for a batched one) with another
    layout, so the sums over the S draws and the minibatch inside the gradient are
    accumulated in another order. Each step differs at 1e-16 relative (measured); the
    optimization does not amplify it (measured ≤ 1e-14 after the fit).
    """
    post, out4 = guard
    s = flow.FlowSettings.from_dict(GUARD)
    fam = flow.FlowFamily(post, s, flow.make_basis(post, k=3, basis="bottom", steps=0))

    def start(key):
        params = fam.init(post, jax.random.fold_in(key, 1))
        return params, fam.sample(params, jax.random.fold_in(key, 2), 8)

    batched = jax.jit(jax.vmap(start))(_chain_keys())
    # The first and the last chain: each full fit compiles anew, and two of them keep
    # the test within its time budget.
    for c in (0, 3):
        alone = jax.jit(jax.vmap(start))(_chain_keys(c))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(alone), strict=True):
            assert np.array_equal(a[c], b[0])

        out1 = _fit(post, _chain_keys(c))
        assert out1.status == "ok"
        for name in ("elbo", "entropy", "grad_norm", "loss"):
            np.testing.assert_allclose(
                out4.draws[name][c], out1.draws[name][0], rtol=1e-9, err_msg=name
            )
        np.testing.assert_allclose(
            out4.estimate.llc_chains[c], out1.estimate.llc_chains[0], rtol=1e-9
        )
    # Different keys make different fits.
    assert len(set(out4.estimate.llc_chains)) == 4


def test_legacy_key_data_gives_the_typed_keys_result(guard):
    """uint32 key data of shape (chains, 2) is wrapped on the host: same numbers."""
    post, out4 = guard
    legacy = np.asarray(jax.random.key_data(_chain_keys()))
    assert legacy.dtype == np.uint32 and legacy.shape == (4, 2)
    out = _fit(post, legacy)
    for name in ("elbo", "entropy", "grad_norm", "loss"):
        assert np.array_equal(out.draws[name], out4.draws[name]), name
    assert out.estimate.llc_chains == out4.estimate.llc_chains


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (np.array([[1, 2]], dtype=np.int32), "uint32"),
        (np.array([[1.0, 2.0]]), "uint32"),
        (np.zeros((2, 3), dtype=np.uint32), "trailing shape (2,)"),
        ([[0, 1]], "got list"),
        (42, "got int"),
        (jax.random.key(0, impl="rbg"), "threefry2x32"),
        (jax.random.key(0, impl="threefry2x32"), "one key per fit"),
    ],
)
def test_other_key_inputs_fail_with_our_message(bad, says):
    post = quadratic_posterior(3, n=20)
    with pytest.raises(TypeError, match="expected") as err:
        flow.run(post, bad, GUARD, progress=lambda s: None)
    assert says in str(err.value)


# ------------------------------------------------------------------------- accuracy


def _method(config: dict, name: str = "flow", **over) -> dict:
    """The flow method of the default config, schema defaults filled, with overrides."""
    return {**config["methods"][name], **over}


def test_linreg_d10_k_equals_d_matches_the_exact_llc(make_target, default_config):
    """Default linreg target (d = 10), k = d: λ̂ within 3 standard errors and 3% of
    the exact finite-n value ½Σ nβh/(nβh + γ).

    The standard error is the Monte Carlo error of 4 × 1000 evaluation samples
    (≈ 0.035 here, 0.7%). The fit's own bias is not in it; measured: −0.4% at 2000
    steps, so 1000 steps are enough and both bounds hold with room.
    """
    from lambda_hat.sample import run_method

    spec = default_config["targets"]["linreg"]
    row, out = run_method(
        make_target("linreg", spec),
        target="linreg",
        method="flow",
        rep=0,
        seed=0,
        settings=_method(default_config, n_steps=1000),
        progress=lambda s: None,
    )
    assert row["status"] == "ok" and row["truth_kind"] == "exact"
    assert row["d"] == 10 and json.loads(row["settings"])["k"] is None
    error = abs(row["llc_mean"] - row["truth"])
    assert error <= 3 * row["llc_se"], (row["llc_mean"], row["truth"], row["llc_se"])
    assert error <= 0.03 * row["truth"]
    assert row["rhat"] is None and row["ess"] is None
    assert np.all(np.isfinite(out.draws["elbo"]))
    # q holds π here: its draws, weighted by π/q, are worth nearly as many of π's.
    assert row["is_ess"] >= 0.9 * 1000, row["is_ess"]
    assert 0.0 <= row["kl_bound"] < 0.05, row["kl_bound"]


def test_k_above_d_means_k_equals_d(make_target, default_config):
    """k caps the latent dimension: on d = 10, k = 12 fits exactly what k = d does,
    so one method block can run on targets of every size."""
    from lambda_hat.sample import run_method

    spec = default_config["targets"]["linreg"]
    target = make_target("linreg", spec)
    rows = [
        run_method(
            target,
            target="linreg",
            method="flow",
            rep=0,
            seed=0,
            settings=_method(default_config, n_steps=100, warmup_steps=10, k=k),
            progress=lambda s: None,
        )[0]
        for k in (None, 12)
    ]
    assert rows[0]["llc_mean"] == rows[1]["llc_mean"]
    assert np.isfinite(rows[0]["llc_mean"])
    # The row says what ran: k = d = 10 both times (the settings say null and 12),
    # with all 10 Lanczos steps, and the batch clipped to n.
    for row in rows:
        used = json.loads(row["settings_used"])
        assert used == {"batch_size": 1000, "k": 10, "lanczos_steps": 10}, used


LINREG_D100 = {
    "family": "linreg",
    "d_in": 100,
    "n": 1000,
    "noise": 1.0,
    "train": {"steps": 1000, "lr": 0.05},
}


@pytest.mark.parametrize(
    "k",
    [
        10,
        pytest.param(50, marks=pytest.mark.slow),
        pytest.param(100, marks=pytest.mark.slow),
    ],
)
def test_linreg_d100_accuracy_for_k_below_d(make_target, default_config, k):
    """Linear regression, d = 100: λ̂ within 1% and 3 standard errors of exact.

    Measured (4 fits, 2000 steps, exact 49.62, standard error 0.11 = 0.23%): k = 10
    gives −0.3% to −0.4% whatever the basis, k = 50 gives −0.3% to +0.1%, k = 100 gives
    +0.4%. Accuracy hardly moves with k here: every direction is stiff (nβh ≫ γ), and
    the isotropic complement then carries its share of λ̂ (½ per direction) exactly.
    1% is four times the largest error measured.
    """
    from lambda_hat.sample import run_method

    row, _ = run_method(
        make_target("linreg100", LINREG_D100),
        target="linreg100",
        method="flow",
        rep=0,
        seed=0,
        settings=_method(default_config, k=k),
        progress=lambda s: None,
    )
    assert row["status"] == "ok" and row["truth_kind"] == "exact" and row["d"] == 100
    error = abs(row["llc_mean"] - row["truth"])
    assert error <= 3 * row["llc_se"], (row["llc_mean"], row["truth"], row["llc_se"])
    assert error <= 0.01 * row["truth"]


# A flow whose latent space holds every direction still lands near 13 on the default
# DLN (λ = 9): measured 13.3 at k = d after 2000 steps, 13.1 after 4000 full-batch
# steps, 12.8 after 10,000 (the ELBO still rising slowly); with k = 16, `top` gives
# 14.9, `bottom` 17.8 and `random` 17.6. The spline coupling layers do not learn the
# curved symmetry orbits of the network (W2·W1 = W2G·G⁻¹W1) within these budgets, so q
# stays close to the best Gaussian, which overestimates. The HMC posterior spreads
# 0.4–0.9 along every coordinate, q 3–12 times less; with 40,000 draws of q the
# importance-weighted bound on log Z sits 10.4 nats above the ELBO (8.4 with 8 coupling
# layers × 64 and 12,000 steps, λ̂ 12.3): q is far from π, and says so (below).
@pytest.fixture(scope="module")
def dln_row(make_target, default_config):
    """The flow's summary row on the default DLN (λ = 9), a short fit."""
    from lambda_hat.sample import run_method

    row, _ = run_method(
        make_target("dln", default_config["targets"]["dln"]),
        target="dln",
        method="flow",
        rep=0,
        seed=0,
        settings=_method(default_config, n_steps=500, eval_samples=200),
        progress=lambda s: None,
    )
    assert row["status"] == "ok" and row["truth"] == 9.0
    return row


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="the flow does not yet follow the DLN's curved orbits (λ̂ ≈ 13 vs 9)",
)
def test_dln_llc_is_near_aoyagi(dln_row):
    assert abs(dln_row["llc_mean"] - 9.0) <= 0.15 * 9.0, dln_row["llc_mean"]


def test_dln_fit_reports_that_q_is_far_from_the_posterior(dln_row):
    """Where the flow misses λ its importance diagnostics say so, and the report
    flags it: KL(q‖π) is bounded well above the report's 0.1 nats per unit of λ̂
    (measured at 2000 steps: 10.2 nats on λ̂ = 12.6, 0.81 per unit; on linear
    regression the same bound is below 0.05 nats), and q's draws weighted by π/q are
    worth a handful of π's (1.7 of 1000 measured)."""
    from lambda_hat import report

    ratio = report.kl_per_llc(dln_row["kl_bound"], dln_row["llc_mean"])
    assert ratio > 3 * report.KL_PER_LLC_MAX, (dln_row["kl_bound"], ratio)
    assert dln_row["is_ess"] < 25, dln_row["is_ess"]
