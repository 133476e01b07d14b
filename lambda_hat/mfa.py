"""Variational inference with a mixture of factor analyzers (MFA).

q(w) = Σ_m π_m N(w; μ_m, Σ_m), with Σ_m = D_m + K_m K_mᵀ: D_m a positive diagonal
(floored) and K_m a d×r factor. The mixture weights π_m are a softmax of learned logits.
Sampling and the log-density cost O(M·d·r) per sample: the inverse and determinant of
Σ_m go through Woodbury's identity and the matrix determinant lemma with the r×r
Cholesky factor of I + K_mᵀD_m⁻¹K_m, and no d×d matrix is ever formed.

q lives in preconditioned coordinates z, w = w* + s⊙z, where s is a fixed diagonal
scale: with preconditioning on, sᵢ = (nβ·Fᵢᵢ + γ)^(−1/2) from the gradient second
moments F at w* (so π is roughly unit-scaled along the diagonal), else sᵢ = 1. The
change of coordinates is folded into ``draw``, ``log_q`` and ``sample``, which speak of
w, so the posterior and its localizer are evaluated in the original coordinates.

The fit is :func:`lambda_hat.vi.run_vi`: one reparameterized sample per component
(``samples_per_component`` of them), weighted by the mixture weights, so the ELBO's sum
over components is exact and the weights get gradients without a score function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from lambda_hat.posterior import Posterior
from lambda_hat.result import RunOutput
from lambda_hat.vi import gradient_moments, run_vi, standard_normal

LOG_2PI = math.log(2 * math.pi)
# The factors start this small against the diagonal, which breaks the symmetry
# between components without adding much variance.
FACTOR_INIT = 0.1


@dataclass(frozen=True)
class MFASettings:
    """The MFA family's settings (see config/README.md).

    Attributes:
        n_components: M, the number of mixture components.
        rank: r, the columns of each component's factor K_m (clipped to d).
        samples_per_component: reparameterized samples per component and step.
        init_scale: each component's initial standard deviation along every
            coordinate, in units of the preconditioned coordinates.
        diag_floor: the least value of each D_m entry (preconditioned units).
        precondition: scale coordinates by the gradient second moments at w*.
    """

    n_components: int
    rank: int
    samples_per_component: int
    init_scale: float
    diag_floor: float
    precondition: bool

    @classmethod
    def from_dict(cls, s: dict) -> MFASettings:
        return cls(**{k: s[k] for k in cls.__dataclass_fields__})


class MFAParams(eqx.Module):
    """One fit's parameters, in preconditioned coordinates.

    Attributes:
        mean: component means μ_m, shape (M, d).
        log_diag: log(D_m − floor), shape (M, d).
        factor: K_m, shape (M, d, r).
        logits: mixture logits, shape (M,).
    """

    mean: jax.Array
    log_diag: jax.Array
    factor: jax.Array
    logits: jax.Array


def component_logpdf(
    z: jax.Array, mean: jax.Array, diag: jax.Array, factor: jax.Array
) -> jax.Array:
    """log N(z; mean, diag(diag) + factor factorᵀ) at each row of z.

    Args:
        z: points, shape (S, d).
        mean: shape (d,).
        diag: the positive diagonal D, shape (d,).
        factor: K, shape (d, r).

    Returns:
        shape (S,). Costs O(S·d·r + d·r²).
    """
    d, r = factor.shape
    u = z - mean
    dinv = 1.0 / diag
    quad = jnp.sum(u * u * dinv, axis=-1)
    logdet = jnp.sum(jnp.log(diag))
    if r:
        # Woodbury: Σ⁻¹ = D⁻¹ − D⁻¹K C⁻¹ KᵀD⁻¹ with C = I + KᵀD⁻¹K = LLᵀ, and
        # det Σ = det D · det C.
        scaled = factor * dinv[:, None]
        chol = jnp.linalg.cholesky(jnp.eye(r, dtype=z.dtype) + factor.T @ scaled)
        proj = solve_triangular(chol, (u @ scaled).T, lower=True)
        quad = quad - jnp.sum(proj * proj, axis=0)
        logdet = logdet + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (d * LOG_2PI + logdet + quad)


class MixtureOfFactorAnalyzers(eqx.Module):
    """The MFA variational family (see the module docstring).

    Attributes:
        center: w*, shape (d,).
        scale: s, the preconditioning scale, shape (d,).
        n_components: M.
        rank: r.
        samples_per_component: reparameterized samples per component in ``draw``.
        init_scale: initial standard deviation (preconditioned units).
        diag_floor: least value of D's entries (preconditioned units).
        setup_grad_evals: gradient evaluations spent on the preconditioner.
    """

    center: jax.Array
    scale: jax.Array
    n_components: int = eqx.field(static=True)
    rank: int = eqx.field(static=True)
    samples_per_component: int = eqx.field(static=True, default=1)
    init_scale: float = eqx.field(static=True, default=0.5)
    diag_floor: float = eqx.field(static=True, default=1e-8)
    setup_grad_evals: float = eqx.field(static=True, default=0.0)

    @classmethod
    def create(
        cls,
        posterior: Posterior,
        *,
        n_components: int,
        rank: int,
        samples_per_component: int = 1,
        init_scale: float = 0.5,
        diag_floor: float = 1e-8,
        precondition: bool = True,
    ) -> MixtureOfFactorAnalyzers:
        """The family for ``posterior``, its preconditioner computed at w*."""
        if n_components < 1 or rank < 0 or samples_per_component < 1:
            raise ValueError(
                f"need n_components ≥ 1, rank ≥ 0, samples_per_component ≥ 1; got "
                f"{n_components}, {rank}, {samples_per_component}"
            )
        if not (init_scale > 0 and diag_floor >= 0):
            raise ValueError(
                f"need init_scale > 0 and diag_floor ≥ 0; got {init_scale}, "
                f"{diag_floor}"
            )
        w_star = posterior.w_star
        scale = jnp.ones_like(w_star)
        setup = 0.0
        if precondition:
            _, second = gradient_moments(posterior)
            precision = posterior.nbeta * second + posterior.gamma
            # A direction with neither curvature nor localizer keeps unit scale.
            scale = jnp.where(precision > 0, 1.0 / jnp.sqrt(precision), 1.0)
            setup = 1.0
        return cls(
            center=w_star,
            scale=scale.astype(w_star.dtype),
            n_components=n_components,
            rank=min(rank, posterior.d),
            samples_per_component=samples_per_component,
            init_scale=init_scale,
            diag_floor=diag_floor,
            setup_grad_evals=setup,
        )

    @property
    def d(self) -> int:
        return self.center.shape[0]

    def init(self, posterior: Posterior, key: jax.Array) -> MFAParams:
        """Every component at w*, with standard deviation ``init_scale``; the
        factors small and random; equal weights."""
        M, d, r = self.n_components, self.d, self.rank
        dtype = self.center.dtype
        var = self.init_scale**2
        factor = standard_normal(key, (M, d, r), dtype)
        return MFAParams(
            mean=jnp.zeros((M, d), dtype),
            log_diag=jnp.full((M, d), math.log(var), dtype),
            factor=factor * (FACTOR_INIT * self.init_scale / math.sqrt(max(r, 1))),
            logits=jnp.zeros((M,), dtype),
        )

    def diag(self, params: MFAParams) -> jax.Array:
        """D_m, shape (M, d)."""
        return self.diag_floor + jnp.exp(params.log_diag)

    def mixture_weights(self, params: MFAParams) -> jax.Array:
        """π_m, shape (M,)."""
        return jax.nn.softmax(params.logits)

    def _to_w(self, z: jax.Array) -> jax.Array:
        return self.center + self.scale * z

    def _component_draws(
        self, params: MFAParams, comps: jax.Array, e_diag: jax.Array, e_fac: jax.Array
    ) -> jax.Array:
        """z = μ_c + D_c^½ e_diag + K_c e_fac for component indices ``comps``."""
        diag = self.diag(params)
        return (
            params.mean[comps]
            + jnp.sqrt(diag[comps]) * e_diag
            + jnp.einsum("sdr,sr->sd", params.factor[comps], e_fac)
        )

    def draw(self, params: MFAParams, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``samples_per_component`` reparameterized samples of each component.

        Returns:
            w, shape (M·k, d), and weights π_m/k, shape (M·k,).
        """
        M, k = self.n_components, self.samples_per_component
        comps = jnp.repeat(jnp.arange(M), k)
        e = standard_normal(key, (M * k, self.d + self.rank), self.center.dtype)
        z = self._component_draws(params, comps, e[:, : self.d], e[:, self.d :])
        return self._to_w(z), self.mixture_weights(params)[comps] / k

    def sample(self, params: MFAParams, key: jax.Array, num: int) -> jax.Array:
        """``num`` samples of q, shape (num, d)."""
        k_comp, k_normal = jax.random.split(key)
        # The component by inverting the mixture's CDF at a uniform draw (a flat
        # draw compiles faster than jax.random.categorical's Gumbel matrix).
        u = jax.random.uniform(k_comp, (num,), self.center.dtype)
        cdf = jnp.cumsum(self.mixture_weights(params))
        comps = jnp.minimum(jnp.searchsorted(cdf, u), self.n_components - 1)
        e = standard_normal(k_normal, (num, self.d + self.rank), self.center.dtype)
        return self._to_w(
            self._component_draws(params, comps, e[:, : self.d], e[:, self.d :])
        )

    def log_q(self, params: MFAParams, w: jax.Array) -> jax.Array:
        """log q(w) in the original coordinates, w of shape (S, d) -> (S,)."""
        z = (w - self.center) / self.scale
        per_comp = jax.vmap(component_logpdf, in_axes=(None, 0, 0, 0))(
            z, params.mean, self.diag(params), params.factor
        )
        log_weights = jax.nn.log_softmax(params.logits)
        log_jac = jnp.sum(jnp.log(self.scale))
        return jax.nn.logsumexp(per_comp + log_weights[:, None], axis=0) - log_jac

    def quadratic_expectation(
        self,
        params: MFAParams,
        w_star: jax.Array,
        diag_h: jax.Array,
        grad: jax.Array,
    ) -> jax.Array:
        """E_q[gradᵀu + ½ Σᵢ diag_hᵢ uᵢ²] with u = w − w*, exactly.

        Each component contributes its mean's value plus ½ Σᵢ hᵢ·Var(wᵢ), where
        Var(wᵢ) = sᵢ²(D_m,ᵢ + Σ_j K_m,ᵢⱼ²) holds both the diagonal and the factor.
        """
        shift = self.center + self.scale * params.mean - w_star
        var = self.scale**2 * (self.diag(params) + jnp.sum(params.factor**2, axis=-1))
        per_comp = shift @ grad + 0.5 * (shift * shift + var) @ diag_h
        return jnp.sum(self.mixture_weights(params) * per_comp)


def run(
    posterior: Posterior,
    keys: jax.Array,
    settings: dict,
    *,
    progress: Callable[[str], None],
) -> RunOutput:
    """Fit ``len(keys)`` independent MFAs to the posterior and estimate λ̂.

    Args:
        posterior: the localized tempered posterior.
        keys: typed keys, one per fit, shape (chains,).
        settings: MFA's and VI's settings (see :class:`MFASettings` and
            :class:`lambda_hat.vi.VISettings`).
        progress: where progress lines go.
    """
    s = MFASettings.from_dict(settings)
    family = MixtureOfFactorAnalyzers.create(
        posterior,
        n_components=s.n_components,
        rank=s.rank,
        samples_per_component=s.samples_per_component,
        init_scale=s.init_scale,
        diag_floor=s.diag_floor,
        precondition=s.precondition,
    )
    if family.rank < s.rank:
        progress(f"mfa: rank {s.rank} clipped to d = {posterior.d}")
    return run_vi(
        posterior,
        keys,
        family,
        settings,
        progress=progress,
        label="mfa",
        used={"rank": family.rank},
    )
