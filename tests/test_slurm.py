"""The tiny config through the Slurm profile gives the same results as a local run.

Needs a Slurm cluster this machine can submit to; `.ci/run` starts a single-node one
with tests/cluster/slurm_up.sh. Without one the test is skipped, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from snakemake_runs import finished_run, make_project, snakemake

pytestmark = pytest.mark.slurm

# Columns that must agree between the two runs; the rest are timings.
SAME = ["target", "method", "rep", "seed", "key_data", "n", "d", "beta", "gamma"]
SAME += ["truth_kind", "grad_evals", "status", "settings"]
CLOSE = ["L0", "llc_mean", "llc_se", "ess", "rhat", "truth", "rel_error"]


def slurm_unavailable() -> str | None:
    """Why no Slurm can be used here, or None when one answers."""
    reason = os.environ.get("LAMBDA_HAT_SLURM_UNAVAILABLE")
    if reason:
        return reason
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed: uv sync --extra slurm"
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH: start a cluster with tests/cluster/slurm_up.sh"
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out: the Slurm controller does not answer"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"the Slurm controller is down: {(ping.stdout + ping.stderr).strip()}"
    return None


def gpus_on_cluster() -> int:
    """GPUs (gres/gpu) the cluster's nodes offer in all."""
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=20
    ).stdout
    return sum(int(n) for n in re.findall(r"gpu(?::[\w.]+)?:(\d+)", out))


def slurm_jobs() -> list[dict[str, str]]:
    """The fields of every job the controller still knows (``scontrol show job``)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o"], capture_output=True, text=True, timeout=20
    ).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w[\w/:]*)=(\S*)", line))
        if fields:
            jobs.append(fields)
    return jobs


def plain(column) -> list:
    """A table column as a list of builtins (arrays become lists)."""
    return [np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for v in column]


def test_slurm_run_equals_local_run(tmp_path_factory):
    reason = slurm_unavailable()
    if reason:
        pytest.skip(f"no Slurm cluster: {reason}")
    local = finished_run(tmp_path_factory.getbasetemp())

    # The slurm profile as a user would adapt it: sample jobs ask for a GPU where the
    # cluster has some (the test cluster's are count-only: JAX still runs on the CPU).
    project = make_project(tmp_path_factory.mktemp("slurm") / "project")
    profile_dir = project / "workflow" / "profiles" / "slurm"
    profile = yaml.safe_load((profile_dir / "config.yaml").read_text())
    want_gpu = gpus_on_cluster() > 0
    if want_gpu:
        profile["set-resources"]["sample"]["gpu"] = 1
        (profile_dir / "config.yaml").write_text(yaml.safe_dump(profile))
    before = {job["JobId"] for job in slurm_jobs()}

    out = snakemake(
        project,
        "--workflow-profile",
        str(profile_dir),
        # the test cluster keeps no accounting database, so no sacct
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
    )
    log = out.stdout + out.stderr

    # every job went through sbatch, with the profile's resources
    jobs = [job for job in slurm_jobs() if job["JobId"] not in before]
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        rule = re.match(r"rule_([a-z_]+?)_wildcards|rule_([a-z_]+)$", job["Comment"])
        by_rule.setdefault(next(g for g in rule.groups() if g), []).append(job)
    assert {rule: len(js) for rule, js in by_rule.items()} == {
        "train_target": 2,
        "sample": 4,
        "aggregate": 1,
        "report": 1,
    }, log
    for job in jobs:
        assert job["JobState"] == "COMPLETED", job
    for job in by_rule["sample"]:
        assert job["MinMemoryNode"] == "4000M" and job["NumCPUs"] == "2", job
        assert ("gpu:1" in job.get("TresPerJob", "")) == want_gpu, job
    for job in by_rule["train_target"]:
        assert job["MinMemoryNode"] == "2000M", job

    assert_same_results(project / "results", local / "results")


def assert_same_results(got_dir, want_dir) -> None:
    """The two runs' llc.parquet agree in every column but the timings.

    The same code on the same machine and inputs gives the same floating-point results,
    so the tolerance only allows for another summation order should XLA split a
    reduction differently.
    """
    got = pq.read_table(got_dir / "llc.parquet").to_pandas()
    want = pq.read_table(want_dir / "llc.parquet").to_pandas()
    assert len(got) == len(want) == 4
    key = ["target", "method", "rep"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    for col in SAME:
        assert plain(got[col]) == plain(want[col]), col
    for col in CLOSE:
        np.testing.assert_allclose(
            got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-10, err_msg=col
        )
