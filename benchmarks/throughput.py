"""Gradient evaluations per second of the posterior's gradient, against the roofline.

Usage (from the repository root):

    uv run python benchmarks/throughput.py            # writes benchmarks/throughput.md
    uv run python benchmarks/throughput.py --tiny     # a quick check of the plumbing

One gradient evaluation here is ∇U(w) = nβ·∇L_B(w) + γ(w − w*) on a batch B of b
samples (drawn with replacement, as SGLD does) or on all n samples ("full"). K of them
run in one jitted ``lax.scan`` whose carry moves w by a tiny step, so XLA can neither
hoist nor drop the work; the rate is K·chains / (best of three wall times), compile
excluded. Chains run as one chain, four chains under ``jax.vmap``, or four chains under
``jax.lax.map`` (a loop over the chains inside the same program).

Work per gradient evaluation is counted as 6·b·P floating-point operations for P
weights (2 for the forward matmuls, 4 for the backward ones); the activations add
less than 1% for these shapes. Peak FLOP/s is measured with a large matmul (see
``peak_flops``) and memory bandwidth with a large array sum; the roofline bound of a
configuration is min(peak, intensity × bandwidth) with intensity = FLOPs / bytes, the
bytes being three passes over the weights and two over the activations.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from lambda_hat.posterior import make_posterior  # noqa: E402
from lambda_hat.targets import Target, build_model  # noqa: E402

HERE = Path(__file__).resolve().parent
N = 4096
BATCH = 256
# (label, d_in, width, depth): MLPs of about 1k, 10k and 100k parameters.
SIZES = [("1k", 16, 24, 2), ("10k", 32, 84, 2), ("100k", 64, 282, 2)]
CHAIN_MODES = [("1 chain", 1, "vmap"), ("4 vmap", 4, "vmap"), ("4 lax.map", 4, "map")]


def best_of(fn, repeats: int = 3) -> float:
    """The least wall seconds of ``fn()`` in ``repeats`` calls, after a warm-up."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_flops(dtype, size: int = 2048) -> float:
    """FLOP/s of a jitted size×size matmul (2·size³ operations), best of three."""
    a = jnp.ones((size, size), dtype)
    b = jnp.ones((size, size), dtype)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * size**3 / best_of(lambda: f(a, b))


def bandwidth(dtype, mb: int = 256) -> float:
    """Bytes/s of summing a ``mb``-MB array (one read pass), best of three."""
    x = jnp.ones((mb * 2**20 // jnp.dtype(dtype).itemsize,), dtype)
    f = jax.jit(jnp.sum)
    return x.nbytes / best_of(lambda: f(x))


def make_target(d_in: int, width: int, depth: int, dtype: str) -> Target:
    """An MLP target with random weights and data (the gradient's cost is the same)."""
    spec = {
        "family": "mlp",
        "d_in": d_in,
        "d_out": 1,
        "width": width,
        "depth": depth,
        "activation": "tanh",
        "noise": 1.0,
        "dtype": dtype,
    }
    key = jax.random.key(0, impl="threefry2x32")
    model = build_model(spec, key=key)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, d_in)).astype(dtype)
    y = rng.standard_normal((N, 1)).astype(dtype)
    return Target("bench", spec, model, x, y, meta={"L0": 0.0})


def grad_rate(posterior, *, batch: int | None, chains: int, mode: str, k: int):
    """(gradient evaluations per second, seconds per call, k) for one configuration."""
    grad = jax.grad(posterior.potential)
    n = posterior.n

    def steps(w, key):
        def body(w, i):
            if batch is None:
                x, y = posterior.x, posterior.y
            else:
                idx = jax.random.randint(jax.random.fold_in(key, i), (batch,), 0, n)
                x, y = posterior.batch(idx)
            return w - 1e-9 * grad(w, x, y), None

        return jax.lax.scan(body, w, jnp.arange(k))[0]

    keys = jax.random.split(jax.random.key(1, impl="threefry2x32"), chains)
    w0 = jnp.broadcast_to(posterior.w_star, (chains, posterior.d))
    if mode == "vmap":
        run = jax.jit(jax.vmap(steps))
    else:
        run = jax.jit(lambda ws, ks: jax.lax.map(lambda a: steps(*a), (ws, ks)))
    seconds = best_of(lambda: run(w0, keys))
    return k * chains / seconds, seconds


def calibrate(posterior, *, batch, budget_s: float) -> int:
    """A scan length K whose one-chain run takes about ``budget_s`` seconds."""
    k = 1
    while True:
        _, sec = grad_rate(posterior, batch=batch, chains=1, mode="vmap", k=k)
        if sec > budget_s / 4 or k >= 2**16:
            return max(1, int(k * budget_s / max(sec, 1e-9)))
        k *= 8


def intensity(n_weights: int, act: int, b: int, itemsize: int) -> float:
    """FLOPs per byte of one gradient evaluation (see the module docstring)."""
    flops = 6 * b * n_weights
    bytes_ = itemsize * (3 * n_weights + 2 * b * act)
    return flops / bytes_


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    flags = Path("/proc/cpuinfo").read_text()
    simd = [f for f in ("avx512f", "avx2", "fma") if f" {f} " in flags]
    return f"{cpu} ({', '.join(simd)}), {os.cpu_count()} cores"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="smallest size, short runs")
    p.add_argument("--out", default=str(HERE / "throughput.md"))
    p.add_argument("--budget", type=float, default=0.5, help="seconds per timing")
    args = p.parse_args()
    sizes = SIZES[:1] if args.tiny else SIZES
    budget = 0.05 if args.tiny else args.budget
    load_start = ", ".join(f"{v:.2f}" for v in os.getloadavg())

    peaks, bws = {}, {}
    for dt in ("float32", "float64"):
        peaks[dt] = peak_flops(jnp.dtype(dt), 512 if args.tiny else 2048)
        bws[dt] = bandwidth(jnp.dtype(dt), 16 if args.tiny else 256)
        print(
            f"{dt}: peak {peaks[dt] / 1e9:.1f} GFLOP/s, {bws[dt] / 1e9:.1f} GB/s",
            file=sys.stderr,
        )

    rows = []
    for label, d_in, width, depth in sizes:
        for dt in ("float32", "float64"):
            target = make_target(d_in, width, depth, dt)
            post = make_posterior(target, beta=None, gamma=1.0)
            layers = [target.model.layers[i] for i in range(depth + 1)]
            n_weights = sum(int(layer.weight.size) for layer in layers)
            act = d_in + depth * width + 1
            for batch in (BATCH, None):
                b = N if batch is None else batch
                k = calibrate(post, batch=batch, budget_s=budget)
                flops = 6 * b * n_weights
                ai = intensity(n_weights, act, b, jnp.dtype(dt).itemsize)
                bound = min(peaks[dt], ai * bws[dt])
                for mode_label, chains, mode in CHAIN_MODES:
                    rate, _ = grad_rate(
                        post, batch=batch, chains=chains, mode=mode, k=k
                    )
                    rows.append(
                        (
                            label,
                            post.d,
                            "full" if batch is None else str(batch),
                            dt,
                            mode_label,
                            rate,
                            rate * flops / 1e9,
                            100 * rate * flops / bound,
                        )
                    )
                    print(" ".join(map(str, rows[-1])), file=sys.stderr)

    load_end = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        "# Throughput of the posterior's gradient",
        "",
        f"Machine: {machine()}; {platform.system()} {platform.release()}; Python "
        f"{platform.python_version()}, jax {jax.__version__}, backend "
        f"{jax.default_backend()}.",
        f"Load average (1, 5, 15 min) at start: {load_start}; at end: {load_end}.",
        f"Generated by `benchmarks/throughput.py{' --tiny' if args.tiny else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Roofline of this CPU as measured here (best of three; see the script's "
        "docstring):",
        "",
        "| dtype | peak GFLOP/s (2048² matmul, jnp) | bandwidth GB/s (sum of 256 MB) |",
        "| --- | --- | --- |",
    ]
    for dt in ("float32", "float64"):
        lines.append(f"| {dt} | {peaks[dt] / 1e9:.1f} | {bws[dt] / 1e9:.1f} |")
    lines += [
        "",
        f"MLP targets (tanh, depth 2, one output), n = {N}; batch {BATCH} drawn with "
        "replacement each step, or the full batch. Rates count gradient evaluations "
        "summed over chains.",
        "",
        "| params | d | batch | dtype | chains | grad evals/s | GFLOP/s | "
        "% of roofline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, d, batch, dt, mode, rate, gflops, pct in rows:
        lines.append(
            f"| {label} | {d} | {batch} | {dt} | {mode} | {rate:,.0f} | "
            f"{gflops:.2f} | {pct:.0f}% |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
