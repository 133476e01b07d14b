"""Variational inference of the localized tempered posterior, for any family q.

λ̂ comes from a fitted q ≈ π: nβ(E_q[L_n] − L0). The fit maximizes

    ELBO(q) = E_q[−nβ·L_n(w) − (γ/2)‖w − w*‖²] + H(q)  (≤ log Z),

with minibatch estimates of L_n, reparameterized samples, and the log q term evaluated
at stopped-gradient parameters ("sticking the landing": its score term has mean zero,
and dropping it removes most of the gradient's variance once q is close to π).

A family is any object with these methods (arrays in, arrays out, all traceable):

- ``init(posterior, key) -> params``: a pytree of arrays, one fit's parameters.
- ``draw(params, key) -> (w, weights)``: reparameterized samples, shape (S, d), and
  weights, shape (S,), summing to 1 and possibly depending on params; the ELBO
  estimate is ``Σ_s weights_s·(log π̃(w_s) − log q(w_s))``. A mixture draws one sample
  per component weighted by its mixture weight (the sum over components taken
  exactly); a flow draws S samples with weights 1/S.
- ``log_q(params, w) -> (S,)``: the log-density of q at w, shape (S, d).
- ``sample(params, key, num) -> (num, d)``: ordinary samples of q.

and optionally:

- ``quadratic_expectation(params, w_star, diag_h, grad) -> ()``: the exact value of
  E_q[gradᵀ(w − w*) + ½ Σᵢ diag_hᵢ (wᵢ − w*ᵢ)²], which turns on the control variate.
- ``mixture_weights(params) -> (M,)``: recorded as weight_min / weight_max.
- ``setup_grad_evals``: a float, gradient evaluations spent building the family.

Work (DESIGN.md): each step costs S·b/n gradient evaluations; every full-batch loss of
a trace or evaluation sample counts as one; gradient moments at w* count one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lambda_hat.estimate import Estimate
from lambda_hat.loop import Timing, run_chunked
from lambda_hat.posterior import Posterior
from lambda_hat.result import RunOutput, diverged_message, settings_used

# Key streams folded into a chain's key.
STREAM_STEPS, STREAM_INIT, STREAM_TRACE, STREAM_EVAL = 0, 1, 2, 3
# A fit counts as converged when its ELBO gained at most CONVERGE_TOL of its total gain
# over the second half of the trace (windows of CONVERGE_FRACTION of the records).
CONVERGE_FRACTION = 0.1
CONVERGE_TOL = 0.05
# ... and an ELBO change below this many nats counts as level whatever the gain was (a
# fit that starts at its optimum gains nothing, and its trace only jitters).
CONVERGE_NATS = 0.1
# Samples whose full-batch loss is computed at once (bounds memory to this many × n).
EVAL_CHUNK = 32


class VariationalFamily(Protocol):
    """What :func:`run_vi` needs of a variational family (see the module docstring)."""

    def init(self, posterior: Posterior, key: jax.Array) -> Any: ...

    def draw(self, params: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def log_q(self, params: Any, w: jax.Array) -> jax.Array: ...

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array: ...


@dataclass(frozen=True)
class VISettings:
    """The settings every VI method shares (see config/README.md).

    Attributes:
        n_steps: optimizer steps per fit; a multiple of ``eval_every``.
        learning_rate: Adam's peak learning rate.
        warmup_steps: steps of linear warm-up from 0 to the peak.
        decay_to: the final learning rate of the cosine decay, as a fraction of the
            peak.
        clip_norm: the gradient's global norm is clipped to this.
        batch_size: minibatch size b for L_n in the ELBO (clipped to n).
        eval_every: steps between trace records.
        trace_samples: fixed samples of q whose full-batch loss gives the running λ̂
            at each record (0: none).
        eval_samples: S, fresh samples of the fitted q for the final λ̂.
        control_variate: subtract a quadratic at w* with exact expectation under q
            from the final losses (only if the family provides the expectation).
    """

    n_steps: int
    learning_rate: float
    warmup_steps: int
    decay_to: float
    clip_norm: float
    batch_size: int
    eval_every: int
    trace_samples: int
    eval_samples: int
    control_variate: bool

    def __post_init__(self):
        if self.eval_every < 1 or self.n_steps % self.eval_every:
            raise ValueError(
                f"n_steps = {self.n_steps} must be a positive multiple of eval_every "
                f"= {self.eval_every}"
            )
        if self.warmup_steps >= self.n_steps:
            raise ValueError(
                f"warmup_steps = {self.warmup_steps} leaves no steps to decay: it must "
                f"be less than n_steps = {self.n_steps}"
            )
        if self.eval_samples < 2:
            raise ValueError(f"eval_samples = {self.eval_samples} must be at least 2")

    @classmethod
    def from_dict(cls, settings: dict) -> VISettings:
        """The VI settings within a method's settings; other keys are ignored.

        Keys with a default here (added after the first version) may be absent.
        """
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [k for k in required if k not in settings]
        if missing:
            raise ValueError(f"VI settings lack the keys {missing}")
        return cls(**{k: settings[k] for k in names if k in settings})


def make_optimizer(s: VISettings) -> optax.GradientTransformation:
    """Adam with linear warm-up then cosine decay, after global-norm clipping.

    The returned transformation minimizes, so it is fed the gradient of −ELBO.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=s.learning_rate,
        warmup_steps=s.warmup_steps,
        decay_steps=s.n_steps,
        end_value=s.learning_rate * s.decay_to,
    )
    return optax.chain(optax.clip_by_global_norm(s.clip_norm), optax.adam(schedule))


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """Standard normal draws of ``shape``, generated flat and reshaped.

    The values differ from ``jax.random.normal(key, shape)``; the point is speed: XLA
    on CPU compiles the threefry generator for a multi-dimensional shape (under
    ``vmap`` above all) several times more slowly than for a flat one.
    """
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def elbo_estimate(
    posterior: Posterior,
    family: VariationalFamily,
    params: Any,
    key: jax.Array,
    x: jax.Array,
    y: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One sticking-the-landing estimate of the ELBO and of the entropy of q.

    Args:
        posterior: the target π.
        family: the variational family.
        params: q's parameters.
        key: for the family's reparameterized draw.
        x, y: the minibatch whose mean loss stands in for L_n.

    Returns:
        (ELBO, entropy) estimates, scalars. Their values are unbiased; the gradient
        of the ELBO with respect to params omits the score term of log q.
    """
    w, weights = family.draw(params, key)
    log_p = -jax.vmap(posterior.potential, in_axes=(0, None, None))(w, x, y)
    log_q = family.log_q(jax.lax.stop_gradient(params), w)
    elbo = jnp.sum(weights * (log_p - log_q))
    entropy = -jnp.sum(weights * log_q)
    return elbo, entropy


def make_step(
    posterior: Posterior,
    family: VariationalFamily,
    optimizer: optax.GradientTransformation,
    batch_size: int,
) -> Callable:
    """A pure step ``one_step(state, key) -> (state, (elbo, entropy, grad_norm))``.

    ``state`` is ``(params, opt_state)``; ``grad_norm`` is the ELBO gradient's global
    norm before clipping. The minibatch of size b is drawn with replacement (the full
    data when b ≥ n).
    """
    full = batch_size >= posterior.n

    def objective(params, key, x, y):
        elbo, entropy = elbo_estimate(posterior, family, params, key, x, y)
        return -elbo, (elbo, entropy)

    def one_step(state, key):
        params, opt_state = state
        k_draw, k_batch = jax.random.split(key)
        if full:
            x, y = posterior.x, posterior.y
        else:
            idx = jax.random.randint(k_batch, (batch_size,), 0, posterior.n)
            x, y = posterior.batch(idx)
        grads, (elbo, entropy) = jax.grad(objective, has_aux=True)(params, k_draw, x, y)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (elbo, entropy, grad_norm)

    return one_step


def gradient_moments(
    posterior: Posterior, *, chunk: int = 1024
) -> tuple[jax.Array, jax.Array]:
    """The mean and the mean square of the per-sample loss gradients at w*.

    The mean is ∇L_n(w*); the mean square (the empirical Fisher diagonal) estimates
    the diagonal of the Hessian of L_n at w*. One pass over the data, counted as one
    gradient evaluation. No d×d matrix is formed.

    Returns:
        (mean, mean_square), each of shape (d,).
    """
    grad_one = jax.grad(lambda w, x, y: posterior.loss(w, x[None], y[None]))

    def sums(xy):
        x, y = xy
        g = grad_one(posterior.w_star, x, y)
        return g, g * g

    g, g2 = jax.jit(lambda x, y: jax.lax.map(sums, (x, y), batch_size=chunk))(
        posterior.x, posterior.y
    )
    return g.mean(axis=0), g2.mean(axis=0)


def _log_target(posterior: Posterior, w: jax.Array, losses: jax.Array) -> jax.Array:
    """log π̃(w) = −nβ·L_n(w) − (γ/2)‖w − w*‖² for rows w (num, d) whose full-batch
    losses (num,) are known; returns (num,)."""
    u = w - posterior.w_star
    return -(posterior.nbeta * losses + 0.5 * posterior.gamma * jnp.sum(u * u, axis=1))


def _full_losses(posterior: Posterior, w: jax.Array) -> jax.Array:
    """L_n at each row of w, shape (num, d) -> (num,), a few samples at a time.

    The batch is the largest divisor of num up to ``EVAL_CHUNK``, so that no
    remainder batch doubles the compiled code.
    """
    num = w.shape[0]
    batch = max(k for k in range(1, min(EVAL_CHUNK, num) + 1) if num % k == 0)
    return jax.lax.map(posterior.full_loss, w, batch_size=batch)


def control_variate_losses(
    losses: np.ndarray, quad: np.ndarray, quad_mean: np.ndarray
) -> np.ndarray:
    """Losses with the fitted multiple of a zero-mean quadratic subtracted, per chain.

    Args:
        losses: L_n at the samples, shape (chains, S).
        quad: the quadratic Q at the same samples, shape (chains, S).
        quad_mean: E_q[Q] of each chain, exact, shape (chains,).

    Returns:
        L − c·(Q − E_q[Q]) with c = cov(L, Q)/var(Q) fitted per chain, shape
        (chains, S). Fitting c on the same samples biases the mean by O(1/S).
    """
    centered = quad - quad_mean[:, None]
    dq = quad - quad.mean(axis=1, keepdims=True)
    dl = losses - losses.mean(axis=1, keepdims=True)
    var = np.sum(dq * dq, axis=1)
    cov = np.sum(dq * dl, axis=1)
    c = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 0.0)
    return losses - c[:, None] * centered


def vi_estimate(adjusted: np.ndarray, nbeta: float, L0: float) -> Estimate:
    """λ̂ from per-chain loss samples of shape (chains, S) of the fitted q.

    Each chain's λ̂ is nβ(mean − L0) with standard error nβ·sd/√S; the pooled λ̂ is
    their mean and its standard error sqrt(Σ se²)/chains. No ESS or R̂: the samples
    are independent, and an optimizer's trace is not a Markov chain.
    """
    chains, S = adjusted.shape
    llc_chains = nbeta * (adjusted.mean(axis=1) - L0)
    se_chains = nbeta * adjusted.std(axis=1, ddof=1) / math.sqrt(S)
    return Estimate(
        llc_mean=float(llc_chains.mean()),
        llc_se=float(np.sqrt(np.sum(se_chains**2)) / chains),
        llc_chains=[float(v) for v in llc_chains],
        ess=None,
        rhat=None,
        extra={"llc_se_chains": [float(v) for v in se_chains]},
    )


def importance_diagnostics(
    log_w: np.ndarray, losses: np.ndarray, nbeta: float, L0: float
) -> dict:
    """How far each fitted q is from π, from its final samples weighted by π̃/q.

    With log_w = log π̃(w) − log q(w) at S independent draws of q (π̃ the
    unnormalized posterior) and normalized weights w̄ ∝ exp(log_w):

    - the Kish effective sample size 1/Σ w̄² (S when q = π): how many draws of π
      q's S draws are worth;
    - log mean exp(log_w) − mean(log_w) ≥ 0: the importance-weighted bound on log Z
      minus the ELBO, both from the same draws. Since log Z − ELBO = KL(q‖π), it
      bounds KL(q‖π) from below (in expectation);
    - nβ(Σ w̄·L − L0): λ̂ re-weighted to π (self-normalized importance sampling),
      consistent as S grows but only as good as the effective sample size says.

    Args:
        log_w: log importance weights, shape (chains, S).
        losses: L_n at the same draws, shape (chains, S).
        nbeta: nβ.
        L0: L_n(w*).

    Returns:
        ``is_ess`` (the smallest over the fits), ``kl_bound`` (the largest) and
        ``llc_is`` (the mean); all NaN if any weight is not finite.
    """
    if not (np.all(np.isfinite(log_w)) and np.all(np.isfinite(losses))):
        return {"is_ess": math.nan, "kl_bound": math.nan, "llc_is": math.nan}
    top = log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w - top)
    w_bar = w / w.sum(axis=1, keepdims=True)
    ess = 1.0 / np.sum(w_bar**2, axis=1)
    log_mean_w = top[:, 0] + np.log(w.mean(axis=1))
    kl = log_mean_w - log_w.mean(axis=1)
    llc = nbeta * (np.sum(w_bar * losses, axis=1) - L0)
    return {
        "is_ess": float(ess.min()),
        "kl_bound": float(kl.max()),
        "llc_is": float(llc.mean()),
    }


def converged(elbo: np.ndarray) -> bool | None:
    """Whether every fit's ELBO trace has levelled off; None if the trace is short.

    The learning rate's decay flattens any trace at the end, so the test looks at
    the second half: a fit has converged when the ELBO's change over it (the mean of
    the last tenth of the records against the mean of the tenth before the middle)
    is at most ``CONVERGE_TOL`` of the gain since the first record in size, within
    three standard errors of zero, or below ``CONVERGE_NATS``. A fit whose ELBO fell,
    over the second half or since its first record, has gone backwards and has not
    converged either.

    Args:
        elbo: the recorded ELBO, shape (chains, records).
    """
    records = elbo.shape[1]
    window = max(1, int(records * CONVERGE_FRACTION))
    if records < 4 * window:
        return None
    if not np.all(np.isfinite(elbo)):
        return False
    half = records // 2
    last = elbo[:, -window:]
    middle = elbo[:, half - window : half]
    late_gain = last.mean(axis=1) - middle.mean(axis=1)
    total_gain = np.abs(last.mean(axis=1) - elbo[:, 0])
    noise = (
        3 * np.sqrt((last.var(axis=1, ddof=1) + middle.var(axis=1, ddof=1)) / window)
        if window > 1
        else 0.0
    )
    level = np.abs(late_gain) <= np.maximum(
        np.maximum(CONVERGE_TOL * total_gain, noise), CONVERGE_NATS
    )
    spread = 3 * last.std(axis=1, ddof=1) if window > 1 else 0.0
    forward = last.mean(axis=1) >= elbo[:, 0] - np.maximum(spread, CONVERGE_NATS)
    return bool(np.all(level & forward))


def _compiled(fn, *args, timing: Timing):
    """Compile ``fn`` for ``args`` (time counted as compile time) and run it."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    t1 = time.perf_counter()
    out = jax.tree.map(np.asarray, compiled(*args))
    timing.compile_s += t1 - t0
    timing.run_s += time.perf_counter() - t1
    return out


def run_vi(
    posterior: Posterior,
    keys: jax.Array,
    family: VariationalFamily,
    settings: VISettings | dict,
    *,
    progress: Callable[[str], None],
    label: str,
    used: dict | None = None,
) -> RunOutput:
    """Fit one q per key under ``vmap`` and estimate λ̂ from each fitted q.

    Args:
        posterior: the localized tempered posterior π.
        keys: typed keys, one per independent fit, shape (chains,).
        family: the variational family (see the module docstring).
        settings: :class:`VISettings`, or a method's settings dict holding its keys.
        progress: where progress lines go.
        label: what is running, for the progress lines (the algo name).
        used: the family's values for the ``settings_used`` column (the batch size
            as clipped to n is added here).

    Returns:
        The trace as draws, one record every ``eval_every`` steps: step,
        grad_evals, grad_norm (mean over the steps since the last record), and,
        from the fixed trace sample with the full-batch loss, elbo, entropy, loss
        and llc_running (without a trace sample, elbo and entropy are the means of
        the steps' minibatch estimates), plus weight_min / weight_max for mixtures.
        Then λ̂ with its Monte Carlo standard error, and in summary_extra
        ``converged`` and the importance diagnostics of the final samples
        (:func:`importance_diagnostics`). A non-finite ELBO at any step, or a
        non-finite loss of the final samples, ends the run as ``diverged`` with a
        message.
    """
    s = settings if isinstance(settings, VISettings) else VISettings.from_dict(settings)
    n, nbeta, L0 = posterior.n, posterior.nbeta, posterior.L0
    b = min(s.batch_size, n)
    n_records = s.n_steps // s.eval_every
    optimizer = make_optimizer(s)
    step = make_step(posterior, family, optimizer, b)
    mixture_weights = getattr(family, "mixture_weights", None)
    timing = Timing()

    def stream(key, tag):
        return jax.random.fold_in(key, tag)

    def init(key):
        params = family.init(posterior, stream(key, STREAM_INIT))
        return params, optimizer.init(params)

    state = _compiled(jax.vmap(init), keys, timing=timing)
    params0 = jax.tree.map(lambda a: a[0], state[0])
    w_shape, _ = jax.eval_shape(
        family.draw, params0, jax.random.key(0, impl="threefry2x32")
    )
    draws_per_step = w_shape.shape[0]

    def record(key, state, r):
        # Step i's key is folded in inside the loop: a key array made by vmapping
        # fold_in over indices reads to the key-reuse checker as one key, reused.
        step_key = stream(key, STREAM_STEPS)
        state, (elbo, entropy, grad_norm) = jax.lax.scan(
            lambda st, i: step(st, stream(step_key, i)),
            state,
            r * s.eval_every + jnp.arange(s.eval_every),
        )
        params = state[0]
        out = {"grad_norm": grad_norm.mean()}
        if s.trace_samples:
            # The fixed sample (common random numbers across records) with the
            # full-batch loss makes a smooth trace: its changes are the fit's.
            fixed = jax.random.clone(stream(key, STREAM_TRACE))
            w = family.sample(params, fixed, s.trace_samples)
            losses = _full_losses(posterior, w)
            log_p = _log_target(posterior, w, losses)
            log_q = family.log_q(params, w)
            out["loss"] = losses.mean()
            out["elbo"] = jnp.mean(log_p - log_q)
            out["entropy"] = -jnp.mean(log_q)
        else:
            out["elbo"], out["entropy"] = elbo.mean(), entropy.mean()
        out["elbo"] = jnp.where(jnp.all(jnp.isfinite(elbo)), out["elbo"], jnp.nan)
        if mixture_weights is not None:
            weights = mixture_weights(params)
            out["weight_min"], out["weight_max"] = weights.min(), weights.max()
        return state, out

    def chunk(states, idx):
        def one_fit(key, state):
            return jax.lax.scan(lambda st, r: record(key, st, r), state, idx)

        return jax.vmap(one_fit)(keys, states)

    progress(
        f"{label}: {s.n_steps} steps of {draws_per_step} draws, batch {b}, "
        f"{len(keys)} fits"
    )
    state, trace = run_chunked(
        chunk,
        state,
        n_records,
        label=label,
        progress=progress,
        timing=timing,
        unit="record",
    )
    params = state[0]

    # The final estimate: fresh samples of each fitted q, full-batch losses.
    use_cv = s.control_variate and hasattr(family, "quadratic_expectation")
    if use_cv:
        grad0, diag_h = gradient_moments(posterior)

    def evaluate(key, params):
        w = family.sample(params, stream(key, STREAM_EVAL), s.eval_samples)
        losses = _full_losses(posterior, w)
        log_w = _log_target(posterior, w, losses) - family.log_q(params, w)
        out = {"loss": losses, "log_w": log_w}
        if use_cv:
            u = w - posterior.w_star
            out["quad"] = u @ grad0 + 0.5 * (u * u) @ diag_h
            out["quad_mean"] = family.quadratic_expectation(
                params, posterior.w_star, diag_h, grad0
            )
        return out

    final = _compiled(jax.vmap(evaluate), keys, params, timing=timing)
    losses = final["loss"]
    adjusted = (
        control_variate_losses(losses, final["quad"], final["quad_mean"])
        if use_cv
        else losses
    )

    # The trace as draws: per-record columns (records,), per-fit ones (chains, records).
    steps = (np.arange(n_records) + 1) * s.eval_every
    setup = float(getattr(family, "setup_grad_evals", 0.0))
    grad_evals = (
        setup
        + steps * draws_per_step * b / n
        + (np.arange(n_records) + 1) * s.trace_samples
    )
    draws = {
        "step": steps,
        "grad_evals": grad_evals,
        "burn_in": np.zeros(n_records, dtype=bool),
        **{k: np.asarray(v, dtype=np.float64) for k, v in trace.items()},
    }
    if "loss" in draws:
        draws["llc_running"] = nbeta * (draws["loss"] - L0)
    total = float(grad_evals[-1]) + s.eval_samples + (1.0 if use_cv else 0.0)

    message = diverged_message(draws["elbo"], steps, what="ELBO")
    if not message and not np.all(np.isfinite(adjusted)):
        bad = np.flatnonzero(~np.all(np.isfinite(adjusted), axis=1))
        message = "; ".join(f"chain {c}: non-finite loss of q's samples" for c in bad)
    estimate = vi_estimate(adjusted, nbeta, L0)
    if not message:
        progress(
            f"{label}: λ̂ = {estimate.llc_mean:.6g} ± {estimate.llc_se:.3g} "
            f"from {s.eval_samples} samples per fit"
            + (" with the control variate" if use_cv else "")
        )
    return RunOutput(
        draws=draws,
        estimate=estimate,
        grad_evals=total,
        timing=timing,
        status="diverged" if message else "ok",
        message=message,
        summary_extra={
            "converged": converged(draws["elbo"]) if not message else False,
            **importance_diagnostics(final["log_w"], losses, nbeta, L0),
            "settings_used": settings_used(batch_size=b, **(used or {})),
        },
    )
