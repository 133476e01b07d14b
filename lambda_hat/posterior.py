"""The localized, tempered posterior π(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²)."""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from lambda_hat.targets import data_moments

LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def default_beta(n: int) -> float:
    """β = 1/log n, the default inverse temperature."""
    return 1.0 / math.log(n)


class Posterior(eqx.Module):
    """The localized tempered posterior of a target, on flat parameters w ∈ R^d.

    Attributes:
        w_star: the trained parameters w*, shape (d,).
        x, y: the n training samples, shapes (n, d_in) and (n, d_out).
        beta: the inverse temperature β.
        gamma: the localization strength γ.
        L0: L_n(w*).
        loss: L(w, x, y), the mean negative log-likelihood of a batch.
        moments: for targets whose prediction is affine in x, the data's second
            moments; ``full_loss`` then evaluates L_n from them with
            ``moment_loss`` (same value, far fewer operations when n ≫ d_in).
        moment_loss: L_n(w) from ``moments``, or None.
    """

    w_star: jax.Array
    x: jax.Array
    y: jax.Array
    beta: float = eqx.field(static=True)
    gamma: float = eqx.field(static=True)
    L0: float = eqx.field(static=True)
    loss: LossFn = eqx.field(static=True)
    moments: tuple[jax.Array, ...] | None = None
    moment_loss: Callable | None = eqx.field(static=True, default=None)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.w_star.shape[0]

    @property
    def nbeta(self) -> float:
        return self.n * self.beta

    def full_loss(self, w: jax.Array) -> jax.Array:
        """L_n(w) over all n samples."""
        if self.moment_loss is not None:
            return self.moment_loss(w, self.moments)
        return self.loss(w, self.x, self.y)

    def batch(self, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The samples at indices ``idx``."""
        return self.x[idx], self.y[idx]

    def potential(self, w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        """nβ·L_b(w) + (γ/2)‖w − w*‖², an unbiased minibatch estimate of −log π(w)."""
        diff = w - self.w_star
        return self.nbeta * self.loss(w, x, y) + 0.5 * self.gamma * jnp.dot(diff, diff)

    def logdensity(self, w: jax.Array) -> jax.Array:
        """log π(w) up to a constant, full batch."""
        diff = w - self.w_star
        return -self.nbeta * self.full_loss(w) - 0.5 * self.gamma * jnp.dot(diff, diff)

    def llc(self, expected_loss: jax.Array) -> jax.Array:
        """λ̂ = nβ(E[L_n] − L0) from an estimate of E[L_n]."""
        return self.nbeta * (expected_loss - self.L0)

    def sample_batch_idx(self, key: jax.Array, batch_size: int) -> jax.Array:
        """Indices of a minibatch drawn without replacement."""
        if batch_size >= self.n:
            return jnp.arange(self.n)
        return jax.random.choice(key, self.n, (batch_size,), replace=False)


def make_posterior(target, *, beta: float | None, gamma: float) -> Posterior:
    """The posterior of a loaded :class:`~lambda_hat.targets.Target`."""
    w_star, _ = target.flat()
    n = target.n
    beta = default_beta(n) if beta is None else float(beta)
    x, y = jnp.asarray(target.x), jnp.asarray(target.y)
    moment_loss = target.moment_loss_fn()
    return Posterior(
        w_star=w_star,
        x=x,
        y=y,
        beta=beta,
        gamma=float(gamma),
        L0=float(target.meta["L0"]),
        loss=target.loss_fn(),
        moments=None if moment_loss is None else data_moments(x, y),
        moment_loss=moment_loss,
    )
