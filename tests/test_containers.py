"""Software environments of the rules, and the workflow's lint and format checks.

Neither conda nor apptainer can run here. What is tested: the conda environment and
the requirements file hold exactly the pins of uv.lock; the Containerfile's install
steps, run outside a container, install the locked packages and the package; Snakemake
builds the DAG with `--sdm conda` and `--sdm apptainer` (with stand-in `conda` and
`apptainer` commands that only answer its version checks); lint and format are clean.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from snakemake_runs import ROOT, make_project, snakemake, stand_in_tools

UV = shutil.which("uv")
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not on PATH")


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@needs_uv
def test_conda_env_and_requirements_match_uv_lock():
    out = subprocess.run(
        [sys.executable, str(ROOT / "envs" / "sync.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_conda_env_pins_what_uv_lock_pins():
    env = yaml.safe_load((ROOT / "envs" / "lambda-hat.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = dict(re.match(r"([\w.-]+)==([^ ;]+)", p).groups() for p in pip)
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    for name in ("jax", "jaxlib", "blackjax", "equinox", "flowjax", "snakemake"):
        assert pinned[name] == locked[name], name
    # no line refers to another file: Snakemake copies the env file before use
    assert not [p for p in pip if p.startswith("-")]


def test_post_deploy_installs_from_a_checkout_only(tmp_path):
    script = ROOT / "envs" / "lambda-hat.post-deploy.sh"
    out = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "LAMBDA_HAT_SOURCE": str(tmp_path)},
    )
    assert out.returncode == 1
    assert "not a lambda-hat checkout" in out.stderr


def test_default_image_is_this_version():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    image = schema["properties"]["container"]["default"]
    assert image.endswith(f":{version()}")
    assert image in (ROOT / "config" / "README.md").read_text()
    assert image.removeprefix("docker://") in (ROOT / "Containerfile").read_text()


def containerfile_steps() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Containerfile, continuation lines joined."""
    text = (ROOT / "Containerfile").read_text().replace("\\\n", " ")
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


@needs_uv
def test_image_recipe_installs_from_the_lockfile(tmp_path):
    # Replay the recipe's COPY steps and its uv and lambda-hat commands (not the
    # clean-up of the image's cache) in a folder standing for the image's /src.
    src, venv = tmp_path / "src", tmp_path / "venv"
    src.mkdir()
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "EXTRAS": "",
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("VIRTUAL_ENV", None)
    ran = []
    for word, args in containerfile_steps():
        if word == "COPY":
            *sources, _ = shlex.split(args)
            for name in sources:
                if (ROOT / name).is_dir():
                    shutil.copytree(
                        ROOT / name, src / name, ignore=shutil.ignore_patterns("__py*")
                    )
                else:
                    shutil.copy2(ROOT / name, src / name)
        elif word == "RUN":
            for command in (c.strip() for c in args.split("&&")):
                if command.startswith(("uv sync", "lambda-hat")):
                    subprocess.run(
                        ["bash", "-c", command], cwd=src, env=env, check=True
                    )
                    ran.append(command)
    assert any("--locked" in c for c in ran if c.startswith("uv sync"))
    assert any(c.startswith("lambda-hat") for c in ran)
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import lambda_hat, jax; print(jax.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert installed == next(
        p["version"] for p in lock["package"] if p["name"] == "jax"
    )


@pytest.fixture
def stubs(tmp_path):
    return stand_in_tools(tmp_path / "bin")


def test_dry_run_with_conda_environments(tmp_path, stubs):
    project = make_project(tmp_path / "project")
    out = snakemake(project, "-n", "--sdm", "conda", env=stubs)
    text = out.stdout + out.stderr
    assert re.search(r"Conda environment \S*envs/lambda-hat.yaml will be created", text)
    assert re.search(r"^total\s+9$", text, re.MULTILINE)


def test_dry_run_with_the_container(tmp_path, stubs):
    config = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    config["container"] = "docker://example.org/lambda-hat:test"
    project = make_project(tmp_path / "project", config)
    out = snakemake(project, "-n", "--sdm", "apptainer", env=stubs)
    text = out.stdout + out.stderr
    assert "image docker://example.org/lambda-hat:test will be pulled" in text
    assert re.search(r"^total\s+9$", text, re.MULTILINE)


def test_snakemake_lint_is_clean():
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "your workflow is in a good condition" in out.stdout + out.stderr


def test_snakefmt_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    out = subprocess.run(
        [str(snakefmt), "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
