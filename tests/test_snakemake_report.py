"""The pipeline's report on the tiny config, then Snakemake's own report of it."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from snakemake_runs import copy_run, finished_run, snakemake

TARGETS = ["dln", "linreg"]
METHODS = ["sgld", "sgld_small"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A private copy of the finished tiny run (Snakemake's report writes into it)."""
    finished = finished_run(tmp_path_factory.getbasetemp())
    return copy_run(finished, tmp_path_factory.mktemp("report") / "project")


def test_pipeline_writes_the_report(workdir):
    out = workdir / "results" / "report"
    soup = BeautifulSoup(
        (out / "index.html").read_text(encoding="utf-8"), "html.parser"
    )
    rows = soup.select("table.summary tbody tr")
    assert [(r["data-target"], r["data-method"]) for r in rows] == [
        (t, m) for t in TARGETS for m in METHODS
    ]
    assert soup.h1.get_text() == "tiny"
    for target in TARGETS:
        assert (out / "running" / f"{target}.png").is_file()
        for method in METHODS:
            assert (out / "traces" / target / f"{method}.png").is_file()


def test_snakemake_report_files_outputs_by_target_and_method(workdir):
    snakemake(workdir, "--report", "report.zip")
    with zipfile.ZipFile(workdir / "report.zip") as zf:
        names = zf.namelist()
        html = zf.read("report/report.html").decode("utf-8")
    for name in (
        "index.html",
        "summary.csv",
        "llc_by_method.png",
        "error_vs_cost.png",
        "linreg.png",
        "linreg/sgld.png",
    ):
        assert any(
            n.startswith("report/data/raw/") and n.endswith("/" + name) for n in names
        ), name

    # The report page declares its categories as a JSON object in a script.
    match = re.search(r"var categories = (\{.*?\});\n", html)
    assert match, "no categories in Snakemake's report"
    categories = json.loads(match.group(1))
    assert set(categories) == {"Summary", *TARGETS}
    assert categories["linreg"] == {
        "all methods": ["results/report/running/linreg.png"],
        "sgld": ["results/report/traces/linreg/sgld.png"],
        "sgld_small": ["results/report/traces/linreg/sgld_small.png"],
    }
    summary = {Path(p).name for files in categories["Summary"].values() for p in files}
    assert summary == {
        "index.html",
        "summary.csv",
        "llc_by_method.png",
        "error_vs_cost.png",
    }
