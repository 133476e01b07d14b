"""Stage A: training, artifacts, and the known answers recorded with them."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat import keys
from lambda_hat.posterior import make_posterior
from lambda_hat.targets import (
    _teacher,
    exact_linreg_llc,
    load_target,
    train_target,
)

LINREG = {"family": "linreg", "d_in": 6, "n": 500, "train": {"steps": 300, "lr": 0.05}}
DLN = {"family": "dln", "widths": [4, 3, 4], "rank": 1, "n": 400, "train": {"steps": 0}}
MLP = {
    "family": "mlp",
    "d_in": 2,
    "width": 3,
    "depth": 1,
    "n": 300,
    "noise": 0.5,
    "train": {"steps": 200, "lr": 0.02},
}


@pytest.mark.parametrize("name,spec", [("lr", LINREG), ("dln", DLN), ("mlp", MLP)])
def test_round_trip(make_target, name, spec):
    path = make_target(name, spec)
    target = load_target(path)
    meta = json.loads((path / "meta.json").read_text())
    w, _ = target.flat()
    assert meta["d"] == w.size
    assert meta["n"] == spec["n"] == target.n
    loss = target.loss_fn()(w, jnp.asarray(target.x), jnp.asarray(target.y))
    assert float(loss) == pytest.approx(meta["L0"], rel=1e-12)
    assert w.dtype == jnp.float64


def test_training_reaches_the_least_squares_solution(make_target):
    target = load_target(make_target("lr", LINREG))
    w, _ = target.flat()
    solution, *_ = np.linalg.lstsq(target.x, target.y[:, 0], rcond=None)
    np.testing.assert_allclose(np.asarray(w), solution, atol=1e-6)
    assert target.meta["grad_norm"] < 1e-6


def test_training_is_reproducible():
    key = keys.job_key(0, "train_target", {"target": "mlp"})
    a = train_target("mlp", _spec(MLP), key=key, progress=lambda s: None)
    b = train_target("mlp", _spec(MLP), key=key, progress=lambda s: None)
    np.testing.assert_array_equal(np.asarray(a.flat()[0]), np.asarray(b.flat()[0]))
    np.testing.assert_array_equal(a.y, b.y)


def _spec(spec):
    from conftest import validated

    return validated(
        {"seed": 0, "targets": {"t": spec}, "methods": {"m": {"algo": "sgld"}}}
    )["targets"]["t"]


def test_dln_teacher_has_the_configured_rank():
    spec = _spec({"family": "dln", "widths": [5, 4, 3, 5], "rank": 2, "n": 10})
    teacher = _teacher(spec, jax.random.key(0, impl="threefry2x32"))
    product = jnp.eye(5)
    for layer in teacher.layers:
        product = layer.weight @ product
    assert np.linalg.matrix_rank(np.asarray(product), tol=1e-8) == 2


def test_dln_records_aoyagi_lambda(make_target):
    meta = load_target(make_target("dln", DLN)).meta
    assert meta["truth_kind"] == "aoyagi"
    # widths (4, 3, 4), rank 1: the one-hidden-layer formula (see test_aoyagi)
    from lambda_hat.aoyagi import dln_lambda

    assert meta["true_lambda"] == float(dln_lambda([4, 3, 4], 1))


def test_exact_llc_matches_sampling_the_gaussian_posterior(make_target):
    # The localized tempered posterior of a quadratic loss is Gaussian; sample it
    # exactly and compare nβ(mean L_n − L0) with the closed form. 20,000 independent
    # draws give a relative Monte Carlo error near 1%; the tolerance is 4 SE.
    target = load_target(make_target("lr", LINREG))
    post = make_posterior(target, beta=None, gamma=5.0)
    w_star = np.asarray(post.w_star)
    hess = np.asarray(jax.hessian(post.full_loss)(post.w_star))
    grad = np.asarray(jax.grad(post.full_loss)(post.w_star))
    precision = post.nbeta * hess + post.gamma * np.eye(w_star.size)
    cov = np.linalg.inv(precision)
    mean = w_star - post.nbeta * cov @ grad
    rng = np.random.default_rng(0)
    draws = rng.multivariate_normal(mean, cov, size=20_000)
    losses = np.asarray(jax.vmap(post.full_loss)(jnp.asarray(draws)))
    llc = post.nbeta * (losses - post.L0)
    se = llc.std() / np.sqrt(llc.size)
    exact, kind = target.truth(post.beta, post.gamma)
    assert kind == "exact"
    assert abs(llc.mean() - exact) < 4 * se


def test_exact_llc_with_a_gradient_term():
    # A shifted quadratic: the closed form must include the gradient at w*.
    eigs = np.array([1.0, 2.0, 0.0])
    g = np.array([0.1, -0.2, 0.0])
    n, beta, gamma = 100, 0.5, 3.0
    a = n * beta * eigs + gamma
    mu = -n * beta * g / a
    expected = n * beta * (g @ mu + 0.5 * np.sum(eigs / a) + 0.5 * np.sum(eigs * mu**2))
    assert exact_linreg_llc(eigs, g, n=n, beta=beta, gamma=gamma) == pytest.approx(
        expected
    )
    no_grad = exact_linreg_llc(eigs, None, n=n, beta=beta, gamma=gamma)
    assert no_grad == pytest.approx(0.5 * np.sum(n * beta * eigs / a))


def test_missing_artifact_file_is_named(make_target, tmp_path):
    path = tmp_path / "t"
    shutil.copytree(make_target("lr", LINREG), path)
    (path / "data.npz").unlink()
    with pytest.raises(FileNotFoundError, match="data.npz"):
        load_target(path)


def test_corrupt_params_are_named(make_target, tmp_path):
    path = tmp_path / "t"
    shutil.copytree(make_target("lr", LINREG), path)
    (path / "params.eqx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="params.eqx"):
        load_target(path)


def test_skeleton_mismatch_is_refused(make_target, tmp_path):
    path = tmp_path / "t"
    shutil.copytree(make_target("lr", LINREG), path)
    meta = json.loads((path / "meta.json").read_text())
    meta["spec"]["d_in"] = 7
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match the model skeleton"):
        load_target(path)


@pytest.mark.parametrize("name,spec", [("lr", LINREG), ("dln", DLN)])
def test_affine_targets_are_described_from_the_data_moments(name, spec):
    """L0, ‖∇L_n(w*)‖ and the Hessian spectrum of linreg and dln targets come from the
    data's moments (so their cost does not grow with n) and agree with the per-sample
    loss to rounding."""
    key = keys.job_key(0, "train_target", {"target": name})
    target = train_target(name, _spec(spec), key=key, progress=lambda s: None)
    w, _ = target.flat()
    x, y = jnp.asarray(target.x), jnp.asarray(target.y)
    loss = target.loss_fn()
    L0, grad = jax.value_and_grad(loss)(w, x, y)
    eigs = np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(w, x, y)))
    assert target.meta["L0"] == pytest.approx(float(L0), rel=1e-12)
    assert target.meta["grad_norm"] == pytest.approx(
        float(jnp.linalg.norm(grad)), rel=1e-6, abs=1e-12
    )
    np.testing.assert_allclose(np.sort(target.hessian_eigs), eigs, atol=1e-10)
    # The recorded L0 is the posterior's L_n at w*, the same function every run uses.
    post = make_posterior(target, beta=None, gamma=1.0)
    assert float(post.full_loss(w)) == target.meta["L0"]
