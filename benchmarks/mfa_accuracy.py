"""Accuracy and cost of algo: mfa on targets with a known λ, written to mfa_accuracy.md.

Linear regression (d = 10, 100) against the exact finite-n λ̂, for M = 1 and M = 4, and
the default deep linear network against Aoyagi's λ = 9, each with the default settings
(4 fits) except where the table says otherwise. Wall and compile seconds are measured
on whatever machine runs this; they are not comparable across machines.

Run: ``uv run python benchmarks/mfa_accuracy.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from lambda_hat import keys  # noqa: E402
from lambda_hat.sample import run_method  # noqa: E402
from lambda_hat.targets import save_target, train_target  # noqa: E402

OUT = Path(__file__).with_suffix(".md")
DEFAULTS = dict(
    algo="mfa",
    gamma=1.0,
    beta=None,
    n_chains=4,
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
TARGETS = {
    "linreg10": {
        "family": "linreg",
        "d_in": 10,
        "d_out": 1,
        "bias": False,
        "n": 1000,
        "noise": 1.0,
        "dtype": "float64",
        "train": {"steps": 1000, "lr": 0.05, "batch_size": None},
    },
    "linreg100": {
        "family": "linreg",
        "d_in": 100,
        "d_out": 1,
        "bias": False,
        "n": 1000,
        "noise": 1.0,
        "dtype": "float64",
        "train": {"steps": 2000, "lr": 0.05, "batch_size": None},
    },
    "dln": {
        "family": "dln",
        "widths": [5, 4, 3, 5],
        "rank": 2,
        "n": 10000,
        "noise": 1.0,
        "dtype": "float64",
        "train": {"steps": 0, "lr": 0.01, "batch_size": None},
    },
}
CASES = [
    ("linreg10", {"n_components": 1}),
    ("linreg10", {}),
    ("linreg100", {"n_components": 1}),
    ("linreg100", {"n_steps": 4000}),
    ("dln", {}),
    ("dln", {"n_components": 1, "rank": 47, "n_steps": 6000}),
    ("dln", {"gamma": 100.0}),
]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for name, spec in TARGETS.items():
            key = keys.job_key(0, "train_target", {"target": name})
            target = train_target(name, spec, key=key, progress=lambda s: None)
            dirs[name] = Path(tmp) / name
            save_target(target, dirs[name])
        for name, change in CASES:
            settings = {**DEFAULTS, **change}
            t0 = time.perf_counter()
            row, _ = run_method(
                dirs[name],
                target=name,
                method="mfa",
                rep=0,
                seed=0,
                settings=settings,
                progress=lambda s: None,
            )
            rows.append((name, change, row, time.perf_counter() - t0))
            print(name, change, row["llc_mean"], row["llc_se"], row["truth"])

    lines = [
        "# algo: mfa against known λ",
        "",
        "Written by `benchmarks/mfa_accuracy.py`: default settings (4 fits, 2000",
        "steps, M = 4, r = 4, full batch up to n = 1000) except the changes listed.",
        "SE is the Monte Carlo standard error of the evaluation samples (control",
        "variate on);",
        "sd is the spread of λ̂ across the 4 fits. Seconds are wall time of the whole",
        "run on the machine that wrote this file, compile time included.",
        "",
        "| target | d | changes | λ̂ | SE | sd | truth | rel. error | converged | "
        "grad. evals | seconds | compile |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, change, row, wall in rows:
        text = ", ".join(f"{k} = {v}" for k, v in change.items()) or "–"
        lines.append(
            f"| {name} | {row['d']} | {text} | {row['llc_mean']:.4f} | "
            f"{row['llc_se']:.3g} | {row['llc_chain_sd']:.3g} | {row['truth']:.4f} "
            f"({row['truth_kind']}) | {row['rel_error']:+.2%} | {row['converged']} | "
            f"{row['grad_evals']:.0f} | {wall:.1f} | {row['compile_s']:.1f} |"
        )
    lines += [
        "",
        "The DLN rows show the family's limit, not the fit's: a Gaussian mixture",
        "cannot follow the curved symmetry orbits of a deep linear network, so q sits",
        "across them and λ̂ lands near 14-15 at any M, r (even a full covariance) or",
        "length. The γ = 100 row is still compared with Aoyagi's λ.",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
