"""The ``lambda-hat`` console script: one subcommand per pipeline step.

Every Snakemake rule calls one of these with the same arguments a person would type.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

log = logging.getLogger("lambda_hat")


def _settings(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--settings is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise SystemExit("--settings must be a JSON object")
    return value


def _setup_logging(log_path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )
    # JAX reports at INFO level that it found no TPU; that is not news to a user.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def _enable_x64() -> None:
    # Targets are float64 by default; float32 targets keep their own dtypes.
    import jax

    jax.config.update("jax_enable_x64", True)


def _configure_runtime(args: argparse.Namespace) -> None:
    """Threads, compilation cache and chain map, before any JAX computation."""
    from lambda_hat import runtime

    threads = runtime.limit_threads(args.threads)
    runtime.enable_compilation_cache(args.compilation_cache)
    runtime.set_chain_map(args.chain_map)
    log.info(
        "XLA CPU threads %d, compilation cache %s, chains under %s",
        threads,
        args.compilation_cache or "off",
        args.chain_map,
    )


def _env_threads() -> int | None:
    # Snakemake sets OMP_NUM_THREADS to the rule's `threads` for every shell job.
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def cmd_train(args: argparse.Namespace) -> None:
    _enable_x64()
    from lambda_hat import keys
    from lambda_hat.config import check_target
    from lambda_hat.targets import save_target, train_target

    settings = _settings(args.settings)
    check_target(args.name, settings)
    key = keys.job_key(args.seed, "train_target", {"target": args.name})
    target = train_target(args.name, settings, key=key, progress=log.info)
    target.meta["key"] = keys.key_record(
        args.seed, "train_target", {"target": args.name}
    )
    save_target(target, args.out)
    log.info(
        "wrote %s (L0 = %.6g, |grad L_n(w*)| = %.3g)",
        args.out,
        target.meta["L0"],
        target.meta["grad_norm"],
    )


def cmd_sample(args: argparse.Namespace) -> None:
    _enable_x64()
    from lambda_hat.config import check_method
    from lambda_hat.sample import run_method, write_run

    settings = _settings(args.settings)
    check_method(args.method, settings)
    row, out = run_method(
        args.target_dir,
        target=args.target,
        method=args.method,
        rep=args.rep,
        seed=args.seed,
        settings=settings,
        progress=log.info,
    )
    write_run(row, out, Path(args.draws), Path(args.summary))
    log.info("wrote %s and %s", args.draws, args.summary)


def cmd_aggregate(args: argparse.Namespace) -> None:
    from lambda_hat.tables import aggregate, write_table

    table = aggregate(sorted(args.summaries))
    write_table(table, args.out)
    log.info("wrote %s (%d runs)", args.out, table.num_rows)


def cmd_report(args: argparse.Namespace) -> None:
    from lambda_hat.report import build_report

    index = build_report(
        args.llc,
        runs_dir=args.runs_dir,
        out_dir=args.out_dir,
        title=args.title,
        config_digest=args.config_digest,
    )
    log.info("wrote %s", index)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lambda-hat", description="Estimate the local learning coefficient λ̂."
    )
    p.add_argument("--log", help="also write the log to this file")
    p.add_argument(
        "--threads",
        type=int,
        default=_env_threads(),
        help="most CPU threads for XLA (default: $OMP_NUM_THREADS, else all CPUs)",
    )
    p.add_argument(
        "--compilation-cache",
        default=os.environ.get("LAMBDA_HAT_COMPILATION_CACHE") or None,
        help="directory of JAX's persistent compilation cache "
        "(default: $LAMBDA_HAT_COMPILATION_CACHE, else none)",
    )
    p.add_argument(
        "--chain-map",
        choices=("auto", "vmap", "map"),
        default=os.environ.get("LAMBDA_HAT_CHAIN_MAP") or "auto",
        help="run chains under jax.vmap or jax.lax.map "
        "(default: $LAMBDA_HAT_CHAIN_MAP, else auto)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="Stage A: train one target")
    t.add_argument("--name", required=True, help="the target's name in the config")
    t.add_argument("--seed", type=int, required=True, help="the config's root seed")
    t.add_argument("--settings", required=True, help="the target's settings, JSON")
    t.add_argument("--out", required=True, help="artifact directory to write")
    t.set_defaults(func=cmd_train, uses_jax=True)

    s = sub.add_parser("sample", help="Stage B: run one method on one target")
    s.add_argument(
        "--target-dir", required=True, help="the target's artifact directory"
    )
    s.add_argument("--target", required=True, help="the target's name")
    s.add_argument("--method", required=True, help="the method's name in the config")
    s.add_argument("--rep", type=int, required=True, help="replicate index")
    s.add_argument("--seed", type=int, required=True, help="the config's root seed")
    s.add_argument("--settings", required=True, help="the method's settings, JSON")
    s.add_argument("--draws", required=True, help="draws.parquet to write")
    s.add_argument("--summary", required=True, help="summary.parquet to write")
    s.set_defaults(func=cmd_sample, uses_jax=True)

    a = sub.add_parser("aggregate", help="join every run's summary row")
    a.add_argument("--out", required=True, help="results/llc.parquet")
    a.add_argument("summaries", nargs="*", help="summary.parquet files, any order")
    a.set_defaults(func=cmd_aggregate)

    r = sub.add_parser("report", help="write the HTML report")
    r.add_argument("--llc", required=True, help="the aggregate table")
    r.add_argument("--runs-dir", required=True, help="directory of the runs' draws")
    r.add_argument("--out-dir", required=True, help="report directory to write")
    r.add_argument("--title", default="lambda-hat report", help="experiment name")
    r.add_argument(
        "--config-digest", help="digest of the experiment's config, for the header"
    )
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Several jobs may share a GPU: JAX then takes GPU memory as it needs it instead of
    # most of the device up front. A value the user set wins (README.md, "GPUs").
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    args = parser().parse_args(argv)
    _setup_logging(args.log)
    log.info("lambda-hat %s", shlex.join(argv))
    try:
        if getattr(args, "uses_jax", False):
            _configure_runtime(args)
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
