"""The HTML report: a results table and plots, built from llc.parquet and the draws."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import math
import os
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lambda_hat import __version__  # noqa: E402
from lambda_hat.io import atomic_path  # noqa: E402
from lambda_hat.tables import DRAWS, LLC, read_table  # noqa: E402

COLUMNS = [
    ("target", "target", True),
    ("method", "method", True),
    ("llc", "λ̂ ± SE", False),
    ("truth", "truth", False),
    ("truth_kind", "kind", True),
    ("rel_error", "rel. error", False),
    ("ess", "ESS", False),
    ("rhat", "R̂", False),
    ("grad_evals", "grad. evals", False),
    ("wall_s", "seconds", False),
    ("status", "status", True),
]


def _fmt(value, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _row_cells(r: pd.Series) -> dict[str, str]:
    return {
        "target": r["target"],
        "method": f"{r['method']} (rep {r['rep']})",
        "llc": f"{_fmt(r['llc_mean'])} ± {_fmt(r['llc_se'], '.2g')}",
        "truth": _fmt(r["truth"]),
        "truth_kind": r["truth_kind"] or "–",
        "rel_error": _fmt(r["rel_error"], "+.1%"),
        "ess": _fmt(r["ess"], ".0f"),
        "rhat": _fmt(r["rhat"], ".3f"),
        "grad_evals": _fmt(r["grad_evals"], ".3g"),
        "wall_s": _fmt(r["wall_s"], ".1f"),
        "status": r["status"] if not r["message"] else f"{r['status']}: {r['message']}",
    }


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def running_llc_figure(target: str, runs: pd.DataFrame, runs_dir: Path) -> dict:
    """Running λ̂ of each chain against gradient evaluations, one colour per method."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    truth = None
    for i, (_, run) in enumerate(runs.iterrows()):
        path = runs_dir / target / run["method"] / str(run["rep"]) / "draws.parquet"
        draws = read_table(path, DRAWS).to_pandas()
        colour = colours[i % len(colours)]
        for c, chain in draws.groupby("chain"):
            label = f"{run['method']} rep {run['rep']}" if c == 0 else None
            ax.plot(
                chain["grad_evals"],
                chain["llc_running"],
                color=colour,
                lw=1,
                label=label,
            )
        if run["truth"] is not None and not math.isnan(run["truth"]):
            truth = run["truth"]
    if truth is not None:
        ax.axhline(truth, color="black", ls="--", lw=1, label="truth")
    ax.set_xlabel("gradient evaluations (per chain)")
    ax.set_ylabel("running λ̂")
    ax.set_title(target)
    ax.legend(fontsize=8)
    return {
        "png": _png(fig),
        "alt": f"running λ̂ of {target}",
        "caption": f"{target}: running λ̂ of each chain after burn-in; dashed: truth.",
    }


def build_report(
    llc_path: str | os.PathLike,
    *,
    runs_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    title: str = "lambda-hat report",
    config_path: str | os.PathLike | None = None,
) -> Path:
    """Write ``out_dir/index.html``, self-contained, and return its path."""
    df = read_table(llc_path, LLC).to_pandas()
    runs_dir = Path(runs_dir)
    rows = [
        {"cells": _row_cells(r), "flags": r["status"] != "ok"} for _, r in df.iterrows()
    ]
    figures = [
        running_llc_figure(target, runs, runs_dir)
        for target, runs in df.groupby("target", sort=True)
    ]
    digest = None
    if config_path:
        digest = hashlib.sha256(Path(config_path).read_bytes()).hexdigest()[:12]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lambda_hat", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    html = env.get_template("report.html.j2").render(
        title=title,
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        config_digest=digest,
        columns=[{"key": k, "label": lab, "text": t} for k, lab, t in COLUMNS],
        rows=rows,
        figures=figures,
    )
    out = Path(out_dir) / "index.html"
    with atomic_path(out) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    return out
