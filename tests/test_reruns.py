"""Editing the config or the code reruns exactly the jobs that read what changed.

Each test copies one complete run of the tiny config (two targets, two SGLD methods: 8
jobs) and asks Snakemake which jobs a new run would execute (``--summary``), rather than
running the pipeline again.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake_runs import (
    copy_run,
    finished_run,
    load_tiny,
    make_project,
    pending,
    snakemake,
    stand_in_tools,
    write_config,
)

SMALL = {"sample:linreg/sgld_small/0", "sample:dln/sgld_small/0"}
AFTER = {"aggregate", "report"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_run(tmp_path_factory.getbasetemp())


@pytest.fixture
def project(finished, tmp_path):
    """A private copy of the complete run, to edit."""
    return copy_run(finished, tmp_path / "project")


def edit_config(project, change):
    config = load_tiny()
    change(config)
    write_config(project, config)


def test_complete_run_has_the_results(finished):
    import pyarrow.parquet as pq

    table = pq.read_table(finished / "results" / "llc.parquet").to_pandas()
    assert sorted(zip(table.target, table.method, strict=True)) == [
        ("dln", "sgld"),
        ("dln", "sgld_small"),
        ("linreg", "sgld"),
        ("linreg", "sgld_small"),
    ]
    assert (table.status == "ok").all()
    assert (finished / "results" / "report" / "index.html").is_file()


def test_second_run_does_nothing(project):
    out = snakemake(project, "--cores", "1")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_method_setting_reruns_that_method_only(project):
    edit_config(project, lambda c: c["methods"]["sgld_small"].update(step_size=2e-5))
    assert pending(project) == SMALL | AFTER


def test_target_setting_reruns_that_target_only(project):
    edit_config(project, lambda c: c["targets"]["linreg"]["train"].update(steps=50))
    assert (
        pending(project)
        == {
            "train_target:linreg",
            "sample:linreg/sgld/0",
            "sample:linreg/sgld_small/0",
        }
        | AFTER
    )


def test_per_target_setting_reruns_that_target_and_method_only(project):
    def smaller_on_dln(config):
        config["methods"]["sgld_small"]["per_target"] = {"dln": {"step_size": 2e-5}}

    edit_config(project, smaller_on_dln)
    assert pending(project) == {"sample:dln/sgld_small/0"} | AFTER

    # An entry that repeats the method's own value changes no run's settings; only
    # the report, whose header carries the config's digest, is redone.
    def same_on_dln(config):
        config["methods"]["sgld"]["per_target"] = {"dln": {"step_size": 1e-4}}

    edit_config(project, same_on_dln)
    assert pending(project) == {"report"}


def test_swapping_two_values_reruns(project):
    def swap(config):
        m = config["methods"]["sgld_small"]
        m["burn_in"], m["batch_size"] = m["batch_size"], m["burn_in"]

    edit_config(project, swap)
    assert pending(project) == SMALL | AFTER


def test_reordering_keys_does_not_rerun(project):
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    config = reverse(load_tiny())
    assert list(config) != list(load_tiny())
    write_config(project, config)
    assert pending(project) == set()


def test_same_value_spelled_differently_does_not_rerun(project):
    # gamma 1 (an int) where the schema says number, and a float written as YAML 1.1
    # reads it, as the string "1e-4"; both are coerced to the one float.
    text = (project / "config" / "config.yaml").read_text()
    config = yaml.safe_load(text)
    config["methods"]["sgld"]["gamma"] = 1
    config["methods"]["sgld"]["step_size"] = "1e-4"
    write_config(project, config)
    assert pending(project) == set()


def test_config_on_command_line_equals_configfile(project):
    # --config values below the top level reach the workflow as strings.
    given = "methods={sgld: {gamma: 1, step_size: 1.0e-4, n_chains: 2}, sgld_small: {}}"
    assert pending(project, "--config", given, "seed=0") == set()

    # A --configfile replaces config/config.yaml whole; the same experiment with the
    # same value spelled as a float is the same run.
    config = load_tiny()
    config["methods"]["sgld"]["gamma"] = 1.0
    other = project / "other.yaml"
    other.write_text(yaml.safe_dump(config))
    assert pending(project, "--configfile", str(other)) == set()

    changed = "methods={sgld_small: {n_steps: 400}}"
    assert pending(project, "--config", changed) == SMALL | AFTER


def test_editing_code_reruns_the_jobs_that_run_it(project):
    sgld = project / "lambda_hat" / "sgld.py"
    source = sgld.read_text()

    # comments, docstrings and layout are not code
    sgld.write_text(f"# a comment\n{source}\n\n\n# another\n")
    assert pending(project) == set()

    sgld.write_text(source + "\nUNUSED_CONSTANT = 1\n")
    assert (
        pending(project)
        == {
            f"sample:{t}/{m}/0"
            for t in ("linreg", "dln")
            for m in ("sgld", "sgld_small")
        }
        | AFTER
    )

    sgld.write_text(source)
    report = project / "lambda_hat" / "templates" / "report.html.j2"
    report.write_text(report.read_text() + "\n")
    assert pending(project) == {"report"}


def test_software_environment_is_a_trigger_only_with_sdm(project, tmp_path):
    # Without --sdm conda/apptainer the conda env file and the image play no part.
    env = project / "envs" / "lambda-hat.yaml"
    env.write_text(env.read_text() + "# edited\n")
    edit_config(project, lambda c: c.update(container="docker://example.org/other:9"))
    assert pending(project) == set()

    # With one, the image is part of every job's software stack, which the plain run
    # recorded as none: everything would rerun.
    tools = stand_in_tools(tmp_path / "bin")
    everything = pending(project, "--sdm", "apptainer", env=tools)
    assert len(everything) == 8 and AFTER < everything


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["methods"]["sgld"].update(stepsize=1e-4), "stepsize"),
        (lambda c: c.update(seed=2**32), "seed"),
        (lambda c: c["targets"]["linreg"].update(widths=[3, 3]), "widths"),
        (lambda c: c["targets"].update({"bad/name": {}}), "bad/name"),
        (lambda c: c["targets"]["dln"].update(rank=5), "targets.dln.rank"),
        (lambda c: c["methods"]["sgld"].update(burn_in=10**4), "methods.sgld.burn_in"),
        (
            lambda c: c["methods"]["sgld"].update(per_target={"dln": {"burn_in": 300}}),
            "methods.sgld.per_target.dln.burn_in",
        ),
    ],
    ids=[
        "unknown-key",
        "seed-2**32",
        "key-of-other-family",
        "bad-name",
        "rank",
        "burn-in",
        "per-target-burn-in",
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, change, named):
    config = copy.deepcopy(load_tiny())
    change(config)
    project = make_project(tmp_path / "bad", config)
    out = snakemake(project, "-n", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert named in text
    assert "Job stats" not in text
    assert not (project / "results").exists()
