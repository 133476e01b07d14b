"""Shared test setup: float64, key-reuse checking, and cached small targets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jax
import pytest
import yaml

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_debug_key_reuse", True)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def validated(config: dict) -> dict:
    """``config`` validated against the schema with its defaults filled in."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    validate(config, str(SCHEMA))
    return config


@pytest.fixture(scope="session")
def default_config() -> dict:
    """config/config.yaml, validated, defaults filled in."""
    return validated(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


@pytest.fixture(scope="session")
def make_target(tmp_path_factory):
    """Train (once per session and spec) a target and return its artifact directory.

    Call as ``make_target(name, spec, seed=0)`` with a spec that the schema accepts
    (defaults are filled in here).
    """
    from lambda_hat import keys
    from lambda_hat.targets import save_target, train_target

    cache: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("targets")

    def make(name: str, spec: dict, seed: int = 0) -> Path:
        spec = validated(
            {"seed": seed, "targets": {name: spec}, "methods": {"m": {"algo": "sgld"}}}
        )["targets"][name]
        tag = json.dumps([name, spec, seed], sort_keys=True)
        if tag not in cache:
            key = keys.job_key(seed, "train_target", {"target": name})
            target = train_target(name, spec, key=key, progress=lambda s: None)
            out = root / f"{name}-{len(cache)}"
            save_target(target, out)
            cache[tag] = out
        return cache[tag]

    return make
