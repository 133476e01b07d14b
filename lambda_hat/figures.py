"""The report's figures: one matplotlib style, one fixed colour per method.

Every function takes the runs' summary rows (``LLC`` columns, as a pandas DataFrame)
and, where it draws traces, the draws of those runs, and returns a closed figure's PNG
bytes. Nothing here reads or writes files.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# Okabe and Ito's colour-blind safe palette (yellow left out: it vanishes on white),
# then matplotlib's tab10 for experiments with more methods than that.
PALETTE = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#000000",
    *plt.get_cmap("tab10").colors,
]
TARGET_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
TRUTH_COLOUR = "#333333"
PROBLEM_COLOUR = "#C62828"
LLC = r"$\hat\lambda$"

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "lines.linewidth": 1.2,
    "figure.facecolor": "white",
    "figure.constrained_layout.use": True,
    "savefig.facecolor": "white",
}
DPI = 150
# Lines longer than this are thinned before plotting; the eye cannot tell more points
# apart and a sweep's long chains would slow the report down.
MAX_POINTS = 2000


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """A fixed colour for each method name, in sorted order, the same in every plot."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(set(methods)))}


def target_markers(targets: Iterable[str]) -> dict[str, str]:
    """A fixed marker for each target name, in sorted order."""
    names = sorted(set(targets))
    return {t: TARGET_MARKERS[i % len(TARGET_MARKERS)] for i, t in enumerate(names)}


def styled(draw: Callable[..., bytes]) -> Callable[..., bytes]:
    """Run a figure function under STYLE: rcParams apply when an artist is made."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _figure(ncols: int = 1, nrows: int = 1, *, width: float, height: float, **kw):
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)


def _finite(value) -> bool:
    return value is not None and not pd.isna(value) and math.isfinite(float(value))


def _shades(colour: str, n: int) -> list:
    """``n`` shades of ``colour``, from dark to light, to tell chains apart."""
    rgb = np.array(mcolors.to_rgb(colour))
    if n == 1:
        return [tuple(rgb)]
    out = []
    for t in np.linspace(-0.45, 0.45, n):
        mix = np.zeros(3) if t < 0 else np.ones(3)
        out.append(tuple((1 - abs(t)) * rgb + abs(t) * mix))
    return out


def _thin_linear(n: int) -> np.ndarray:
    """Indices of at most MAX_POINTS evenly spaced points out of ``n``."""
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_POINTS).round().astype(int))


def _thin_log(n: int) -> np.ndarray:
    """Indices of at most MAX_POINTS points out of ``n``, even on a log axis."""
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.geomspace(1, n, MAX_POINTS).round().astype(int) - 1)


def _robust_limits(values: list[np.ndarray], include: Iterable[float] = ()):
    """y limits that show the bulk of ``values`` and every value in ``include``.

    The first tenth of each line is left out: running means and optimisers start far
    from where they settle, and that start would squash the rest.
    """
    tails = [v[len(v) // 10 :] for v in values if len(v)]
    tails = [v[np.isfinite(v)] for v in tails]
    bulk = np.concatenate(tails) if tails else np.array([])
    extra = [float(x) for x in include if _finite(x)]
    if not bulk.size and not extra:
        return None
    lo_hi = list(np.quantile(bulk, [0.005, 0.995])) if bulk.size else []
    lo, hi = min(lo_hi + extra), max(lo_hi + extra)
    pad = 0.12 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return lo - pad, hi + pad


def _truth_line(ax, run: pd.Series | None, *, label: bool = True) -> None:
    """The truth or reference as a dashed line; a reference gets a band of ± 2 SE."""
    if run is None or not _finite(run.get("truth")):
        return
    truth = float(run["truth"])
    kind = run.get("truth_kind") or "truth"
    ax.axhline(
        truth,
        color=TRUTH_COLOUR,
        ls="--",
        lw=1,
        label=f"{kind} {truth:.4g}" if label else None,
        zorder=1,
    )
    if _finite(run.get("truth_se")):
        se = float(run["truth_se"])
        ax.axhspan(truth - 2 * se, truth + 2 * se, color=TRUTH_COLOUR, alpha=0.08)


def _truth_text(run: pd.Series, *, se: bool = True) -> str:
    """'exact 4.967', 'aoyagi 9' or 'reference 4.99 ± 0.03' (without SE: no ± part)."""
    text = f"{run['truth_kind'] or 'truth'} {float(run['truth']):.4g}"
    if se and _finite(run.get("truth_se")):
        text += f" ± {float(run['truth_se']):.2g}"
    return text


def _first_truth(runs: pd.DataFrame) -> pd.Series | None:
    has = runs[runs["truth"].notna()]
    return has.iloc[0] if len(has) else None


class _PlainLogFormatter(mticker.LogFormatterSciNotation):
    """Log-axis tick labels as plain numbers (300, 2k, 1.5M) rather than powers of ten.

    The parent decides which ticks get a label (minor ticks only on short ranges).
    """

    def __call__(self, x, pos=None):
        return _plain(x) if super().__call__(x, pos) else ""


def _plain(x: float, pos=None) -> str:
    """A tick label such as 0.01, 300, 2k, 1.5M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:g}{suffix}"
    return f"{x:g}"


def _log_axis(ax, which: str) -> None:
    """Log scale with plain tick labels on the ``which`` ("x" or "y") axis of ``ax``."""
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(_PlainLogFormatter())
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))


def _message(ax, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666"
    )
    ax.set_xticks([])
    ax.set_yticks([])


@styled
def llc_by_method(
    runs: pd.DataFrame, pooled: pd.DataFrame, colours: Mapping[str, str]
) -> bytes:
    """λ̂ of every method, one panel per target, with the truth or reference line.

    Args:
        runs: one row per run (``LLC`` columns).
        pooled: one row per target and method with ``llc_mean`` and ``llc_se`` pooled
            over the replicates that finished.
        colours: method name -> colour.
    """
    targets = sorted(runs["target"].unique())
    ncols = min(3, len(targets))
    nrows = math.ceil(len(targets) / ncols)
    fig, axes = _figure(ncols, nrows, width=3.6 * ncols + 0.4, height=2.9 * nrows)
    for ax in axes.flat[len(targets) :]:
        ax.set_visible(False)
    for ax, target in zip(axes.flat, targets, strict=False):
        t_runs = runs[runs["target"] == target]
        t_pool = pooled[pooled["target"] == target].sort_values("method")
        methods = list(t_pool["method"])
        for x, (_, row) in enumerate(t_pool.iterrows()):
            colour = colours[row["method"]]
            reps = t_runs[t_runs["method"] == row["method"]]
            ok = reps[reps["status"] == "ok"]["llc_mean"].to_numpy(float)
            if len(ok) > 1:
                jitter = np.linspace(-0.12, 0.12, len(ok))
                ax.scatter(x + jitter, ok, s=12, color=colour, alpha=0.45, lw=0)
            if _finite(row["llc_mean"]):
                se = float(row["llc_se"]) if _finite(row["llc_se"]) else 0.0
                ax.errorbar(
                    x,
                    row["llc_mean"],
                    yerr=2 * se,
                    fmt="o",
                    ms=6,
                    color=colour,
                    capsize=4,
                    lw=1.5,
                    zorder=3,
                )
            else:
                ax.text(
                    x,
                    0.5,
                    "diverged",
                    color=PROBLEM_COLOUR,
                    ha="center",
                    rotation=90,
                    transform=ax.get_xaxis_transform(),
                )
        truth = _first_truth(t_runs)
        _truth_line(ax, truth, label=False)
        rotation = 30 if len(methods) > 3 else 0
        ax.set_xticks(range(len(methods)), methods, rotation=rotation)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        about = _truth_text(truth) if truth is not None else "no truth or reference"
        ax.set_title(f"{target}  ({about})")
        ax.set_ylabel(LLC)
    return png(fig)


@styled
def running_llc(
    runs: pd.DataFrame,
    draws: Mapping[tuple, pd.DataFrame],
    colours: Mapping[str, str],
    *,
    title: str,
    width: float = 5.4,
) -> bytes:
    """Running λ̂ against gradient evaluations per chain (log axis), colour by method.

    Thin lines are chains; the thick line is their mean. A run whose final λ̂ is not
    its running mean (VI: it reports neither ESS nor R̂, its trace comes from a few
    fixed draws and its estimate from fresh ones) also gets its final λ̂ ± 2 SE as a
    point at its cost; so does a run without a running λ̂.

    Args:
        runs: the runs to draw (``LLC`` columns), usually one target's.
        draws: (target, method, rep) -> that run's draws (``DRAWS`` columns).
        colours: method name -> colour.
    """
    fig, axes = _figure(width=width, height=3.2)
    ax = axes[0, 0]
    lines, points = [], []
    for _, run in runs.sort_values(["method", "rep"]).iterrows():
        colour = colours[run["method"]]
        d = draws[(run["target"], run["method"], int(run["rep"]))]
        d = d[d["llc_running"].notna()] if "llc_running" in d else d.iloc[:0]
        if len(d):
            by_chain = [c for _, c in d.groupby("chain", sort=True)]
            for c in by_chain:
                idx = _thin_log(len(c))
                y = c["llc_running"].to_numpy(float)
                ax.plot(
                    c["grad_evals"].to_numpy(float)[idx],
                    y[idx],
                    color=colour,
                    lw=0.6,
                    alpha=0.35,
                )
                lines.append(y)
            size = min(len(c) for c in by_chain)
            x = np.mean([c["grad_evals"].to_numpy(float)[:size] for c in by_chain], 0)
            y = np.mean([c["llc_running"].to_numpy(float)[:size] for c in by_chain], 0)
            idx = _thin_log(size)
            ax.plot(x[idx], y[idx], color=colour, lw=1.8)
        final_apart = not (_finite(run["ess"]) or _finite(run["rhat"]))
        if (final_apart or not len(d)) and _finite(run["llc_mean"]):
            n_chains = run["n_chains"] if _finite(run["n_chains"]) else 1
            cost = float(run["grad_evals"]) / max(int(n_chains), 1)
            se = float(run["llc_se"]) if _finite(run["llc_se"]) else 0.0
            ax.errorbar(
                cost,
                run["llc_mean"],
                yerr=2 * se,
                fmt="o",
                color=colour,
                mec="black",
                capsize=3,
                zorder=5,
            )
            points += [run["llc_mean"] - 2 * se, run["llc_mean"] + 2 * se]
    truth = _first_truth(runs)
    _truth_line(ax, truth, label=False)
    if not lines and not points:
        _message(ax, "no run finished with a running λ̂")
    else:
        _log_axis(ax, "x")
        include = points + ([truth["truth"]] if truth is not None else [])
        limits = _robust_limits(lines, include)
        if limits:
            ax.set_ylim(*limits)
    handles = [
        Line2D([], [], color=colours[m], lw=1.8, label=m)
        for m in sorted(runs["method"].unique())
    ]
    if truth is not None:
        handles.append(
            Line2D(
                [],
                [],
                color=TRUTH_COLOUR,
                ls="--",
                lw=1,
                label=_truth_text(truth, se=False),
            )
        )
    # Outside the axes: running means cross every corner of the plot.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlabel("gradient evaluations per chain")
    ax.set_ylabel(f"running {LLC}")
    ax.set_title(title)
    return png(fig)


def _burn_in_end(d: pd.DataFrame) -> float | None:
    burn = d[d["burn_in"].fillna(False).astype(bool)]
    return float(burn["step"].max()) if len(burn) else None


@styled
def trace(
    runs: pd.DataFrame,
    draws: Mapping[tuple, pd.DataFrame],
    colour: str,
    *,
    title: str,
    width: float = 5.4,
) -> bytes:
    """Per-chain traces of one method on one target, one panel per replicate.

    VI runs (draws with an ``elbo``) show the ELBO against the optimisation step; MCMC
    runs show L_n(w) − L0 against the step, with the burn-in shaded. The first
    non-finite value of a chain is marked with a red line.

    Args:
        runs: the replicates of one method on one target (``LLC`` columns).
        draws: (target, method, rep) -> that run's draws (``DRAWS`` columns).
        colour: the method's colour.
    """
    runs = runs.sort_values("rep")
    n = len(runs)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    # One row is as tall as a running λ̂ figure, so that they line up side by side.
    height = 3.2 if nrows == 1 else 0.4 + 2.6 * nrows
    fig, axes = _figure(ncols, nrows, width=width, height=height, sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for i, (_, run) in enumerate(runs.iterrows()):
        ax = axes.flat[i]
        d = draws[(run["target"], run["method"], int(run["rep"]))]
        is_vi = "elbo" in d and d["elbo"].notna().any()
        column = "elbo" if is_vi else "loss"
        chains = [c for _, c in d.groupby("chain", sort=True)]
        lines = []
        for c, shade in zip(chains, _shades(colour, len(chains)), strict=True):
            y = c[column].to_numpy(float)
            if not is_vi:
                y = y - float(run["L0"])
            step = c["step"].to_numpy(float)
            bad = ~np.isfinite(y)
            y = np.where(bad, np.nan, y)
            idx = _thin_linear(len(c))
            ax.plot(step[idx], y[idx], color=shade, lw=0.7, alpha=0.85)
            lines.append(y)
            if bad.any():
                ax.axvline(step[np.argmax(bad)], color=PROBLEM_COLOUR, lw=1)
        if not is_vi and len(d):
            end = _burn_in_end(d)
            if end is not None:
                ax.axvspan(0, end, color="#999999", alpha=0.15, lw=0)
        if not any(np.isfinite(v).any() for v in lines):
            _message(ax, f"no finite {column}")
        else:
            limits = _robust_limits(lines)
            if limits:
                ax.set_ylim(*limits)
        sub = f"rep {int(run['rep'])}"
        if run["status"] != "ok":
            sub += f" ({run['status']})"
        ax.set_title(sub if n > 1 else title, color=_status_colour(run["status"]))
        ax.set_xlabel("optimisation step" if is_vi else "step")
        if i % ncols == 0:
            ax.set_ylabel("ELBO" if is_vi else r"$L_n(w) - L_0$")
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(_plain))
    if n > 1:
        fig.suptitle(title, fontsize=10, fontweight="bold")
    return png(fig)


def _status_colour(status: str) -> str:
    return "black" if status == "ok" else PROBLEM_COLOUR


@styled
def error_vs_cost(runs: pd.DataFrame, colours: Mapping[str, str]) -> bytes:
    """|relative error| against gradient evaluations and against seconds, every run.

    Colour is the method, marker the target. Runs without a truth or reference, or
    that diverged, have no relative error and are left out.
    """
    markers = target_markers(runs["target"])
    fig, axes = _figure(2, width=10.6, height=3.6, sharey=True)
    have = runs[runs["rel_error"].notna() & (runs["rel_error"] != 0)]
    for ax, (column, label) in zip(
        axes[0],
        [("grad_evals", "gradient evaluations (all chains)"), ("wall_s", "seconds")],
        strict=True,
    ):
        if have.empty:
            _message(ax, "no run has a truth or reference to measure against")
            continue
        for _, run in have.iterrows():
            ax.scatter(
                run[column],
                abs(run["rel_error"]),
                marker=markers[run["target"]],
                color=colours[run["method"]],
                s=36,
                alpha=0.85,
                edgecolor="white",
                lw=0.5,
            )
        _log_axis(ax, "x")
        _log_axis(ax, "y")
        # Log-scale autoscaling puts the extreme points on the frame; leave room.
        ax.margins(0.08)
        ax.set_xlabel(label)
    axes[0, 0].set_ylabel("|relative error| of " + LLC)
    if not have.empty:
        method_handles = [
            Line2D([], [], ls="", marker="o", color=colours[m], label=m)
            for m in sorted(runs["method"].unique())
        ]
        target_handles = [
            Line2D([], [], ls="", marker=markers[t], color="#555", label=t)
            for t in sorted(runs["target"].unique())
        ]
        axes[0, 0].legend(handles=method_handles, title="method", loc="best")
        axes[0, 1].legend(handles=target_handles, title="target", loc="best")
    return png(fig)
