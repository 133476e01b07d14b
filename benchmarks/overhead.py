"""Fixed cost of a pipeline job, and the default pipeline's wall time.

Usage (from the repository root):

    uv run python benchmarks/overhead.py            # writes benchmarks/overhead.md
    uv run python benchmarks/overhead.py --tiny     # skip the full pipeline runs

Part 1 runs each rule's command (``lambda-hat train|sample|aggregate|report``) by hand
in a scratch directory, on the default config's targets, with sampling cut to 200
steps so that what remains is the fixed cost. Each command runs three ways: without a
persistent compilation cache, with an empty one (cold) and again with the cache the
cold run filled (warm). Separately it times the interpreter alone, the imports each
command makes, and (in this process) the artifact reads and writes. Part 2 runs the
default pipeline (config/config.yaml) with Snakemake at ``--cores 1`` and ``--cores
2`` from a clean directory, then once more at ``--cores 2`` with the compilation cache
left warm by the previous run, and once with the cache turned off.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
FIXED_SGLD = {"n_steps": 200, "burn_in": 100, "thin": 10}
# Part 1 runs the jobs of these targets of the default config (each job of a rule
# has about the same fixed cost).
JOB_TARGETS = ("dln",)
IMPORTS = {
    "train": "import jax; jax.devices(); import lambda_hat.targets, lambda_hat.keys",
    "sample": "import jax; jax.devices(); import lambda_hat.sample, lambda_hat.sgld",
    "aggregate": "import lambda_hat.tables",
    "report": "import lambda_hat.report",
}


def run(cmd: list[str], *, cwd: Path, env: dict | None = None) -> float:
    """Wall seconds of a command, which must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})},
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed:\n{proc.stderr[-3000:]}")
    return wall


def best(cmd: list[str], *, cwd: Path, repeats: int = 3) -> float:
    return min(run(cmd, cwd=cwd) for _ in range(repeats))


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def rule_commands(work: Path, config: dict) -> list[tuple[str, str, list[str]]]:
    """(rule, job, command) for every job of the default config, in DAG order."""
    from lambda_hat.config import canonical

    seed = str(config["seed"])
    cmds = []
    targets = {k: config["targets"][k] for k in JOB_TARGETS}
    for name, spec in sorted(targets.items()):
        cmds.append(
            (
                "train",
                name,
                [
                    "lambda-hat",
                    "train",
                    "--name",
                    name,
                    "--seed",
                    seed,
                    "--settings",
                    canonical(spec),
                    "--out",
                    f"results/targets/{name}",
                ],
            )
        )
    summaries = []
    for name in sorted(targets):
        for method, spec in sorted(config["methods"].items()):
            spec = {**spec, **FIXED_SGLD}
            run_dir = f"results/runs/{name}/{method}/0"
            summaries.append(f"{run_dir}/summary.parquet")
            cmds.append(
                (
                    "sample",
                    f"{name}/{method}",
                    [
                        "lambda-hat",
                        "sample",
                        "--target-dir",
                        f"results/targets/{name}",
                        "--target",
                        name,
                        "--method",
                        method,
                        "--rep",
                        "0",
                        "--seed",
                        seed,
                        "--settings",
                        canonical(spec),
                        "--draws",
                        f"{run_dir}/draws.parquet",
                        "--summary",
                        f"{run_dir}/summary.parquet",
                    ],
                )
            )
    cmds.append(
        ("aggregate", "", ["lambda-hat", "aggregate", "--out", "results/llc.parquet"])
    )
    cmds[-1][2].extend(summaries)
    cmds.append(
        (
            "report",
            "",
            [
                "lambda-hat",
                "report",
                "--llc",
                "results/llc.parquet",
                "--runs-dir",
                "results/runs",
                "--out-dir",
                "results/report",
            ],
        )
    )
    return cmds


def filled(config: dict) -> dict:
    from snakemake.utils import validate

    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def compile_seconds(work: Path, job: str) -> float | None:
    import pandas as pd

    path = work / "results" / "runs" / job / "0" / "summary.parquet"
    return float(pd.read_parquet(path)["compile_s"].iloc[0]) if path.exists() else None


def io_seconds(work: Path, config: dict) -> dict[str, float]:
    """Seconds of the artifact reads and writes of each rule, in this process."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import pyarrow.parquet as pq

    from lambda_hat.tables import aggregate, write_table
    from lambda_hat.targets import load_target, save_target

    out: dict[str, float] = {}
    name = JOB_TARGETS[0]
    t0 = time.perf_counter()
    target = load_target(work / "results" / "targets" / name)
    out["sample (read target)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    save_target(target, work / "io-scratch")
    out["train (write target)"] = time.perf_counter() - t0
    run_dir = work / "results" / "runs" / name / "sgld" / "0"
    draws = pq.read_table(run_dir / "draws.parquet")
    t0 = time.perf_counter()
    write_table(draws, work / "io-scratch" / "draws.parquet")
    out["sample (write draws)"] = time.perf_counter() - t0
    summaries = sorted(str(p) for p in (work / "results" / "runs").rglob("summary.*"))
    t0 = time.perf_counter()
    write_table(aggregate(summaries), work / "io-scratch" / "llc.parquet")
    out["aggregate (read + write)"] = time.perf_counter() - t0
    return out


def part1(tiny: bool) -> tuple[list[dict], dict, dict]:
    config = filled(default_config())
    rows = []
    base = Path(tempfile.mkdtemp(prefix="lh-overhead-"))
    python = sys.executable
    interp = best([python, "-c", "pass"], cwd=base)
    imports = {
        rule: best([python, "-c", code], cwd=base) - interp
        for rule, code in IMPORTS.items()
    }
    cache = base / "jax-cache"
    variants = [
        ("off", {"LAMBDA_HAT_COMPILATION_CACHE": ""}),
        ("cold", {"LAMBDA_HAT_COMPILATION_CACHE": str(cache)}),
        ("warm", {"LAMBDA_HAT_COMPILATION_CACHE": str(cache)}),
    ]
    walls: dict[tuple[str, str], dict[str, float]] = {}
    compiles: dict[tuple[str, str], dict[str, float | None]] = {}
    for variant, env in variants:
        work = base / variant
        work.mkdir()
        # One thread per job, as the pipeline's rules ask.
        env = {**env, "OMP_NUM_THREADS": "1"}
        for rule, job, cmd in rule_commands(work, config):
            if variant != "off" and rule in ("aggregate", "report"):
                # These import no JAX: the cache cannot matter; one run is enough.
                walls[(rule, job)][variant] = walls[(rule, job)]["off"]
                continue
            walls.setdefault((rule, job), {})[variant] = run(cmd, cwd=work, env=env)
            if rule == "sample":
                compiles.setdefault((rule, job), {})[variant] = compile_seconds(
                    work, job
                )
            print(rule, job, variant, walls[(rule, job)][variant], file=sys.stderr)
    io = io_seconds(base / "off", config)
    for (rule, job), w in walls.items():
        c = compiles.get((rule, job), {})
        compiled = {f"compile_{k}": v for k, v in c.items()}
        rows.append({"rule": rule, "job": job, **w, **compiled})
    shutil.rmtree(base, ignore_errors=True)
    return rows, {"interpreter": interp, **imports}, io


def pipeline(cores: int, work: Path, *, cache: bool = True, forceall: bool = False):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        "--cores",
        str(cores),
    ]
    if not cache:
        cmd += ["--config", "compilation_cache=null"]
    if forceall:
        cmd += ["--forceall"]
    return run(cmd, cwd=work)


def part2(every: bool) -> list[tuple[str, float]]:
    out = []
    base = Path(tempfile.mkdtemp(prefix="lh-pipeline-"))
    for cores in (1, 2):
        work = base / f"cores{cores}"
        work.mkdir()
        wall = pipeline(cores, work)
        out.append((f"`--cores {cores}`, empty compilation cache", wall))
        print(out[-1], file=sys.stderr)
    if not every:
        shutil.rmtree(base, ignore_errors=True)
        return out
    wall = pipeline(2, base / "cores2", forceall=True)
    out.append(("`--cores 2 --forceall`, compilation cache warm from above", wall))
    print(out[-1], file=sys.stderr)
    work = base / "nocache"
    work.mkdir()
    wall = pipeline(2, work, cache=False)
    out.append(("`--cores 2`, `compilation_cache: null`", wall))
    print(out[-1], file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="skip the pipeline runs")
    p.add_argument("--out", default=str(HERE / "overhead.md"))
    p.add_argument(
        "--every-pipeline",
        action="store_true",
        help="also rerun the pipeline with a warm cache and with the cache off",
    )
    args = p.parse_args()
    load_start = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    rows, fixed, io = part1(args.tiny)
    pipe = [] if args.tiny else part2(args.every_pipeline)
    load_end = ", ".join(f"{v:.2f}" for v in os.getloadavg())

    import jax

    lines = [
        "# Per-job fixed cost and pipeline wall time",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, jax {jax.__version__}.",
        f"Load average (1, 5, 15 min) at start: {load_start}; at end: {load_end}.",
        f"Generated by `benchmarks/overhead.py{' --tiny' if args.tiny else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "## Parts of a job's fixed cost",
        "",
        "| part | seconds |",
        "| --- | --- |",
        f"| Python interpreter start | {fixed['interpreter']:.2f} |",
    ]
    for rule in IMPORTS:
        lines.append(f"| imports of `lambda-hat {rule}` | {fixed[rule]:.2f} |")
    for what, sec in io.items():
        lines.append(f"| artifact I/O: {what} | {sec:.3f} |")
    lines += [
        "",
        f"## Jobs for the default config's {', '.join(JOB_TARGETS)} target, sampling "
        f"cut to {FIXED_SGLD['n_steps']} steps",
        "",
        "Wall seconds of the command, one XLA thread; compile seconds as the sample "
        "job records them.",
        "",
        "| rule | job | no cache | cache cold | cache warm | compile s (no cache) | "
        "compile s (warm) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c_off, c_warm = r.get("compile_off"), r.get("compile_warm")
        lines.append(
            f"| {r['rule']} | {r['job'] or '—'} | {r['off']:.2f} | {r['cold']:.2f} | "
            f"{r['warm']:.2f} | "
            + (f"{c_off:.2f}" if c_off is not None else "—")
            + " | "
            + (f"{c_warm:.2f}" if c_warm is not None else "—")
            + " |"
        )
    if pipe:
        lines += [
            "",
            "## The default pipeline (config/config.yaml), Snakemake",
            "",
            "| run | wall s |",
            "| --- | --- |",
        ]
        lines += [f"| {what} | {wall:.1f} |" for what, wall in pipe]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
