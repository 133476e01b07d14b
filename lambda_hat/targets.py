"""Stage A: the targets whose λ̂ we estimate, their training, and their artifacts.

Three families, each a Gaussian regression model y = f_w(x) + σ·ε in equinox:

- ``linreg``: a one-layer linear network; its loss is exactly quadratic, so every
  method has an exact finite-n λ̂ (computed per run from the Hessian recorded here).
- ``dln``: a deep linear network started at a teacher whose end-to-end map has a given
  rank; its true λ is Aoyagi's.
- ``mlp``: a teacher-student multilayer perceptron; no closed form, so HMC is the
  reference.

An artifact directory holds ``params.eqx`` (equinox serialisation of the trained model),
``data.npz`` (x, y and, when d is small enough, the Hessian spectrum at w*) and
``meta.json`` (the skeleton's hyperparameters, n, d, L0, ‖∇L_n(w*)‖ and the truth).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lambda_hat import aoyagi
from lambda_hat.io import atomic_path

log = logging.getLogger(__name__)

FAMILIES = ("linreg", "dln", "mlp")
# Families whose prediction is affine in x at every w: their full-batch loss depends
# on the data only through its second moments (see `moment_loss_fn`).
AFFINE_FAMILIES = ("linreg", "dln")
ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}
# Above this many parameters the Hessian's eigendecomposition is skipped: it needs a d×d
# matrix, which the samplers themselves never form.
HESSIAN_MAX_D = 2500
FORMAT_VERSION = 1


class DeepLinear(eqx.Module):
    """A product of bias-free linear layers, x ↦ W_L ⋯ W_1 x.

    ``widths`` runs from the input width to the output width.
    """

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(self, widths: tuple[int, ...], *, key: jax.Array, dtype: Any):
        keys = jax.random.split(key, len(widths) - 1)
        self.layers = tuple(
            eqx.nn.Linear(a, b, use_bias=False, key=k, dtype=dtype)
            for a, b, k in zip(widths[:-1], widths[1:], keys, strict=True)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x


def _dtype(spec: dict) -> Any:
    return jnp.float64 if spec.get("dtype", "float64") == "float64" else jnp.float32


def dimensions(spec: dict) -> tuple[int, int]:
    """(input width, output width) of a target spec."""
    family = spec["family"]
    if family == "linreg":
        return spec["d_in"], spec["d_out"]
    if family == "dln":
        return spec["widths"][0], spec["widths"][-1]
    return spec["d_in"], spec["d_out"]


def build_model(spec: dict, *, key: jax.Array, teacher: bool = False) -> eqx.Module:
    """The model skeleton of a target spec (random weights from ``key``).

    With ``teacher=True`` an MLP target gets its teacher's width instead.
    """
    family, dtype = spec["family"], _dtype(spec)
    if family == "linreg":
        return eqx.nn.Linear(
            spec["d_in"], spec["d_out"], use_bias=spec["bias"], key=key, dtype=dtype
        )
    if family == "dln":
        return DeepLinear(tuple(spec["widths"]), key=key, dtype=dtype)
    if family == "mlp":
        width = spec["teacher_width"] if teacher else spec["width"]
        return eqx.nn.MLP(
            spec["d_in"],
            spec["d_out"],
            width,
            spec["depth"],
            activation=ACTIVATIONS[spec["activation"]],
            key=key,
            dtype=dtype,
        )
    raise ValueError(f"unknown target family {family!r}; expected one of {FAMILIES}")


def gaussian_nll(pred: jax.Array, y: jax.Array, noise: float) -> jax.Array:
    """Mean over samples of the Gaussian negative log-likelihood with std ``noise``."""
    resid = (y - pred) / noise
    per_sample = 0.5 * jnp.sum(resid**2, axis=-1)
    const = y.shape[-1] * (math.log(noise) + 0.5 * math.log(2 * math.pi))
    return jnp.mean(per_sample) + const


@dataclass
class Target:
    """A trained target: model at w*, its data and its metadata."""

    name: str
    spec: dict
    model: eqx.Module
    x: np.ndarray
    y: np.ndarray
    meta: dict = field(default_factory=dict)
    hessian_eigs: np.ndarray | None = None
    grad_eig: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def flat(self) -> tuple[jax.Array, Callable[[jax.Array], eqx.Module]]:
        """w* as a flat vector, and the map from a flat vector back to a model."""
        params, static = eqx.partition(self.model, eqx.is_inexact_array)
        w_star, unravel = ravel_pytree(params)

        def to_model(w: jax.Array) -> eqx.Module:
            return eqx.combine(unravel(w), static)

        return w_star, to_model

    def loss_fn(self) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
        """L(w, x, y): mean negative log-likelihood of a batch at flat parameters w."""
        _, to_model = self.flat()
        noise = float(self.spec["noise"])

        def loss(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
            pred = jax.vmap(to_model(w))(x)
            return gaussian_nll(pred, y, noise)

        return loss

    def moment_loss_fn(
        self,
    ) -> Callable[[jax.Array, tuple[jax.Array, ...]], jax.Array] | None:
        """L_n(w) from the data's second moments, for affine families; else None.

        When f_w(x) = A(w)x + b(w), the mean squared residual over the n samples is
        Syy − 2⟨Ã, Syx⟩ + ⟨ÃSxx, Ã⟩ with Ã = [A, b] and the moments of
        x̃ = (x, 1) from :func:`data_moments`. Ã is read off the model by applying it
        to the d_in unit vectors and to 0, so one evaluation costs d_in + 1 forward
        passes instead of n: the same L_n(w) and gradient, up to rounding.

        Returns:
            ``loss(w, moments)`` with ``w`` of shape (d,) and ``moments`` the tuple
            of :func:`data_moments`, or None for families that are not affine.
        """
        if self.spec["family"] not in AFFINE_FAMILIES:
            return None
        _, to_model = self.flat()
        d_in, d_out = dimensions(self.spec)
        noise = float(self.spec["noise"])
        const = d_out * (math.log(noise) + 0.5 * math.log(2 * math.pi))

        def loss(w: jax.Array, moments: tuple[jax.Array, ...]) -> jax.Array:
            xx, yx, yy = moments
            basis = jnp.concatenate(
                [jnp.eye(d_in, dtype=xx.dtype), jnp.zeros((1, d_in), xx.dtype)]
            )
            out = jax.vmap(to_model(w))(basis)  # (d_in + 1, d_out); last row is b
            bias = out[-1]
            a = jnp.concatenate([(out[:-1] - bias).T, bias[:, None]], axis=1)
            sq = yy - 2.0 * jnp.sum(a * yx) + jnp.sum((a @ xx) * a)
            return 0.5 * sq / noise**2 + const

        return loss

    def truth(self, beta: float, gamma: float) -> tuple[float | None, str | None]:
        """The known answer for a run at (β, γ), and its kind, or (None, None)."""
        if self.spec["family"] == "linreg" and self.hessian_eigs is not None:
            return exact_linreg_llc(
                self.hessian_eigs, self.grad_eig, n=self.n, beta=beta, gamma=gamma
            ), "exact"
        if self.meta.get("true_lambda") is not None:
            return float(self.meta["true_lambda"]), "aoyagi"
        return None, None


def data_moments(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Second moments of the data, with x̃ = (x, 1): (Sxx, Syx, Syy).

    Args:
        x: inputs, shape (n, d_in).
        y: outputs, shape (n, d_out).

    Returns:
        Sxx = mean x̃x̃ᵀ, shape (d_in + 1, d_in + 1); Syx = mean yx̃ᵀ, shape
        (d_out, d_in + 1); Syy = mean ‖y‖², a scalar.
    """
    n = x.shape[0]
    xt = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
    return xt.T @ xt / n, y.T @ xt / n, jnp.sum(y * y) / n


def exact_linreg_llc(
    eigs: np.ndarray, grad_eig: np.ndarray | None, *, n: int, beta: float, gamma: float
) -> float:
    """λ̂ = nβ(E_π[L_n] − L0) for a quadratic loss, in closed form.

    With H = V diag(h) Vᵀ and g = ∇L_n(w*) (``grad_eig`` = Vᵀg), the localized tempered
    posterior is Gaussian with precision A = nβH + γI and mean shift μ = −nβA⁻¹g, so
    E_π[L_n] − L0 = gᵀμ + ½ tr(HA⁻¹) + ½ μᵀHμ. With g = 0 this is ½ Σ nβhᵢ/(nβhᵢ + γ).
    """
    nb = n * beta
    a = nb * eigs + gamma
    g = np.zeros_like(eigs) if grad_eig is None else grad_eig
    mu = -nb * g / a
    expected = np.sum(g * mu) + 0.5 * np.sum(eigs / a) + 0.5 * np.sum(eigs * mu**2)
    return float(nb * expected)


def _split_keys(key: jax.Array) -> dict[str, jax.Array]:
    names = ("teacher", "data", "noise", "init", "train")
    return {name: jax.random.fold_in(key, i) for i, name in enumerate(names)}


def _teacher(spec: dict, key: jax.Array) -> eqx.Module:
    """The data-generating model. For a DLN its end-to-end map has rank ``rank``."""
    model = build_model(spec, key=key, teacher=True)
    if spec["family"] == "dln":
        # Rescale to unit-variance entries per input, then keep only the first `rank`
        # rows of the first layer: the product then has rank `rank` (generically).
        layers = []
        for i, layer in enumerate(model.layers):
            k = jax.random.fold_in(key, 1000 + i)
            w = jax.random.normal(k, layer.weight.shape, layer.weight.dtype)
            w = w / math.sqrt(layer.weight.shape[1])
            if i == 0:
                w = w.at[spec["rank"] :, :].set(0.0)
            layers.append(eqx.tree_at(lambda m: m.weight, layer, w))
        model = eqx.tree_at(lambda m: m.layers, model, tuple(layers))
    return model


def make_data(
    spec: dict, teacher: eqx.Module, key: jax.Array
) -> tuple[np.ndarray, np.ndarray]:
    """n inputs x ~ N(0, I) and outputs y = teacher(x) + noise·ε."""
    kx, ke = jax.random.split(key)
    d_in, d_out = dimensions(spec)
    dtype = _dtype(spec)
    x = jax.random.normal(kx, (spec["n"], d_in), dtype)
    y = jax.vmap(teacher)(x) + spec["noise"] * jax.random.normal(
        ke, (spec["n"], d_out), dtype
    )
    return np.asarray(x), np.asarray(y)


def fit(target: Target, *, key: jax.Array, progress: Callable[[str], None]) -> None:
    """Train ``target.model`` in place with optax Adam, as set in ``spec["train"]``."""
    train = target.spec["train"]
    steps = int(train["steps"])
    if steps == 0:
        return
    w0, to_model = target.flat()
    loss = target.loss_fn()
    x, y = jnp.asarray(target.x), jnp.asarray(target.y)
    n = target.n
    batch = min(int(train.get("batch_size") or n), n)
    schedule = optax.cosine_decay_schedule(train["lr"], steps, alpha=0.01)
    opt = optax.adam(schedule)

    def step(carry, k):
        w, state = carry
        if batch < n:
            idx = jax.random.choice(k, n, (batch,), replace=False)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        value, grad = jax.value_and_grad(loss)(w, xb, yb)
        updates, state = opt.update(grad, state, w)
        return (optax.apply_updates(w, updates), state), value

    chunks = 10
    w, state = w0, opt.init(w0)
    run = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))
    per_chunk = math.ceil(steps / chunks)
    done = 0
    for i in range(chunks):
        m = min(per_chunk, steps - done)
        if m <= 0:
            break
        ks = jax.random.split(jax.random.fold_in(key, i), m)
        (w, state), values = run((w, state), ks)
        done += m
        progress(f"train step {done}/{steps}: loss {float(values[-1]):.6g}")
    target.model = to_model(w)


def train_target(name: str, spec: dict, *, key: jax.Array, progress=log.info) -> Target:
    """Stage A: make the teacher and the data, train the student, measure w*."""
    keys = _split_keys(key)
    teacher = _teacher(spec, keys["teacher"])
    x, y = make_data(spec, teacher, keys["data"])
    if spec["family"] == "dln" or spec.get("init") == "teacher":
        student = teacher
    else:
        student = build_model(spec, key=keys["init"])
    target = Target(name=name, spec=spec, model=student, x=x, y=y)
    progress(
        f"target {name}: family {spec['family']}, n = {target.n}, "
        f"d = {target.flat()[0].size}"
    )
    fit(target, key=keys["train"], progress=progress)
    describe(target)
    return target


def describe(target: Target) -> None:
    """Fill in ``target.meta``: n, d, L0, ‖∇L_n(w*)‖, Hessian spectrum and truth."""
    spec = target.spec
    w, _ = target.flat()
    x, y = jnp.asarray(target.x), jnp.asarray(target.y)
    # Affine families are described through the data's moments, as the posterior
    # evaluates them: the same L0 as every run's L_n, and a Hessian whose cost does not
    # grow with n (through the per-sample loss, d = 520 at n = 10^5 asked for 44 GB).
    moment_loss = target.moment_loss_fn()
    if moment_loss is None:
        loss, data = target.loss_fn(), (x, y)
    else:
        loss, data = moment_loss, (data_moments(x, y),)
    L0, grad = jax.jit(jax.value_and_grad(loss))(w, *data)
    d = int(w.size)
    meta = {
        "format_version": FORMAT_VERSION,
        "name": target.name,
        "spec": spec,
        "family": spec["family"],
        "n": target.n,
        "d": d,
        "L0": float(L0),
        "grad_norm": float(jnp.linalg.norm(grad)),
        "true_lambda": None,
        "truth_kind": None,
    }
    if spec["family"] == "dln":
        meta["true_lambda"] = float(aoyagi.dln_lambda(spec["widths"], spec["rank"]))
        meta["truth_kind"] = "aoyagi"
    if d <= HESSIAN_MAX_D:
        hess = jax.jit(jax.hessian(loss))(w, *data)
        eigs, vecs = np.linalg.eigh(np.asarray(hess, dtype=np.float64))
        target.hessian_eigs = (
            np.clip(eigs, 0.0, None) if spec["family"] == "linreg" else eigs
        )
        target.grad_eig = vecs.T @ np.asarray(grad, dtype=np.float64)
        meta["hessian_min_eig"] = float(eigs[0])
        meta["hessian_max_eig"] = float(eigs[-1])
    if spec["family"] == "linreg":
        meta["truth_kind"] = "exact"
    target.meta = meta


def save_target(target: Target, out_dir: str | os.PathLike) -> None:
    """Write the artifact files, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "params.eqx") as tmp:
        eqx.tree_serialise_leaves(tmp, target.model)
    arrays = {"x": target.x, "y": target.y}
    if target.hessian_eigs is not None:
        arrays["hessian_eigs"] = target.hessian_eigs
        arrays["grad_eig"] = target.grad_eig
    with atomic_path(out / "data.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    with atomic_path(out / "meta.json") as tmp:
        Path(tmp).write_text(json.dumps(target.meta, indent=2, sort_keys=True) + "\n")


def load_target(path: str | os.PathLike) -> Target:
    """Rebuild a target from its artifact directory.

    Raises:
        FileNotFoundError: a file of the artifact is missing (the message names it).
        ValueError: a file is corrupt or does not match the skeleton in meta.json.
    """
    path = Path(path)
    for fname in ("meta.json", "data.npz", "params.eqx"):
        if not (path / fname).is_file():
            raise FileNotFoundError(f"target artifact file missing: {path / fname}")
    try:
        meta = json.loads((path / "meta.json").read_text())
        spec = meta["spec"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"corrupt target metadata {path / 'meta.json'}: {err}"
        ) from err
    if spec.get("dtype", "float64") == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{path / 'meta.json'} is a float64 target; enable jax_enable_x64 first"
        )
    skeleton = build_model(spec, key=jax.random.key(0, impl="threefry2x32"))
    try:
        model = eqx.tree_deserialise_leaves(path / "params.eqx", skeleton)
    except Exception as err:  # equinox raises several types for a mismatched file
        raise ValueError(
            f"{path / 'params.eqx'} does not match the model skeleton described in "
            f"{path / 'meta.json'} (family {spec.get('family')}): {err}"
        ) from err
    try:
        with np.load(path / "data.npz") as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:
        raise ValueError(f"corrupt target data {path / 'data.npz'}: {err}") from err
    target = Target(
        name=meta["name"],
        spec=spec,
        model=model,
        x=arrays["x"],
        y=arrays["y"],
        meta=meta,
        hessian_eigs=arrays.get("hessian_eigs"),
        grad_eig=arrays.get("grad_eig"),
    )
    d = int(target.flat()[0].size)
    if d != meta["d"] or target.n != meta["n"]:
        raise ValueError(
            f"{path}: meta.json says n = {meta['n']}, d = {meta['d']} but the files "
            f"hold n = {target.n}, d = {d}"
        )
    return target
