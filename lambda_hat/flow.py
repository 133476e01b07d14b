"""Normalizing-flow variational inference on a curvature subspace, plus thin noise.

The family draws

    w = w* + D^{1/2}·(U·T_φ(z) + σ⊥·P⊥ε),   z ~ N(0, I_k),  ε ~ N(0, I_d),

where U (d×k, orthonormal columns) spans k directions chosen from the Hessian of L_n at
w* (Lanczos on Hessian-vector products) or at random, T_φ is a flowjax flow on R^k (a
lower-triangular affine map, fixed curvature scales, then rational-quadratic spline
coupling layers, all starting at the identity), D^{1/2} a learned positive diagonal, σ⊥
a learned noise scale and P⊥ = I − UUᵀ, applied as v − U(Uᵀv) and never formed. With
v = D^{-1/2}(w − w*) the log-density is exact and costs O(d·k):

    log q(w) = log q_T(Uᵀv) + log N_{d−k}(P⊥v; 0, σ⊥²) − Σᵢ log D_i^{1/2},

with log q_T from the flow's inverse. The flow template is built once on the host; only
its arrays are parameters, so chains run under ``vmap`` with nothing but arrays crossing
the boundary. No d×d array is formed anywhere: memory is O(d·k + k²) per chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flowjax.bijections import (
    Chain,
    RationalQuadraticSpline,
    TriangularAffine,
)
from flowjax.distributions import StandardNormal
from flowjax.flows import coupling_flow
from paramax import Parameterize

from lambda_hat import keys as keys_lib
from lambda_hat import vi
from lambda_hat.posterior import Posterior
from lambda_hat.result import RunOutput

BASES = ("bottom", "top", "random")
# The basis and the flow's random features are properties of the posterior, shared by
# every chain, so they come from fixed keys: a chain's fit never depends on which other
# chains run beside it.
BASIS_SEED = 0x6C616E63
TEMPLATE_SEED = 0x666C6F77
# Each Hessian-vector product is counted as two gradient evaluations over n samples.
HVP_GRAD_EVALS = 2.0
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class FlowSettings:
    """The family's settings (see config/README.md).

    Attributes:
        k: the most latent dimensions (k ≥ 1); a k above d, or null in the config,
            means k = d.
        basis: which k directions U spans: ``bottom`` (smallest Hessian eigenvalues),
            ``top`` (largest) or ``random`` (a random orthonormal basis).
        lanczos_steps: Lanczos iterations for the curvature basis; 0 means
            min(d, 2k + 10).
        flow_layers: rational-quadratic spline coupling layers.
        knots: inner knots of each spline.
        interval: the splines act on [−interval, interval] (units of w) and are the
            identity outside.
        nn_width: hidden width of each coupling conditioner.
        nn_depth: hidden layers of each coupling conditioner.
        n_samples: reparameterized samples per ELBO step.
        scale_floor: floor of the diagonal D^{1/2}.
        noise_floor: floor of the complement's noise scale σ⊥.
    """

    k: int | None
    basis: str
    lanczos_steps: int
    flow_layers: int
    knots: int
    interval: float
    nn_width: int
    nn_depth: int
    n_samples: int
    scale_floor: float
    noise_floor: float

    @classmethod
    def from_dict(cls, s: dict) -> FlowSettings:
        return cls(**{k: s[k] for k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------- basis


def hessian_vector_product(posterior: Posterior) -> Callable[[jax.Array], jax.Array]:
    """v ↦ ∇²L_n(w*)·v over all n samples (forward over reverse mode); shapes (d,)."""
    grad = jax.grad(posterior.full_loss)

    def hvp(v: jax.Array) -> jax.Array:
        return jax.jvp(grad, (posterior.w_star,), (v,))[1]

    return hvp


def lanczos(
    matvec: Callable[[jax.Array], jax.Array],
    d: int,
    steps: int,
    *,
    key: jax.Array,
    dtype: Any,
) -> tuple[jax.Array, jax.Array]:
    """Ritz pairs of a symmetric d×d operator from ``steps`` Lanczos iterations.

    Every new vector is orthogonalized twice against all previous ones (full
    reorthogonalization). When the Krylov space becomes invariant (the residual is tiny,
    for instance on a degenerate or null eigenspace) the iteration restarts from a
    fresh random vector orthogonal to the basis so far, so ``steps = d`` always yields a
    complete orthonormal basis.

    Args:
        matvec: v ↦ A·v, shapes (d,) → (d,).
        d: the dimension.
        steps: iterations m, 1 ≤ m ≤ d.
        key: typed key for the start and restart vectors.
        dtype: float dtype of the vectors.

    Returns:
        Ritz values (m,) in ascending order and Ritz vectors (d, m) with orthonormal
        columns.
    """
    eps = float(jnp.finfo(dtype).eps)

    def random_unit(i, basis):
        r = jax.random.normal(jax.random.fold_in(key, i), (d,), dtype)
        for _ in range(2):
            r = r - basis.T @ (basis @ r)
        return r / jnp.linalg.norm(r)

    def body(j, state):
        basis, alpha, beta, norm = state
        q = basis[j]
        r = matvec(q)
        a = jnp.dot(q, r)
        for _ in range(2):
            r = r - basis.T @ (basis @ r)
        b = jnp.linalg.norm(r)
        norm = jnp.maximum(norm, jnp.abs(a) + b)
        # A residual at rounding level means an invariant subspace: restart.
        restart = b <= jnp.sqrt(eps) * jnp.maximum(norm, eps)
        nxt = jnp.where(
            restart, random_unit(j + 1, basis), r / jnp.where(restart, 1, b)
        )
        basis = jnp.where(j + 1 < steps, basis.at[j + 1].set(nxt), basis)
        alpha = alpha.at[j].set(a)
        beta = beta.at[j].set(jnp.where(restart, 0.0, b))
        return basis, alpha, beta, norm

    basis = jnp.zeros((steps, d), dtype)
    basis = basis.at[0].set(random_unit(0, basis))
    state = (
        basis,
        jnp.zeros(steps, dtype),
        jnp.zeros(steps, dtype),
        jnp.zeros((), dtype),
    )
    basis, alpha, beta, _ = jax.lax.fori_loop(0, steps, body, state)

    tridiag = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, s = jnp.linalg.eigh(tridiag)
    return theta, basis.T @ s


@dataclass(frozen=True)
class Basis:
    """The modelled directions and what the curvature says about them.

    Attributes:
        U: orthonormal columns, shape (d, k).
        curvature: ∇²L_n(w*) along U's columns (Ritz values, or Rayleigh quotients
            of a random basis), shape (k,).
        complement_curvature: the largest Ritz value among the directions left out, a
            bound used to start σ⊥ narrow (NaN when k = d).
        hvps: Hessian-vector products spent.
    """

    U: jax.Array
    curvature: np.ndarray
    complement_curvature: float
    hvps: int


def make_basis(posterior: Posterior, *, k: int, basis: str, steps: int) -> Basis:
    """U and its curvature for ``basis`` in ``BASES`` (see :class:`FlowSettings`)."""
    d, dtype = posterior.d, posterior.w_star.dtype
    key = jax.random.key(BASIS_SEED, impl="threefry2x32")
    if basis == "random":
        U, _ = jnp.linalg.qr(jax.random.normal(key, (d, k), dtype))
        # The curvature along each random direction (its Rayleigh quotient) sets
        # the starting widths.
        hvp = jax.jit(
            jax.vmap(hessian_vector_product(posterior), in_axes=1, out_axes=1)
        )
        curv = np.asarray(jnp.sum(U * hvp(U), axis=0))
        return Basis(U, np.maximum(curv, 0.0), float(curv.mean()), k)
    if basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; expected one of {BASES}")

    m = min(d, steps if steps > 0 else 2 * k + 10)
    m = max(m, k)
    run = jax.jit(
        lambda p: lanczos(hessian_vector_product(p), d, m, key=key, dtype=dtype)
    )
    theta, vecs = run(posterior)
    theta = np.asarray(theta)
    # Ascending order: the bottom end is the first k Ritz pairs, the top end the last.
    pick = np.arange(k) if basis == "bottom" else np.arange(m - k, m)
    rest = np.setdiff1d(np.arange(m), pick)
    rest_curv = float(theta[rest].max()) if rest.size else math.nan
    if basis == "bottom" and k < d:
        # Directions Lanczos did not see are bounded by the largest Ritz value.
        rest_curv = float(theta.max())
    return Basis(vecs[:, pick], np.maximum(theta[pick], 0.0), rest_curv, m)


# -------------------------------------------------------------------------- family


def _lower_with_exp_diagonal(arr: jax.Array) -> jax.Array:
    """The lower triangle of ``arr`` with its diagonal exponentiated; (k, k)."""
    return jnp.fill_diagonal(jnp.tril(arr), jnp.exp(jnp.diag(arr)), inplace=False)


class FlowFamily:
    """The variational family; holds only constants (U, w*, the flow's structure).

    T_φ(z) = splines(s0 ⊙ affine(z)): the affine map works in units of fixed scales s0
    from the curvature (the Gaussian widths), so its parameters and Adam's steps mean
    the same whatever nβ is; the splines then act in the units of w. Parameters are a
    dict of arrays:

    - ``flow``: ``{"affine": ..., "splines": ...}``, the arrays of T_φ's two flowjax
      parts (the affine map's diagonal is exp of its parameters),
    - ``log_scale`` (d,): D^{1/2} = scale_floor + exp(log_scale),
    - ``log_noise`` (): σ⊥ = noise_scale0·(noise_floor + exp(log_noise)).
    """

    def __init__(self, posterior: Posterior, settings: FlowSettings, basis: Basis):
        d, k = posterior.d, basis.U.shape[1]
        self.d, self.k = d, k
        self.dtype = posterior.w_star.dtype
        self.w_star = posterior.w_star
        self.U = basis.U.astype(self.dtype)
        self.n_samples = settings.n_samples
        self.scale_floor = settings.scale_floor
        self.noise_floor = settings.noise_floor
        self.setup_grad_evals = HVP_GRAD_EVALS * basis.hvps

        # Start narrow: the Gaussian width 1/sqrt(nβh + γ), with the curvature h
        # floored at the mean Ritz value. A flat direction of a singular model is
        # only flat to second order, and a q that starts as wide as the localizer
        # allows meets higher-order walls with enormous gradients.
        curv = np.asarray(basis.curvature, dtype=np.float64)
        floor = float(curv.mean())

        def width(h):
            return 1.0 / np.sqrt(
                posterior.nbeta * np.maximum(h, floor) + posterior.gamma
            )

        self.latent_scale0 = jnp.asarray(width(curv), self.dtype)
        rest = basis.complement_curvature
        self.noise_scale0 = float(width(rest if math.isfinite(rest) else floor))
        self.log_latent_det0 = float(jnp.sum(jnp.log(self.latent_scale0)))

        self.flow_arrays, self.flow_static = eqx.partition(
            self._template(settings), eqx.is_inexact_array
        )

    def _template(self, s: FlowSettings) -> dict:
        """T_φ's two flowjax parts, each to be partitioned into arrays and structure.

        ``affine``: a lower-triangular affine map of z (exp on its diagonal), starting
        at the identity. ``splines``: rational-quadratic spline coupling layers acting
        on s0 ⊙ affine(z), in the units of w, starting at the identity (None without
        layers). The splines come after the scaling so that a coupling layer can move
        a stiff coordinate by an amount set by the flat ones (the curved valleys of a
        singular loss) on one common scale.
        """
        k, dtype = self.k, self.dtype
        affine = TriangularAffine(jnp.zeros(k), jnp.eye(k))
        affine = eqx.tree_at(
            lambda a: a.triangular,
            affine,
            replace=Parameterize(_lower_with_exp_diagonal, jnp.zeros((k, k))),
        )
        splines = None
        if s.flow_layers > 0:
            flow = coupling_flow(
                jax.random.key(TEMPLATE_SEED, impl="threefry2x32"),
                base_dist=StandardNormal((k,)),
                transformer=RationalQuadraticSpline(knots=s.knots, interval=s.interval),
                flow_layers=s.flow_layers,
                nn_width=s.nn_width,
                nn_depth=s.nn_depth,
                invert=False,
            )
            # A zero output layer makes every spline's parameters zero, which flowjax
            # maps to the identity spline.
            splines = eqx.tree_at(
                lambda b: (_output_layer(b).weight, _output_layer(b).bias),
                flow.bijection,
                replace_fn=jnp.zeros_like,
            )
        parts = {"affine": affine, "splines": splines}
        return jax.tree.map(
            lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, parts
        )

    # The family interface used by lambda_hat.vi ---------------------------------

    def init(self, posterior: Posterior, key: jax.Array) -> dict:
        """Starting parameters: T_φ the identity, D = I, σ⊥ from the curvature.

        ``key`` redraws the conditioners' hidden weights, so each fit starts from its
        own random features; the flow is the identity map at the start either way.
        """
        del posterior
        return {
            "flow": _redraw_hidden(self.flow_arrays, key),
            "log_scale": jnp.full(self.d, math.log1p(-self.scale_floor), self.dtype),
            "log_noise": jnp.asarray(0.0, self.dtype),
        }

    def draw(self, params: dict, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``n_samples`` reparameterized draws w (S, d) and their weights 1/S (S,)."""
        w = self.sample(params, key, self.n_samples)
        return w, jnp.full(self.n_samples, 1.0 / self.n_samples, self.dtype)

    def sample(self, params: dict, key: jax.Array, num: int) -> jax.Array:
        """``num`` reparameterized draws of q, shape (num, d)."""
        k_latent, k_noise = jax.random.split(key)
        z = vi.standard_normal(k_latent, (num, self.k), self.dtype)
        v = self.latent(params, z) @ self.U.T
        if self.k < self.d:
            eps = vi.standard_normal(k_noise, (num, self.d), self.dtype)
            v = v + self._noise(params) * (eps - (eps @ self.U) @ self.U.T)
        return self.w_star + self._scale(params) * v

    def latent(self, params: dict, z: jax.Array) -> jax.Array:
        """u = T_φ(z) for z of shape (S, k); returns (S, k)."""
        flow = self._flow(params)
        u = self.latent_scale0 * jax.vmap(flow["affine"].transform)(z)
        if flow["splines"] is not None:
            u = jax.vmap(flow["splines"].transform)(u)
        return u

    def log_q(self, params: dict, w: jax.Array) -> jax.Array:
        """log q(w) for w of shape (S, d), exact, in O(S·d·k); returns (S,)."""
        scale = self._scale(params)
        v = (w - self.w_star) / scale
        u = v @ self.U
        log_q = self._log_q_latent(params, u)
        if self.k < self.d:
            sigma = self._noise(params)
            perp = v - u @ self.U.T
            m = self.d - self.k
            log_q = (
                log_q
                - 0.5 * jnp.sum(perp**2, axis=-1) / sigma**2
                - m * (jnp.log(sigma) + 0.5 * LOG_2PI)
            )
        return log_q - jnp.sum(jnp.log(scale))

    def _log_q_latent(self, params: dict, u: jax.Array) -> jax.Array:
        """log q_T(u), the latent density, for u of shape (S, k); returns (S,)."""
        flow = self._flow(params)
        log_det = jnp.zeros(u.shape[0], self.dtype)
        if flow["splines"] is not None:
            u, log_det = jax.vmap(flow["splines"].inverse_and_log_det)(u)
        z, log_det_affine = jax.vmap(flow["affine"].inverse_and_log_det)(
            u / self.latent_scale0
        )
        return (
            -0.5 * jnp.sum(z**2, axis=-1)
            - 0.5 * self.k * LOG_2PI
            + log_det
            + log_det_affine
            - self.log_latent_det0
        )

    # Helpers -----------------------------------------------------------------------

    def _flow(self, params: dict):
        return eqx.combine(params["flow"], self.flow_static)

    def _scale(self, params: dict) -> jax.Array:
        """D^{1/2}, shape (d,)."""
        return self.scale_floor + jnp.exp(params["log_scale"])

    def _noise(self, params: dict) -> jax.Array:
        """σ⊥ (absolute), a scalar."""
        return self.noise_scale0 * (self.noise_floor + jnp.exp(params["log_noise"]))


def _output_layer(bijection):
    """The output layer of the stacked coupling conditioners of a flowjax flow."""
    layer = bijection.bijection
    if isinstance(layer, Chain):
        layer = layer.bijections[0]
    return layer.conditioner.layers[-1]


def _hidden_layers(splines) -> list:
    """The conditioner layers before the output layer of the coupling layers."""
    layer = splines.bijection
    if isinstance(layer, Chain):
        layer = layer.bijections[0]
    return list(layer.conditioner.layers[:-1])


def _redraw_hidden(flow_arrays, key: jax.Array):
    """The flow arrays with the conditioners' hidden layers redrawn from ``key``.

    Weights and biases are uniform on ±1/sqrt(fan-in), as equinox draws them.
    """
    if flow_arrays["splines"] is None:
        return flow_arrays
    fresh = []
    for i, lin in enumerate(_hidden_layers(flow_arrays["splines"])):
        k_weight, k_bias = jax.random.split(jax.random.fold_in(key, i))
        lim = 1.0 / math.sqrt(max(lin.weight.shape[-1], 1))
        for k, x in ((k_weight, lin.weight), (k_bias, lin.bias)):
            flat = jax.random.uniform(k, (x.size,), x.dtype, -lim, lim)
            fresh.append(flat.reshape(x.shape))

    def where(f):
        layers = _hidden_layers(f["splines"])
        return [x for lin in layers for x in (lin.weight, lin.bias)]

    return eqx.tree_at(where, flow_arrays, fresh)


# ----------------------------------------------------------------------------- run


def run(
    posterior: Posterior,
    keys: Any,
    settings: dict,
    *,
    progress: Callable[[str], None],
) -> RunOutput:
    """Fit one flow per key under ``vmap`` and estimate λ̂ from each.

    Args:
        posterior: the localized tempered posterior.
        keys: typed threefry keys, one per fit, shape (chains,); legacy uint32 key
            data of shape (chains, 2) is wrapped here, on the host.
        settings: the flow's settings (:class:`FlowSettings`) and the shared VI
            settings (:class:`~lambda_hat.vi.VISettings`).
        progress: where progress lines go.

    Raises:
        TypeError: if ``keys`` is neither.
        ValueError: if a setting cannot work for this posterior.
    """
    keys = keys_lib.as_typed_key(keys)
    if keys.ndim != 1:
        raise TypeError(
            f"expected one key per fit, an array of shape (chains,), got shape "
            f"{keys.shape}"
        )
    s = FlowSettings.from_dict(settings)
    # k caps the latent dimension, so one method can run on targets of any size.
    d = posterior.d
    k = d if s.k is None else min(s.k, d)
    if k < 1:
        raise ValueError(f"flow k = {k} must be at least 1")

    basis = make_basis(posterior, k=k, basis=s.basis, steps=s.lanczos_steps)
    family = FlowFamily(posterior, s, basis)
    progress(
        f"flow: k = {k} of d = {d} directions ({s.basis}"
        + (f", {basis.hvps} Lanczos steps" if basis.hvps else "")
        + f"), {s.flow_layers} spline coupling layers"
    )
    used = {"k": k, "lanczos_steps": basis.hvps if s.basis != "random" else 0}
    return vi.run_vi(
        posterior, keys, family, settings, progress=progress, label="flow", used=used
    )
