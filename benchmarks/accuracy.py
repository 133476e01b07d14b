"""How far each method lands from the truth, and what it costs: benchmarks/accuracy.md.

Reads the aggregate table of a run of the truth suite (config/truth.yaml) and writes
a markdown page: per method the median and worst relative error over the suite and
per family, the median cost in gradient evaluations and seconds, then one row per
target and method. Relative errors are signed, (λ̂ − truth)/truth, against the
table's truth (exact, Aoyagi's λ or the HMC reference); a second column measures
every method against HMC on the same target, which separates a method's own error
from the gap between the finite-n λ̂ and the asymptotic λ.

    uv run python benchmarks/accuracy.py results/llc.parquet [--out PATH] [--note TEXT]

The machine and package versions recorded are those of the process running this
script; run it where the suite ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGES = ("lambda-hat", "jax", "jaxlib", "blackjax", "equinox", "optax", "numpy")
HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def load(path: str | os.PathLike) -> pd.DataFrame:
    """The aggregate table, with each run's error against HMC on its target."""
    df = pd.read_parquet(path)
    ok = df["status"] == "ok"
    hmc = df[ok & (df["algo"] == "hmc")].groupby("target")["llc_mean"].mean()
    df["hmc_llc"] = df["target"].map(hmc)
    df["rel_error_hmc"] = (df["llc_mean"] - df["hmc_llc"]) / df["hmc_llc"]
    df.loc[df["algo"] == "hmc", "rel_error_hmc"] = np.nan
    df["abs_error"] = df["rel_error"].abs()
    return df


def _pct(x: float, signed: bool = True) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.1%}" if signed else f"{x:.1%}"


def _worst(errors: pd.Series) -> float:
    errors = errors.dropna()
    return float(errors.loc[errors.abs().idxmax()]) if len(errors) else float("nan")


def method_table(df: pd.DataFrame) -> list[str]:
    """One row per method: errors over the suite and per family, median cost."""
    families = sorted(df["family"].dropna().unique())
    head = (
        "| method | runs | diverged | median abs. error | worst error | "
        + " | ".join(f"median abs. error, {f}" for f in families)
        + " | median abs. error vs HMC | median grad. evals | median seconds |"
    )
    lines = [head, "|" + " --- |" * (9 + len(families) - 1)]
    for method, g in df.groupby("method", sort=True):
        ok = g[g["status"] == "ok"]
        per_family = [
            _pct(ok.loc[ok["family"] == f, "abs_error"].median(), signed=False)
            for f in families
        ]
        lines.append(
            f"| {method} | {len(g)} | {int((g['status'] != 'ok').sum())} | "
            f"{_pct(ok['abs_error'].median(), signed=False)} | "
            f"{_pct(_worst(ok['rel_error']))} | "
            + " | ".join(per_family)
            + f" | {_pct(ok['rel_error_hmc'].abs().median(), signed=False)} | "
            f"{g['grad_evals'].median():.3g} | {g['wall_s'].median():.1f} |"
        )
    return lines


def target_table(df: pd.DataFrame) -> list[str]:
    """One row per target and method."""
    lines = [
        "| target | family | d | truth | kind | method | λ̂ ± SE | rel. error | "
        "vs HMC | ESS | R̂ | divergences | KL(q‖π) ≥ | λ̂ re-weighted | "
        "grad. evals | seconds | status |",
        "|" + " --- |" * 17,
    ]
    for _, r in df.sort_values(["family", "d", "target", "method"]).iterrows():
        truth = "–" if pd.isna(r["truth"]) else f"{r['truth']:.4g}"
        if r["truth_kind"] == "reference" and pd.notna(r["truth_se"]):
            truth += f" ± {r['truth_se']:.2g}"
        kind = "–" if pd.isna(r["truth_kind"]) else r["truth_kind"]
        # A VI row's ESS is that of its final draws weighted by π/q (IS).
        vi = pd.notna(r.get("is_ess"))
        ess = r["is_ess"] if vi else r["ess"]
        ess = "–" if pd.isna(ess) else f"{ess:.0f}" + (" (IS)" if vi else "")
        kl = "–" if pd.isna(r.get("kl_bound")) else f"{r['kl_bound']:.2f}"
        llc_is = "–" if pd.isna(r.get("llc_is")) else f"{r['llc_is']:.4g}"
        rhat = "–" if pd.isna(r["rhat"]) else f"{r['rhat']:.3f}"
        div = "–" if pd.isna(r["divergences"]) else f"{int(r['divergences'])}"
        lines.append(
            f"| {r['target']} | {r['family']} | {r['d']} | {truth} | "
            f"{kind} | {r['method']} | "
            f"{r['llc_mean']:.4g} ± {r['llc_se']:.2g} | {_pct(r['rel_error'])} | "
            f"{_pct(r['rel_error_hmc'])} | {ess} | {rhat} | {div} | {kl} | "
            f"{llc_is} | {r['grad_evals']:.3g} | {r['wall_s']:.1f} | {r['status']} |"
        )
    return lines


def write(df: pd.DataFrame, out: Path, *, source: str, note: str | None) -> None:
    lines = [
        "# Accuracy against the truth",
        "",
        f"Written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by "
        f"`benchmarks/accuracy.py` from `{source}` ({len(df)} runs, "
        f"{df['target'].nunique()} targets, methods "
        f"{', '.join(sorted(df['method'].unique()))}).",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores. Versions: {versions()}.",
        "",
    ]
    if note:
        lines += [note.strip(), ""]
    lines += [
        "Relative error is (λ̂ − truth)/truth, signed; *abs.* is its size. Kinds:"
        " *exact* is the finite-n λ̂ of a linear regression, *aoyagi* the asymptotic"
        " λ of a deep linear network, *reference* the HMC estimate (± its standard"
        " error). *vs HMC* is (λ̂ − λ̂_HMC)/λ̂_HMC on the same target. Costs are per"
        " run, all chains together: gradient evaluations over n samples (adaptation,"
        " burn-in and evaluation included) and wall seconds (compilation included)."
        " For VI, ESS (IS) is that of the final draws of q weighted by π/q, KL(q‖π) ≥"
        " the importance-weighted bound on log Z minus the ELBO, and *re-weighted*"
        " λ̂ the self-normalized importance-sampling estimate (config/README.md).",
        "",
        "## Per method",
        "",
        *method_table(df),
        "",
        "## Per target",
        "",
        *target_table(df),
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("llc", help="the aggregate table, results/llc.parquet")
    p.add_argument("--out", default=str(HERE / "accuracy.md"), help="markdown to write")
    p.add_argument("--note", help="a paragraph to add under the header (markdown)")
    args = p.parse_args(argv)
    df = load(args.llc)
    if df.empty:
        print(f"{args.llc} has no runs", file=sys.stderr)
        return 1
    write(df, Path(args.out), source=args.llc, note=args.note)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
