#!/usr/bin/env bash
# Snakemake runs this inside the conda environment of lambda-hat.yaml right after it
# creates it (`--sdm conda`). It installs the lambda_hat package itself, editable and
# without dependencies (those are pinned in lambda-hat.yaml), from the checkout that
# Snakemake runs in, or from $LAMBDA_HAT_SOURCE. Editable, so the jobs run the code
# whose digest decides what reruns (README.md, "Reruns").
set -euo pipefail
src=${LAMBDA_HAT_SOURCE:-$PWD}
if ! grep -qs '^name = "lambda-hat"' "$src/pyproject.toml"; then
  echo "lambda-hat post-deploy: $src is not a lambda-hat checkout;" \
    "run snakemake from the checkout or set LAMBDA_HAT_SOURCE to it" >&2
  exit 1
fi
python -m pip install --no-deps --editable "$src"
