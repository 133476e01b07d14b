"""The HTML report of an experiment, from ``llc.parquet`` and the runs' draws alone.

``build_report`` writes into its output directory:

- ``index.html``: the page a researcher reads, self-contained (images embedded);
- ``summary.csv``: the summary table, one row per target and method;
- ``llc_by_method.png`` and ``error_vs_cost.png``: the experiment-wide figures;
- ``running/<target>.png``: per target, the running λ̂ of every method;
- ``traces/<target>/<method>.png``: per target and method, the per-chain traces (loss
  for MCMC, ELBO for VI).

The PNG files are the figures of the page, kept as files so that Snakemake's own report
can file them by target and method.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import os
import platform
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lambda_hat import __version__, figures
from lambda_hat.io import atomic_path
from lambda_hat.tables import DRAWS, LLC, SORT_KEYS, read_table

INDEX = "index.html"
SUMMARY = "summary.csv"
LLC_FIGURE = "llc_by_method.png"
COST_FIGURE = "error_vs_cost.png"
RUNNING_DIR = "running"
TRACES_DIR = "traces"

VI_ALGOS = ("mfa", "flow")
RHAT_MAX = 1.01
ESS_MIN = 100
# At a minimum of the population loss, sampling noise alone leaves a gradient of norm
# about sqrt(tr H / n) at w*, which is sqrt(d / n) for unit curvature. A gradient
# several times that says w* is not a minimum, and λ̂ is then measured on a slope.
GRAD_NOISE_FACTOR = 3.0
# A VI fit is flagged when its final draws show KL(q‖π) above this many nats per unit
# of λ̂. The bound, not the importance ESS: in high dimension the weights degenerate
# even for a q whose λ̂ is right (linear regression at d = 1,000: ESS 1, bound 15 nats,
# λ̂ within 0.8%). Measured on the truth suite (benchmarks/accuracy.md): the VI fits on
# linear regressions (all within 0.8% of the exact λ̂, d up to 1,000) stay at or below
# 0.042; those on networks (40% to 720% off) are at 0.17 or above.
KL_PER_LLC_MAX = 0.1

# The draws columns the report uses; the first three must be there, the others may be
# absent from files written before they existed and are then read as null.
DRAW_COLUMNS = ("chain", "step", "grad_evals", "burn_in", "loss", "llc_running", "elbo")
REQUIRED_DRAW_COLUMNS = ("chain", "step", "grad_evals")


@dataclass(frozen=True)
class Flag:
    """A problem of a run or of a target × method, shown as a badge in its row.

    Attributes:
        key: what is wrong (``diverged``, ``rhat``, ``ess``, ``far_from_posterior``,
            ``negative``, ``grad_norm``, ``not_converged``, ``divergences``).
        label: the badge's short text.
        why: the longer explanation, shown on hover.
    """

    key: str
    label: str
    why: str


def read_draws(path: str | os.PathLike) -> pd.DataFrame:
    """The columns of a run's draws that the report uses, absent ones as null.

    Raises:
        ValueError: the file cannot be read or lacks chain, step or grad_evals.
    """
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"cannot read the draws file {path}: {err}") from err
    missing = [c for c in REQUIRED_DRAW_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"the draws file {path} lacks the columns {missing}")
    present = [c for c in DRAW_COLUMNS if c in names]
    schema = pa.schema([DRAWS.field(c) for c in present])
    df = pq.read_table(path, columns=present).cast(schema).to_pandas()
    for column in DRAW_COLUMNS:
        if column not in df:
            df[column] = False if column == "burn_in" else np.nan
    df["burn_in"] = df["burn_in"].fillna(False).astype(bool)
    for column in ("loss", "llc_running", "elbo"):
        df[column] = df[column].astype(float)
    return df


def draws_path(runs_dir: str | os.PathLike, run: pd.Series) -> Path:
    """``runs_dir/<target>/<method>/<rep>/draws.parquet`` of a summary row."""
    return (
        Path(runs_dir)
        / run["target"]
        / run["method"]
        / str(run["rep"])
        / ("draws.parquet")
    )


def is_vi(runs: pd.DataFrame) -> bool:
    """Whether runs come from variational inference: by algo, or by having reported
    convergence but neither ESS nor R̂."""
    if runs["algo"].isin(VI_ALGOS).any():
        return True
    return bool(
        runs["converged"].notna().any()
        and runs["ess"].isna().all()
        and runs["rhat"].isna().all()
    )


def _finite(value) -> bool:
    return value is not None and not pd.isna(value) and math.isfinite(float(value))


def grad_norm_large(grad_norm: float, *, n: int, d: int) -> bool:
    """Whether ‖∇L_n(w*)‖ exceeds GRAD_NOISE_FACTOR · sqrt(d / n)."""
    if not (_finite(grad_norm) and _finite(n) and _finite(d)) or n <= 0:
        return False
    return float(grad_norm) > GRAD_NOISE_FACTOR * math.sqrt(float(d) / float(n))


def flags(runs: pd.DataFrame, pooled_mean: float | None = None) -> list[Flag]:
    """The problems of one run, or of the replicates of one target × method.

    Args:
        runs: summary rows (``LLC`` columns) of one run or of one target × method.
        pooled_mean: the pooled λ̂, flagged too when negative.
    """
    out = []
    bad = runs[runs["status"] != "ok"]
    if len(bad):
        messages = "; ".join(m for m in bad["message"].fillna("") if m)
        out.append(Flag("diverged", "diverged", messages or "the run did not finish"))
    ok = runs[runs["status"] == "ok"]
    rhat = ok["rhat"].dropna()
    if len(rhat) and rhat.max() > RHAT_MAX:
        out.append(
            Flag(
                "rhat",
                f"R̂ {rhat.max():.3f}",
                f"split R̂ above {RHAT_MAX}: the chains have not mixed; "
                "run them longer or check the step size",
            )
        )
    ess = ok["ess"].dropna()
    if len(ess) and ess.min() < ESS_MIN:
        out.append(
            Flag(
                "ess",
                f"ESS {ess.min():.0f}",
                f"effective sample size below {ESS_MIN}: the standard error is "
                "unreliable; run the chains longer",
            )
        )
    far = _far_from_posterior(ok)
    if far is not None:
        out.append(far)
    means = list(ok["llc_mean"].dropna())
    if pooled_mean is not None and _finite(pooled_mean):
        means.append(pooled_mean)
    if any(m < 0 for m in means):
        out.append(
            Flag(
                "negative",
                "λ̂ < 0",
                "a negative λ̂: the chains found losses below L0, so w* is not a "
                "local minimum at this temperature",
            )
        )
    first = runs.iloc[0]
    if grad_norm_large(first["grad_norm_star"], n=first["n"], d=first["d"]):
        out.append(
            Flag(
                "grad_norm",
                f"‖∇L(w*)‖ {first['grad_norm_star']:.2g}",
                f"the gradient norm at w* exceeds {GRAD_NOISE_FACTOR:g}·sqrt(d/n) = "
                f"{GRAD_NOISE_FACTOR * math.sqrt(first['d'] / first['n']):.2g}: "
                "w* is not a minimum; train the target longer",
            )
        )
    if (runs["converged"] == False).any():  # noqa: E712 (null means not reported)
        out.append(
            Flag(
                "not_converged",
                "not converged",
                "the variational fit had not converged when it stopped",
            )
        )
    divergences = runs["divergences"].dropna()
    if len(divergences) and divergences.sum() > 0:
        out.append(
            Flag(
                "divergences",
                f"{int(divergences.sum())} divergent",
                "divergent transitions of HMC: the step size is too large for the "
                "curvature somewhere; the draws may be biased",
            )
        )
    return out


def kl_per_llc(kl_bound, llc) -> float:
    """The bound on KL(q‖π) per unit of λ̂ (λ̂ counted as at least 1); NaN if either
    is missing."""
    if not (_finite(kl_bound) and _finite(llc)):
        return math.nan
    return float(kl_bound) / max(float(llc), 1.0)


def _far_from_posterior(ok: pd.DataFrame) -> Flag | None:
    """The flag of VI runs whose q is demonstrably far from π, or None."""
    if "kl_bound" not in ok or ok["kl_bound"].isna().all():
        return None
    ratio = pd.Series(
        [kl_per_llc(k, m) for k, m in zip(ok["kl_bound"], ok["llc_mean"], strict=True)],
        index=ok.index,
    )
    if not (ratio > KL_PER_LLC_MAX).any():
        return None
    worst = ok.loc[ratio.idxmax()]
    why = (
        f"q's final draws, weighted by π/q, show KL(q‖π) ≥ {worst['kl_bound']:.3g} "
        f"nats, {ratio.max():.2f} per unit of λ̂ (above {KL_PER_LLC_MAX}): q is far "
        "from the posterior and its λ̂ is not to be trusted"
    )
    if _finite(worst.get("is_ess")):
        why += f"; they are worth {worst['is_ess']:.1f} draws of π"
    if _finite(worst.get("llc_is")):
        why += (
            f"; re-weighted to π, λ̂ is {worst['llc_is']:.3g}, as unreliable as that "
            "effective sample size says"
        )
    label = f"KL ≥ {worst['kl_bound']:.3g} ({ratio.max():.2f}/λ̂)"
    return Flag("far_from_posterior", label, why)


def _stat(values: pd.Series, how: str) -> float:
    """The ``how`` ("min" or "max") of the non-null values; NaN if there are none."""
    values = values.dropna().astype(float)
    return float(getattr(values, how)()) if len(values) else math.nan


def pool(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per target × method: replicates that finished pooled, spread shown.

    The pooled λ̂ is the mean of the replicates' λ̂ and its standard error
    sqrt(Σ SE²) / k for k independent replicates. ESS is the smallest and R̂ the
    largest of the replicates, so a bad replicate is not averaged away. Cost columns
    are per replicate (mean).
    """
    rows = []
    finished = runs[runs["status"] == "ok"]
    hmc_mean = finished[finished["algo"] == "hmc"].groupby("target")["llc_mean"].mean()
    for (target, method), g in runs.groupby(["target", "method"], sort=True):
        ok = g[g["status"] == "ok"]
        k = len(ok)
        mean = float(ok["llc_mean"].mean()) if k else math.nan
        se = float(np.sqrt(np.sum(ok["llc_se"] ** 2)) / k) if k else math.nan
        with_truth = g[g["truth"].notna()]
        truth = float(with_truth["truth"].iloc[0]) if len(with_truth) else math.nan
        kind = with_truth["truth_kind"].iloc[0] if len(with_truth) else None
        kind = None if pd.isna(kind) else kind
        truth_se = (
            float(with_truth["truth_se"].iloc[0]) if len(with_truth) else math.nan
        )
        rel = (mean - truth) / truth if _finite(truth) and truth != 0 else math.nan
        hmc = float(hmc_mean.get(target, math.nan))
        vs_hmc = (
            (mean - hmc) / hmc
            if _finite(hmc) and hmc != 0 and not (g["algo"] == "hmc").all()
            else math.nan
        )
        vi = is_vi(g)
        converged = g["converged"].dropna()
        # HMC runs are the reference of a target without a truth, not measured by it.
        is_reference = bool(
            (g["algo"] == "hmc").all()
            and g["truth"].isna().all()
            and (runs.loc[runs["target"] == target, "truth_kind"] == "reference").any()
        )
        rows.append(
            {
                "target": target,
                "method": method,
                "algo": ", ".join(sorted(g["algo"].unique())),
                "kind": "VI" if vi else "MCMC",
                "n_chains": _stat(g["n_chains"], "max"),
                "replicates": len(g),
                "finished": k,
                "llc_mean": mean,
                "llc_se": se,
                "llc_rep_sd": float(ok["llc_mean"].std(ddof=1)) if k > 1 else math.nan,
                "llc_rep_min": float(ok["llc_mean"].min()) if k else math.nan,
                "llc_rep_max": float(ok["llc_mean"].max()) if k else math.nan,
                "truth": truth,
                "truth_kind": kind,
                "truth_se": truth_se,
                "is_reference": is_reference,
                "rel_error": rel,
                "rel_error_hmc": vs_hmc,
                # A VI fit's ESS is that of its final draws weighted by π/q.
                "ess_min": _stat(ok["is_ess"] if vi else ok["ess"], "min"),
                "rhat_max": _stat(ok["rhat"], "max"),
                "mc_error": se if vi else math.nan,
                "converged": bool(converged.all()) if len(converged) else None,
                "grad_evals": float(g["grad_evals"].mean()),
                "wall_s": float(g["wall_s"].mean()),
                "compile_s": float(g["compile_s"].mean()),
                "status": "ok" if k == len(g) else f"{len(g) - k} of {len(g)} diverged",
                "flags": flags(g, mean),
            }
        )
    return pd.DataFrame(rows)


# Formatting for the page: every number a string, "–" where there is none.
DASH = "–"


def fmt(value, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec``, or a dash when it is null or not finite."""
    if not _finite(value):
        return DASH
    return format(float(value), spec)


def fmt_pm(mean, se) -> str:
    """``mean ± se`` with as many decimals as the standard error's two digits need."""
    if not _finite(mean):
        return DASH
    if not _finite(se) or se <= 0:
        return f"{float(mean):.4g}"
    decimals = min(max(1 - math.floor(math.log10(float(se))), 0), 8)
    return f"{float(mean):.{decimals}f} ± {float(se):.{decimals}f}"


def text(value) -> str:
    """A string cell: the value, or a dash when it is null."""
    return DASH if value is None or pd.isna(value) or value == "" else str(value)


def fmt_count(value) -> str:
    """A count such as gradient evaluations: 950, 24.0k, 1.20M."""
    if not _finite(value):
        return DASH
    value = float(value)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_seconds(value) -> str:
    if not _finite(value):
        return DASH
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _spread(row: pd.Series) -> str:
    if row["finished"] < 2:
        return DASH
    return (
        f"sd {fmt(row['llc_rep_sd'], '.2g')} "
        f"[{fmt(row['llc_rep_min'], '.3g')}, {fmt(row['llc_rep_max'], '.3g')}]"
    )


def summary_rows(pooled: pd.DataFrame) -> list[dict]:
    """The summary table's rows, formatted; a target's first row carries its rowspan."""
    rows = []
    for target, group in pooled.groupby("target", sort=True):
        for i, (_, r) in enumerate(group.iterrows()):
            keys = {f.key for f in r["flags"]}
            if "far_from_posterior" in keys:
                keys.add("ess")
            rows.append(
                {
                    "target": target,
                    "target_rowspan": len(group) if i == 0 else 0,
                    "method": r["method"],
                    "algo": r["algo"],
                    "kind": r["kind"],
                    "n_chains": fmt(r["n_chains"], ".0f"),
                    "replicates": f"{r['finished']}/{r['replicates']}"
                    if r["finished"] != r["replicates"]
                    else str(r["replicates"]),
                    "llc": fmt_pm(r["llc_mean"], r["llc_se"]),
                    "spread": _spread(r),
                    "truth": fmt_pm(r["truth"], r["truth_se"])
                    if r["truth_kind"] == "reference"
                    else fmt(r["truth"]),
                    "truth_kind": "is the reference"
                    if r["is_reference"]
                    else text(r["truth_kind"]),
                    "rel_error": fmt(r["rel_error"], "+.1%"),
                    "rel_error_hmc": fmt(r["rel_error_hmc"], "+.1%"),
                    "ess": fmt(r["ess_min"], ".0f"),
                    "rhat": fmt(r["rhat_max"], ".3f"),
                    "mc_error": fmt(r["mc_error"], ".2g"),
                    "grad_evals": fmt_count(r["grad_evals"]),
                    "wall_s": fmt_seconds(r["wall_s"]),
                    "status": r["status"],
                    "flags": r["flags"],
                    "bad": keys,
                    "problem": bool(keys),
                }
            )
    return rows


def run_rows(runs: pd.DataFrame) -> list[dict]:
    """The table of every run, formatted, with each run's own flags."""
    rows = []
    for _, r in runs.iterrows():
        single = r.to_frame().T.reset_index(drop=True)
        run_flags = flags(single)
        chains = [c for c in (r["llc_chains"] if r["llc_chains"] is not None else [])]
        chain_range = (
            f"{min(chains):.3g} … {max(chains):.3g}"
            if len(chains) and all(_finite(c) for c in chains)
            else DASH
        )
        converged = r["converged"]
        rows.append(
            {
                "target": r["target"],
                "method": r["method"],
                "rep": int(r["rep"]),
                "algo": r["algo"],
                "seed": int(r["seed"]),
                "llc": fmt_pm(r["llc_mean"], r["llc_se"]),
                "chains": chain_range,
                "ess": fmt(r["is_ess"] if is_vi(single) else r["ess"], ".0f"),
                "rhat": fmt(r["rhat"], ".3f"),
                "converged": DASH if pd.isna(converged) else str(bool(converged)),
                "grad_norm_star": fmt(r["grad_norm_star"], ".2g"),
                "grad_evals": fmt_count(r["grad_evals"]),
                "wall_s": fmt_seconds(r["wall_s"]),
                "compile_s": fmt_seconds(r["compile_s"]),
                "status": r["status"],
                "message": r["message"] or "",
                "flags": run_flags,
                "problem": bool(run_flags),
            }
        )
    return rows


def git_commit(where: str | os.PathLike | None = None) -> str | None:
    """The git commit of the checkout holding ``where`` (this package by default).

    Returns None, never raises, when git or the checkout is missing.
    """
    where = Path(where) if where is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return f"{head} with uncommitted changes" if changes else head


def machine() -> str:
    """Host name, system, CPUs, and Python and JAX versions of this machine."""
    try:
        jax_version = f", jax {version('jax')}"
    except PackageNotFoundError:
        jax_version = ""
    return (
        f"{platform.node() or 'unknown host'} ({platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}{jax_version})"
    )


def _now() -> dt.datetime:
    # SOURCE_DATE_EPOCH fixes the date, so that the same inputs give the same bytes.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC)
    return dt.datetime.now(dt.UTC)


def _png_width(data: bytes) -> int:
    # A PNG's width is the first field of its IHDR chunk, at byte 16.
    return struct.unpack(">I", data[16:20])[0]


def embedded(data: bytes, *, alt: str, caption: str = "") -> dict:
    """A figure for the template: base64 PNG, alt text, caption and display width.

    The display width is the figure's size in CSS pixels (96 per inch), so that the
    150 dpi image stays sharp on high-density screens.
    """
    width = round(_png_width(data) * 96 / figures.DPI)
    return {
        "src": "data:image/png;base64," + base64.b64encode(data).decode("ascii"),
        "alt": alt,
        "caption": caption,
        "width": width,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_tree(files: dict[str, bytes], dest: Path) -> None:
    """Replace directory ``dest`` by one holding ``files`` (relative path -> bytes).

    The new tree is written beside ``dest`` and swapped in, so figures of runs that no
    longer exist do not linger and a reader never sees half a tree.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    # mkdtemp makes the directory private; the report is meant to be read by others.
    tmp.chmod(0o777 & ~_umask())
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
        # The temporary file is private; give the file the usual permissions.
        Path(tmp).chmod(0o666 & ~_umask())


def _summary_csv(pooled: pd.DataFrame) -> str:
    table = pooled.drop(columns=["flags"]).copy()
    table["flags"] = [", ".join(f.key for f in fl) for fl in pooled["flags"]]
    return table.to_csv(index=False, float_format="%.6g")


def build_report(
    llc_path: str | os.PathLike,
    *,
    runs_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    title: str = "lambda-hat report",
    config_digest: str | None = None,
) -> Path:
    """Write the report into ``out_dir`` (see the module docstring); return index.html.

    Args:
        llc_path: the aggregate table, ``results/llc.parquet``.
        runs_dir: where the runs' draws are, ``<runs_dir>/<target>/<method>/<rep>/``.
        out_dir: the report directory.
        title: the experiment's name.
        config_digest: a digest of the experiment's config, shown in the header.

    Raises:
        ValueError: a table or a draws file is missing or unreadable.
    """
    runs = read_table(llc_path, LLC).to_pandas()
    if runs.empty:
        raise ValueError(f"{llc_path} holds no runs; there is nothing to report")
    runs = runs.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
    draws = {
        (r["target"], r["method"], int(r["rep"])): read_draws(draws_path(runs_dir, r))
        for _, r in runs.iterrows()
    }
    pooled = pool(runs)
    colours = figures.method_colours(runs["method"])
    out_dir = Path(out_dir)

    llc_png = figures.llc_by_method(runs, pooled, colours)
    cost_png = figures.error_vs_cost(runs, colours)
    running_files, trace_files, sections = {}, {}, []
    for target, t_runs in runs.groupby("target", sort=True):
        running_files[f"{target}.png"] = figures.running_llc(
            t_runs, draws, colours, title=f"{target}: running λ̂", width=6.4
        )
        section = {
            "target": target,
            "running": embedded(
                running_files[f"{target}.png"],
                alt=f"running λ̂ of every method on {target}",
            ),
            "traces": [],
        }
        for method, m_runs in t_runs.groupby("method", sort=True):
            what = "ELBO" if is_vi(m_runs) else "loss"
            rel = f"{target}/{method}.png"
            trace_files[rel] = figures.trace(
                m_runs,
                draws,
                colours[method],
                title=f"{target}, {method}: {what} per chain",
            )
            section["traces"].append(
                embedded(trace_files[rel], alt=f"{what} traces of {method} on {target}")
            )
        sections.append(section)

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lambda_hat", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    ok = runs["status"] == "ok"
    html = env.get_template("report.html.j2").render(
        title=title,
        created=_now().strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        commit=git_commit(),
        config_digest=config_digest,
        machine=machine(),
        n_targets=runs["target"].nunique(),
        n_methods=runs["method"].nunique(),
        n_runs=len(runs),
        n_failed=int((~ok).sum()),
        total_grad_evals=fmt_count(runs["grad_evals"].sum()),
        total_seconds=fmt_seconds(runs["wall_s"].sum()),
        rhat_max=RHAT_MAX,
        ess_min=ESS_MIN,
        kl_per_llc_max=KL_PER_LLC_MAX,
        grad_factor=GRAD_NOISE_FACTOR,
        summary=summary_rows(pooled),
        runs=run_rows(runs),
        llc_figure=embedded(llc_png, alt="λ̂ by method, one panel per target"),
        cost_figure=embedded(cost_png, alt="relative error against cost, every run"),
        sections=sections,
        colours=colours,
    )

    _write_bytes(out_dir / LLC_FIGURE, llc_png)
    _write_bytes(out_dir / COST_FIGURE, cost_png)
    _write_tree(running_files, out_dir / RUNNING_DIR)
    _write_tree(trace_files, out_dir / TRACES_DIR)
    _write_bytes(out_dir / SUMMARY, _summary_csv(pooled).encode("utf-8"))
    index = out_dir / INDEX
    _write_bytes(index, html.encode("utf-8"))
    return index
