"""Driving the workflow with Snakemake on the tiny test config, in temporary copies.

A run directory is a copy of the project's workflow (Snakefile, workflow/, envs/) and
of the lambda_hat sources, with ``tests/data/tiny.yaml`` as its ``config/config.yaml``.
Snakemake puts the Snakefile's folder first on ``sys.path``, so the DAG (and the
code digest of each rule) is built from the copy's lambda_hat, which a test may edit;
the jobs themselves run the installed ``lambda-hat``. One complete run is made per
session and copied for each test that needs one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
PROJECT = ("Snakefile", "workflow", "envs", "lambda_hat")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake", "results", "logs")

_finished: dict[str, Path] = {}

# Stand-ins for conda and apptainer that only answer the checks Snakemake makes
# before a dry run with `--sdm conda` or `--sdm apptainer`.
STUB_CONDA = """#!/bin/sh
case "$*" in
  "info --json") printf '{"conda_prefix": "%s", "platform": "linux-64"}\\n' "$0";;
  "--version") echo "conda 24.11.3";;
  "config --get channel_priority --json")
    echo '{"get": {"channel_priority": "strict"}}';;
  *) echo "stand-in conda cannot: $*" >&2; exit 1;;
esac
"""
STUB_APPTAINER = """#!/bin/sh
case "$*" in
  "--version") echo "apptainer version 1.3.4";;
  *) echo "stand-in apptainer cannot: $*" >&2; exit 1;;
esac
"""


def stand_in_tools(bin_dir: Path) -> dict:
    """Write the stand-in conda and apptainer; return env with them first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("conda", STUB_CONDA), ("apptainer", STUB_APPTAINER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def snakemake_env(extra: dict | None = None) -> dict:
    """The environment for a Snakemake subprocess, with a JAX compilation cache that the
    jobs share across test sessions (a tiny run is mostly start-up and compilation)."""
    env = dict(os.environ)
    cache = ROOT / ".pytest_cache" / "jax-compilation"
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    env.update(extra or {})
    return env


def make_project(dest: Path, config: dict | None = None) -> Path:
    """Copy the workflow and lambda_hat into ``dest``, with the tiny or given config."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORE)
        else:
            shutil.copy2(src, dest / name)
    (dest / "config").mkdir(exist_ok=True)
    write_config(dest, config if config is not None else load_tiny())
    return dest


def load_tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


def write_config(project: Path, config: dict) -> None:
    """Write ``config`` as the project's config/config.yaml, keys in the given order."""
    text = yaml.safe_dump(config, sort_keys=False)
    (project / "config" / "config.yaml").write_text(text)


def snakemake(
    project: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``snakemake`` on the project in ``project``; return the finished process."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(project / "Snakefile")]
    cmd += ["-d", str(project), *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=snakemake_env(env), timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def finished_run(root: Path) -> Path:
    """A project under ``root`` on which the tiny config has run to completion (made
    once per session; later calls return the same folder, which must not be changed)."""
    if "local" not in _finished:
        project = make_project(root / "finished")
        snakemake(project, "--cores", "2")
        _finished["local"] = project
    return _finished["local"]


def copy_run(src: Path, dest: Path) -> Path:
    """A copy of a project with its results and Snakemake records, times kept."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def pending(project: Path, *args: str, env: dict | None = None) -> set[str]:
    """The jobs a run would execute now, from ``snakemake --summary``.

    Each job is named ``rule`` or ``rule:wildcards`` (``sample:linreg/sgld/0``,
    ``train_target:dln``), from the outputs whose plan is an update.
    """
    out = snakemake(project, "--summary", *args, env=env).stdout
    lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
    header, rows = lines[0], lines[1:]
    col = {name: i for i, name in enumerate(header)}
    jobs = set()
    for row in rows:
        if row[col["plan"]] == "no update":
            continue
        path, rule = Path(row[col["output_file"]]), row[col["rule"]]
        parts = path.parts
        if rule == "sample":
            jobs.add(f"sample:{'/'.join(parts[2:5])}")
        elif rule == "train_target":
            jobs.add(f"train_target:{parts[2]}")
        else:
            jobs.add(rule)
    return jobs
