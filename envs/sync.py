"""Write the pins of uv.lock into the conda environment of the rules.

    python envs/sync.py          # rewrite requirements.lock.txt and lambda-hat.yaml
    python envs/sync.py --check  # exit 1, showing the difference, if either is stale

``requirements.lock.txt`` is ``uv export`` of the locked runtime dependencies (no dev
tools, no extras, not the project itself). ``lambda-hat.yaml`` repeats those pins in its
pip section: Snakemake copies an environment file before conda reads it, so a ``-r``
line pointing at a file beside it would not be found. The post-deploy script beside it
installs the lambda_hat package itself.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
from pathlib import Path

ENVS = Path(__file__).resolve().parent
ROOT = ENVS.parent
EXPORT = [
    "uv",
    "export",
    "--frozen",
    "--no-dev",
    "--no-hashes",
    "--no-emit-project",
    "--format",
    "requirements-txt",
]
HEADER = """\
# The software environment of every rule under `snakemake --sdm conda`: Python 3.11 and
# the runtime dependencies pinned in uv.lock. Written by `python envs/sync.py`; do not
# edit by hand. lambda-hat.post-deploy.sh then installs the lambda_hat package itself.
name: lambda-hat
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def pins(requirements: str) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    lines = (line.split(" #")[0].strip() for line in requirements.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def environment(requirements: str) -> str:
    """The text of lambda-hat.yaml for the pins in ``requirements``."""
    items = "".join(f"      - {json.dumps(pin)}\n" for pin in pins(requirements))
    return HEADER + items


def expected() -> dict[Path, str]:
    """Each generated file and the text it should have now."""
    requirements = subprocess.run(
        EXPORT, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return {
        ENVS / "requirements.lock.txt": requirements,
        ENVS / "lambda-hat.yaml": environment(requirements),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare")
    args = parser.parse_args(argv)

    stale = 0
    for path, text in expected().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{path.name} (committed)",
                    f"{path.name} (from uv.lock)",
                )
            )
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"{stale} file(s) out of date: run `python envs/sync.py`")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
