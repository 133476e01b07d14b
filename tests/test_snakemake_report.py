"""The pipeline end to end on a tiny config, then Snakemake's own report of it.

One linreg target of d = 2 and n = 64 and a few hundred SGLD steps: the time goes into
starting the jobs (each imports JAX), not into sampling.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "name": "tiny",
    "seed": 0,
    "targets": {
        "lin": {"family": "linreg", "d_in": 2, "n": 64, "train": {"steps": 50}},
    },
    "methods": {
        "sgld": {
            "algo": "sgld",
            "n_chains": 2,
            "step_size": 1e-3,
            "n_steps": 200,
            "burn_in": 40,
            "thin": 10,
            "batch_size": 16,
        },
    },
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this checkout's Snakefile in ``workdir`` with the venv's ``lambda-hat``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
        + ["--directory", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory holding the tiny config and the finished pipeline's results."""
    workdir = tmp_path_factory.mktemp("tiny")
    # The Snakefile reads config/config.yaml relative to its working directory.
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    return workdir


def test_pipeline_writes_the_report(workdir):
    out = workdir / "results" / "report"
    soup = BeautifulSoup(
        (out / "index.html").read_text(encoding="utf-8"), "html.parser"
    )
    rows = soup.select("table.summary tbody tr")
    assert [(r["data-target"], r["data-method"]) for r in rows] == [("lin", "sgld")]
    assert soup.h1.get_text() == "tiny"
    assert (out / "running" / "lin.png").is_file()
    assert (out / "traces" / "lin" / "sgld.png").is_file()


def test_snakemake_report_files_outputs_by_target_and_method(workdir):
    run = snakemake(workdir, "--report", "report.zip")
    assert run.returncode == 0, run.stderr[-4000:]
    with zipfile.ZipFile(workdir / "report.zip") as zf:
        names = zf.namelist()
        html = zf.read("report/report.html").decode("utf-8")
    for name in (
        "index.html",
        "summary.csv",
        "llc_by_method.png",
        "error_vs_cost.png",
        "lin.png",
        "lin/sgld.png",
    ):
        assert any(
            n.startswith("report/data/raw/") and n.endswith("/" + name) for n in names
        ), name

    # The report page declares its categories as a JSON object in a script.
    match = re.search(r"var categories = (\{.*?\});\n", html)
    assert match, "no categories in Snakemake's report"
    categories = json.loads(match.group(1))
    assert set(categories) == {"Summary", "lin"}
    assert categories["lin"] == {
        "all methods": ["results/report/running/lin.png"],
        "sgld": ["results/report/traces/lin/sgld.png"],
    }
    summary = {Path(p).name for files in categories["Summary"].values() for p in files}
    assert summary == {
        "index.html",
        "summary.csv",
        "llc_by_method.png",
        "error_vs_cost.png",
    }
