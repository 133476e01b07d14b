"""λ̂ and speed of lambda-hat against devinterp's SGLD on the same targets.

Usage (from the repository root, after ``bash benchmarks/setup_devinterp.sh``):

    uv run python benchmarks/vs_devinterp.py            # full sizes, writes the table
    uv run python benchmarks/vs_devinterp.py --tiny     # a quick check of the plumbing

Every run is its own process, so its wall time ("total") includes the interpreter, the
imports, loading the target, compiling and sampling, and its peak memory is that
process's maximum resident set. "sampling" is the sampling loop alone (for lambda-hat
without the one-off XLA compilation, which is reported separately).

Targets are trained here with lambda-hat (Stage A) and exported to a ``.npz`` that the
devinterp worker (``_devinterp_worker.py``, run by benchmarks/.venv-devinterp's python)
rebuilds in torch: the same data, the same w*, the same likelihood.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _rss import peak_rss_mb

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "vs_devinterp"
DEVINTERP_PYTHON = HERE / ".venv-devinterp" / "bin" / "python"
N_CHAINS = 4

# Targets of truth-suite sizes. n = 10_000 for all, so nβ = n/log n ≈ 1085.7.
TARGETS = {
    "linreg_d100": {
        "spec": {
            "family": "linreg",
            "d_in": 100,
            "n": 10_000,
            "noise": 1.0,
            "train": {"steps": 2000, "lr": 0.05},
        },
        "sgld": {"step_size": 5e-6, "n_steps": 10_000, "burn_in": 2_000},
    },
    "dln_188": {
        "spec": {
            "family": "dln",
            "widths": [10, 8, 6, 10],
            "rank": 3,
            "n": 10_000,
            "noise": 1.0,
            "train": {"steps": 0},
        },
        "sgld": {"step_size": 1e-5, "n_steps": 10_000, "burn_in": 2_000},
    },
    "dln_1600": {
        "spec": {
            "family": "dln",
            "widths": [20, 20, 20, 20, 20],
            "rank": 5,
            "n": 10_000,
            "noise": 1.0,
            "train": {"steps": 0},
        },
        "sgld": {"step_size": 5e-6, "n_steps": 10_000, "burn_in": 2_000},
    },
}
BATCH_SIZE = 100
GAMMA = 1.0
# lambda-hat records the full-batch loss every `THIN` steps (one gradient evaluation's
# worth of work each, forward only); devinterp records the minibatch loss of every step.
THIN = 500

# (label, implementation, dtype). MFA and flow run only where their modules exist.
RUNS = [
    ("devinterp SGLD", "devinterp", "float32"),
    ("lambda-hat SGLD", "sgld", "float32"),
    ("lambda-hat SGLD", "sgld", "float64"),
    ("lambda-hat MFA", "mfa", "float64"),
    ("lambda-hat flow", "flow", "float64"),
]


def tiny(targets: dict) -> dict:
    """The same targets with a few hundred steps, to check the plumbing."""
    out = copy.deepcopy(targets)
    for t in out.values():
        t["spec"]["n"] = 1000
        t["sgld"].update(n_steps=1000, burn_in=200)
    return out


# --- Stage A: targets and their export ------------------------------------------------


def with_defaults(name: str, spec: dict) -> dict:
    """A target spec with the schema's defaults filled in."""
    from snakemake.utils import validate

    config = {"seed": 0, "targets": {name: spec}, "methods": {"m": {"algo": "sgld"}}}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config["targets"][name]


def prepare(name: str, spec: dict, dtype: str) -> Path:
    """Train (once) the target in ``dtype`` and export it for torch; its directory."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from lambda_hat import keys
    from lambda_hat.targets import load_target, save_target, train_target

    full = with_defaults(name, {**spec, "dtype": dtype})
    tag = json.dumps(full, sort_keys=True)
    digest = hashlib.blake2b(tag.encode(), digest_size=4).hexdigest()
    out = CACHE / f"{name}-{dtype}-{digest}"
    if not (out / "meta.json").is_file():
        target = train_target(
            name, full, key=keys.job_key(0, "train_target", {"target": name})
        )
        save_target(target, out)
    target = load_target(out)
    model = target.model
    layers = [model] if full["family"] == "linreg" else list(model.layers)
    arrays = {f"w{i}": np.asarray(layer.weight) for i, layer in enumerate(layers)}
    np.savez(
        out / "export.npz",
        x=target.x,
        y=target.y,
        noise=np.float64(full["noise"]),
        **arrays,
    )
    return out


def truth(target_dir: Path, beta: float, gamma: float) -> tuple[float, str]:
    import jax

    jax.config.update("jax_enable_x64", True)
    from lambda_hat.targets import load_target

    return load_target(target_dir).truth(beta, gamma)


# --- workers: one process per run -----------------------------------------------------


def worker_lambda_hat(
    target_dir: str, algo: str, settings: dict, threads: int = 1
) -> dict:
    """Run one lambda-hat method in this process; the run's numbers as a dict."""
    t_start = time.perf_counter()
    import importlib

    from lambda_hat.runtime import limit_threads

    limit_threads(threads)
    import jax

    jax.config.update("jax_enable_x64", True)
    from lambda_hat import keys
    from lambda_hat.posterior import make_posterior
    from lambda_hat.sample import ALGOS
    from lambda_hat.targets import load_target

    module = importlib.import_module(ALGOS[algo])
    t_imported = time.perf_counter()
    target = load_target(target_dir)
    posterior = make_posterior(target, beta=None, gamma=settings.pop("gamma"))
    job = keys.job_key(0, "sample", {"target": target.name, "method": algo})
    out = module.run(
        posterior,
        keys.chain_keys(job, settings["n_chains"]),
        settings,
        progress=lambda line: None,
    )
    return {
        "llc": float(out.estimate.llc_mean),
        "llc_se": float(out.estimate.llc_se),
        "sampling_s": out.timing.run_s,
        "compile_s": out.timing.compile_s,
        "import_s": t_imported - t_start,
        # RunOutput.grad_evals is per chain.
        "grad_evals": out.grad_evals * settings["n_chains"],
        "status": out.status,
        "maxrss_mb": peak_rss_mb(),
        "versions": {"jax": jax.__version__},
    }


def spawn(cmd: list[str], env: dict | None = None) -> tuple[dict, float]:
    """Run a worker process; its JSON result and its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def lambda_hat_settings(algo: str, sgld: dict) -> dict | None:
    """A method's settings at the matched budget, or None where it is not on main."""
    import importlib

    base = {"gamma": GAMMA, "n_chains": N_CHAINS}
    if algo == "sgld":
        return {**base, **sgld, "thin": THIN, "batch_size": BATCH_SIZE}
    try:
        importlib.import_module(f"lambda_hat.{algo}")
    except ImportError:
        return None
    # MFA and flow: their schema defaults, with the posterior matched. Their step
    # counts are not yet matched to SGLD's gradient budget: set them here once their
    # settings are known (the count they report is in the table either way).
    from snakemake.utils import validate

    config = {"seed": 0, "targets": {}, "methods": {"m": {"algo": algo, **base}}}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    settings = config["methods"]["m"]
    for k in ("algo", "beta", "replicates"):
        settings.pop(k, None)
    return settings


# --- the table ------------------------------------------------------------------------


def remeasure_memory(out: Path, steps: int, threads: int) -> None:
    """Peak memory of every run of the table's .json again, at ``steps`` steps."""
    import numpy as np

    meta = json.loads(out.with_suffix(".json").read_text())
    for r in meta["rows"]:
        t = meta["targets"][r["target"]]
        sgld = {**t["sgld"], "n_steps": steps, "burn_in": steps // 5}
        target_dir = prepare(r["target"], t["spec"], r["dtype"])
        if r["method"].startswith("devinterp"):
            n = t["spec"]["n"]
            s = {
                **sgld,
                "gamma": GAMMA,
                "n_chains": N_CHAINS,
                "batch_size": BATCH_SIZE,
                "nbeta": n / math.log(n),
                "dtype": r["dtype"],
                "threads": threads,
            }
            arrays = dict(np.load(target_dir / "export.npz"))
            arrays["settings"] = json.dumps(s)
            np.savez(target_dir / "run.npz", **arrays)
            cmd = [
                str(DEVINTERP_PYTHON),
                str(HERE / "_devinterp_worker.py"),
                str(target_dir / "run.npz"),
            ]
        else:
            algo = {"lambda-hat SGLD": "sgld"}[r["method"]]
            s = lambda_hat_settings(algo, sgld)
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                json.dumps([str(target_dir), algo, s, threads]),
            ]
        res, _ = spawn(cmd)
        r["maxrss_mb"] = res["maxrss_mb"]
        print(r["target"], r["method"], r["dtype"], res["maxrss_mb"], file=sys.stderr)
    meta["memory_steps"] = steps
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    write_table(out, meta)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a few hundred steps only")
    p.add_argument("--out", default=str(HERE / "vs_devinterp.md"))
    p.add_argument("--only", nargs="*", help="target names to run")
    p.add_argument("--repeat", type=int, default=1, help="timings: report the minimum")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="threads of torch (devinterp) and of XLA (lambda-hat); 1 is "
        "devinterp's fastest here",
    )
    p.add_argument(
        "--render", action="store_true", help="rewrite the table from its .json"
    )
    p.add_argument(
        "--memory",
        type=int,
        metavar="STEPS",
        help="only measure every run's peak memory again, with STEPS steps (memory "
        "does not grow with steps), into the table's .json, and rewrite the table",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.render:
        out = Path(args.out)
        write_table(out, json.loads(out.with_suffix(".json").read_text()))
        return
    if args.memory:
        remeasure_memory(Path(args.out), args.memory, args.torch_threads)
        return

    if args.worker:
        print(json.dumps(worker_lambda_hat(*json.loads(args.worker))))
        return

    if not DEVINTERP_PYTHON.exists():
        sys.exit("run `bash benchmarks/setup_devinterp.sh` first")
    targets = tiny(TARGETS) if args.tiny else TARGETS
    if args.only:
        targets = {k: v for k, v in targets.items() if k in args.only}
    rows, skipped, versions = [], [], {}
    loads = [load()]
    for name, t in targets.items():
        n = t["spec"]["n"]
        beta = 1.0 / math.log(n)
        for label, impl, dtype in RUNS:
            target_dir = prepare(name, t["spec"], dtype)
            value, kind = truth(target_dir, beta, GAMMA)
            if impl == "devinterp":
                s = {
                    **t["sgld"],
                    "gamma": GAMMA,
                    "n_chains": N_CHAINS,
                    "batch_size": BATCH_SIZE,
                    "nbeta": n * beta,
                    "dtype": dtype,
                    "threads": args.torch_threads,
                }
                arrays = dict(__import__("numpy").load(target_dir / "export.npz"))
                arrays["settings"] = json.dumps(s)
                run_file = target_dir / "run.npz"
                __import__("numpy").savez(run_file, **arrays)
                cmd = [
                    str(DEVINTERP_PYTHON),
                    str(HERE / "_devinterp_worker.py"),
                    str(run_file),
                ]
            else:
                s = lambda_hat_settings(impl, t["sgld"])
                if s is None:
                    skipped.append(f"{label} ({impl}): lambda_hat.{impl} not on main")
                    continue
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    json.dumps([str(target_dir), impl, s, args.torch_threads]),
                ]
            results = [spawn(cmd) for _ in range(args.repeat)]
            res, wall = min(results, key=lambda r: r[0]["sampling_s"])
            res["total_s"] = min(w for _, w in results)
            versions.update(res.pop("versions"))
            llc = res["llc"]
            rows.append(
                {
                    "target": name,
                    "method": label,
                    "dtype": dtype,
                    "truth": value,
                    "kind": kind,
                    "rel": (llc - value) / value if value else float("nan"),
                    **res,
                }
            )
            print(
                f"{name} {label} {dtype}: llc {llc:.3f} (truth {value:.3f}), "
                f"sampling {res['sampling_s']:.2f} s, total {res['total_s']:.2f} s",
                file=sys.stderr,
            )
            loads.append(load())
    meta = {
        "rows": rows,
        "skipped": skipped,
        "versions": versions,
        "loads": loads,
        "targets": targets,
        "repeat": args.repeat,
        "tiny": args.tiny,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.out).with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    write_table(Path(args.out), meta)


CONVENTIONS = """\
## Conventions, and how they are aligned

Read from devinterp 2.0.1's source (`optim/sgmcmc.py`, `slt/sampling.py`,
`slt/sampler.py`, `slt/llc.py`, `utils.py`):

- **Update.** devinterp's default sampler (`SGMCMC.sgld`, what `slt.sample` uses)
  steps w ← w − (ε/2)(nβ·∇L_B(w) + γ(w − w₀)) + √ε·σ·ξ with ξ ~ N(0, I), σ =
  `noise_level` = 1, w₀ the parameters it starts from and L_B the minibatch mean
  loss. That is lambda-hat's SGLD step with w₀ = w*. Both get the same ε and γ
  (`lr`, `localization`); weight decay 0, no bounding box, no initial noise.
- **nβ.** devinterp's documented default, `utils.default_nbeta(dataloader)`, is b/log b
  with b the *batch size* (21.7 at b = 100), not n/log n (1085.7 at n = 10⁴): a
  posterior 50 times hotter, whose λ̂ is a different number. Aligned: devinterp is
  given `nbeta = n/log n`, lambda-hat's default.
- **Estimate.** devinterp's `compute_llc` averages the minibatch loss of *every* step,
  burn-in included, and subtracts an initial loss averaged over 32 minibatches at w*.
  lambda-hat averages the full-batch loss L_n every `thin` steps after burn-in and
  subtracts L0 = L_n(w*). Aligned: devinterp's λ̂ in the table drops the burn-in steps
  and subtracts the full-batch L0 (a minibatch loss at w_t, on a batch drawn
  independently of w_t, is unbiased for L_n(w_t)); the last column is devinterp's own
  convention on the same run.
- **devinterp's own number.** Its last column is far off (+27% to +45%) mostly
  because of the initial loss: 32 minibatches are 3,200 of the 10⁴ samples, so
  nβ·(L0 over them − L0 over all) has a standard deviation of about
  nβ·sd(per-sample loss)/√3200, which is 1086 · (0.7, 2.2, 3.2)/57 ≈ 13, 42 and 61
  in λ̂ on these three targets, shared by every chain; the differences seen (+20, +8,
  +63) are of that size. Counting burn-in pulls the other way, a little. Its λ̂ here
  uses a random 3,200-sample subset of seed 100, not the DataLoader's first 32
  batches; both are subsets of that size.
- **Minibatches.** devinterp shuffles a DataLoader (without replacement, `drop_last`)
  and cycles the *first* epoch's order (`itertools.cycle` caches it), the same batches
  in every chain; lambda-hat draws b indices with replacement, anew for every step and
  chain. devinterp's chains are therefore correlated, and its ± (the spread of the
  per-chain λ̂ over √4) understates its error.
- **Chains.** devinterp runs them one after another in Python, one optimizer step per
  iteration; lambda-hat runs them together in one compiled `lax.scan`.
- **Precision.** devinterp in torch float32, as it is normally used (it also casts
  the losses it records to float32); lambda-hat in float32 and in float64 (its
  default).
- **Work.** Both take the same steps of the same batch size: steps·b/n gradient
  evaluations per chain. lambda-hat also evaluates the full-batch loss at every draw
  (forward only, counted as one gradient evaluation), 20% more here, included in its
  times; devinterp's recorded loss comes free with its gradient.
- **Threads.** One each: `torch.set_num_threads(1)` and lambda-hat's
  `runtime.limit_threads(1)`, as a one-thread pipeline job. With two torch threads
  devinterp ran several times slower on this shared machine (OpenMP threads waiting
  on each other).
- **Interface.** devinterp 2.x's top-level `sample`/`llc` take a token dataset (an
  integer `input_ids` column, per-token losses). For regression the script calls the
  loop `sample` runs for each chain, `slt.sampler.sample_single_chain`, with
  `SGMCMC.sgld` and the arguments `sample` passes it (seeds 100 + chain, batches
  matched across chains). This skips `sample`'s zarr writing of every step's
  per-sample losses and inputs, which would only add to devinterp's time.
"""


def write_table(path: Path, meta: dict) -> None:
    """The markdown table of a finished comparison."""
    rows, loads, targets = meta["rows"], meta["loads"], meta["targets"]
    versions = meta["versions"]
    lines = [
        "# lambda-hat vs devinterp: λ̂ and speed at matched settings",
        "",
        f"Machine: {meta['machine']}. Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + ".",
        f"Load average (1, 5, 15 min) at start: {loads[0]}; at end: {loads[-1]} "
        "(the machine was shared; see the note below). Timings are the minimum of "
        f"{meta['repeat']} run(s).",
        f"Generated by `benchmarks/vs_devinterp.py{' --tiny' if meta['tiny'] else ''}`"
        f" on {meta['date']}.",
        "",
        f"Every run: {N_CHAINS} chains from w*, γ = {GAMMA}, nβ = n/log n, batch size "
        f"{BATCH_SIZE}, the same step size ε and number of steps per target; "
        "one thread each:",
        "",
    ]
    for name, t in targets.items():
        s = t["sgld"]
        lines.append(
            f"- `{name}`: {json.dumps(t['spec'])}; ε = {s['step_size']:g}, "
            f"{s['n_steps']} steps per chain, {s['burn_in']} burn-in."
        )
    lines += [
        "",
        '"sampling" is the sampling loop alone (lambda-hat: compiled program, '
        'compile excluded and listed apart); "total" is the whole process: '
        "interpreter, imports, loading, compiling, sampling and diagnostics. "
        "\"speed-up\" is devinterp's sampling seconds over the method's, same target.",
        "",
        "| target | method | dtype | λ̂ ± se | truth | rel. error | sampling s | "
        "speed-up | compile s | total s | grad evals | grad evals/s (sampling) | "
        "peak MB | λ̂ devinterp convention |",
        "|" + " --- |" * 14,
    ]
    base = {
        r["target"]: r["sampling_s"] for r in rows if r["method"].startswith("devin")
    }
    for r in rows:
        conv = r.get("llc_devinterp_convention")
        ref = base.get(r["target"])
        steps = N_CHAINS * targets[r["target"]]["sgld"]["n_steps"]
        speed = f"{ref / r['sampling_s']:.0f}×" if ref else "—"
        lines.append(
            f"| {r['target']} | {r['method']} | {r['dtype']} | "
            f"{r['llc']:.2f} ± {r['llc_se']:.2f} | {r['truth']:.2f} ({r['kind']}) | "
            f"{100 * r['rel']:+.1f}% | {r['sampling_s']:.2f} | {speed} | "
            f"{r['compile_s']:.2f} | {r['total_s']:.1f} | {r['grad_evals']:.0f} | "
            f"{r['grad_evals'] / r['sampling_s']:.0f} | "
            f"{steps / r['sampling_s']:,.0f} | {r['maxrss_mb']:.0f} | "
            + (f"{conv:.2f}" if conv is not None else "—")
            + " |"
        )
    if meta.get("memory_steps"):
        lines += [
            "",
            f"Peak MB is the process's VmHWM, measured in a rerun of "
            f"{meta['memory_steps']} steps per chain (it does not grow with steps).",
        ]
    skipped = sorted(set(meta["skipped"]))
    if skipped:
        lines += [
            "",
            "Not run: " + "; ".join(skipped) + ". MFA and flow are being written on "
            "their own branches; once `lambda_hat/mfa.py` and `lambda_hat/flow.py` are "
            "on main this script runs them with their schema defaults (γ and chains "
            "matched; their step counts still to be matched to SGLD's budget in "
            "`lambda_hat_settings`).",
        ]
    lines += ["", CONVENTIONS]
    path.write_text("\n".join(lines))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
