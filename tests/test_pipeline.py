"""The whole pipeline through Snakemake on a tiny config, and bad configs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, configfile: Path = TINY):
    """Run snakemake on the repository's Snakefile in ``workdir``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workdir where the tiny config ran to completion."""
    workdir = tmp_path_factory.mktemp("tiny")
    proc = snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_outputs_exist_and_table_has_a_row_per_run(finished):
    llc = pd.read_parquet(finished / "results" / "llc.parquet")
    assert sorted(zip(llc["target"], llc["method"], strict=True)) == [
        ("dln", "sgld"),
        ("lr", "sgld"),
    ]
    assert set(llc["truth_kind"]) == {"exact", "aoyagi"}
    assert (llc["status"] == "ok").all()
    assert llc["rel_error"].notna().all()
    assert (llc["seed"] == 11).all()
    html = (finished / "results" / "report" / "index.html").read_text()
    assert "lr" in html and "dln" in html and "data:image/png;base64," in html


def test_second_run_has_nothing_to_do(finished):
    proc = snakemake(finished, "-n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_logs_have_progress(finished):
    text = (finished / "logs" / "sample" / "lr" / "sgld" / "0.log").read_text()
    assert "draw 60/60" in text
    assert "λ̂ =" in text


def test_hand_run_gives_the_same_draws(finished, tmp_path):
    # The first log line is the exact command; run it again into other paths.
    log = (finished / "logs" / "sample" / "dln" / "sgld" / "0.log").read_text()
    command = log.splitlines()[0].split(" INFO lambda-hat ", 1)[1]
    args = shlex.split(command)
    draws, summary = tmp_path / "draws.parquet", tmp_path / "summary.parquet"
    args[args.index("--draws") + 1] = str(draws)
    args[args.index("--summary") + 1] = str(summary)
    lambda_hat = shutil.which("lambda-hat", path=str(Path(sys.executable).parent))
    subprocess.run([lambda_hat, *args], cwd=finished, check=True, capture_output=True)
    original = finished / "results" / "runs" / "dln" / "sgld" / "0" / "draws.parquet"
    assert draws.read_bytes() == original.read_bytes()


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda c: c["methods"]["sgld"].update(stepsize=1e-3), "stepsize"),
        (lambda c: c["targets"]["lr"].update(widths=[3, 3]), "widths"),
        (lambda c: c.update(seed=2**32), "seed"),
        (lambda c: c["targets"].update({"bad/name": c["targets"]["lr"]}), "bad/name"),
        (lambda c: c["targets"]["dln"].update(rank=5), "targets.dln.rank"),
        (lambda c: c["methods"]["sgld"].update(burn_in=10_000), "methods.sgld.burn_in"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, edit, expected):
    config = yaml.safe_load(TINY.read_text())
    edit(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", configfile=bad)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
