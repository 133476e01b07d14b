"""The code digest of a rule changes exactly when the code its jobs run changes."""

from __future__ import annotations

import shutil

import pytest
from snakemake_runs import ROOT

from lambda_hat.provenance import PACKAGE, code_digest

COMMANDS = ("train", "sample", "aggregate", "report")


@pytest.fixture
def package(tmp_path):
    """A copy of the lambda_hat sources to edit."""
    dest = tmp_path / PACKAGE
    shutil.copytree(ROOT / PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def digests(root) -> dict[str, str]:
    out = {c: code_digest(c, root=root) for c in COMMANDS if c != "sample"}
    out["sample"] = code_digest("sample", algo="sgld", root=root)
    out["sample:other"] = code_digest("sample", algo="other", root=root)
    return out


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_digest_depends_on_the_code_not_the_location(package):
    assert digests(package) == digests(ROOT / PACKAGE)


def test_comments_docstrings_and_layout_do_not_count(package):
    before = digests(package)
    sgld = package / "sgld.py"
    text = sgld.read_text()
    sgld.write_text("# a new comment\n\n" + text.replace('"""', '"""Edited. ', 1))
    assert digests(package) == before


def test_an_edit_changes_the_rules_that_run_it(package):
    before = digests(package)
    edit(package / "sgld.py", "import jax\n", "import jax\n\nSTEP_FACTOR = 2\n")
    after = digests(package)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"sample"}

    edit(package / "tables.py", "import os\n", "import os\n\nMARK = 1\n")
    again = digests(package)
    changed = {k for k in after if after[k] != again[k]}
    # the aggregate, the report and sampling write tables; training does not
    assert changed == {"sample", "sample:other", "aggregate", "report"}


def test_package_data_counts_for_the_module_that_names_it(package):
    before = digests(package)
    template = package / "templates" / "report.html.j2"
    template.write_text(template.read_text() + "\n")
    after = digests(package)
    assert {k for k in before if before[k] != after[k]} == {"report"}


def test_each_algo_has_its_own_module(package):
    (package / "other.py").write_text("VALUE = 1\n")
    edit(
        package / "sample.py",
        '"sgld": "lambda_hat.sgld",',
        '"sgld": "lambda_hat.sgld", "other": "lambda_hat.other",',
    )
    before = digests(package)
    (package / "other.py").write_text("VALUE = 2\n")
    after = digests(package)
    assert {k for k in before if before[k] != after[k]} == {"sample:other"}


def test_the_algo_table_is_read_as_sample_defines_it():
    from lambda_hat.provenance import _algo_module
    from lambda_hat.sample import ALGOS

    for algo, module in ALGOS.items():
        assert _algo_module(algo, ROOT / PACKAGE) == module


def test_unknown_command_is_an_error():
    with pytest.raises(ValueError, match="cmd_nope"):
        code_digest("nope")
