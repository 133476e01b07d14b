"""Checks of a config that a JSON schema cannot express, and each rule's settings.

The schema (workflow/schemas/config.schema.yaml) checks keys, types and ranges and fills
in defaults; these checks relate settings to each other. Both run before any job starts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


class ConfigError(ValueError):
    """A config setting that cannot work; the message names the key."""


def check_target(name: str, spec: dict) -> None:
    """Raise :class:`ConfigError` naming the key if a target's settings conflict."""
    where = f"targets.{name}"
    if spec.get("family") == "dln":
        widths, rank = spec["widths"], spec["rank"]
        if rank > min(widths):
            raise ConfigError(
                f"{where}.rank = {rank} exceeds the narrowest width {min(widths)} "
                f"of {where}.widths"
            )
    if spec.get("family") == "mlp" and spec.get("activation") == "relu":
        pass  # allowed; the report flags a large gradient norm at w* if it arises
    batch = (spec.get("train") or {}).get("batch_size")
    if batch is not None and batch > spec["n"]:
        raise ConfigError(
            f"{where}.train.batch_size = {batch} exceeds {where}.n = {spec['n']}"
        )


def check_method(name: str, spec: dict) -> None:
    """Raise :class:`ConfigError` naming the key if a method's settings conflict."""
    where = f"methods.{name}"
    algo = spec.get("algo")
    if algo == "sgld":
        n_steps, burn_in = spec["n_steps"], spec["burn_in"]
        thin = spec.get("thin", 1)
        if burn_in >= n_steps:
            raise ConfigError(
                f"{where}.burn_in = {burn_in} leaves no draws: it must be less than "
                f"{where}.n_steps = {n_steps}"
            )
        kept = n_steps // thin - burn_in // thin
        if kept < 4:
            raise ConfigError(
                f"{where}: n_steps = {n_steps}, burn_in = {burn_in} and thin = {thin} "
                f"keep {kept} draws per chain; at least 4 are needed for diagnostics"
            )
    if algo == "hmc":
        # The adaptation transitions are the burn-in: every sampling draw is kept.
        n_samples, thin = spec["n_samples"], spec.get("thin", 1)
        kept = n_samples // thin
        if kept < 4:
            raise ConfigError(
                f"{where}: n_samples = {n_samples} and thin = {thin} keep {kept} "
                "draws per chain; at least 4 are needed for diagnostics"
            )
    if algo in ("mfa", "flow"):
        check_vi(where, spec)


def check_vi(where: str, spec: dict) -> None:
    """The cross-field checks of the settings every VI method shares."""
    n_steps, eval_every = spec["n_steps"], spec["eval_every"]
    if n_steps % eval_every:
        raise ConfigError(
            f"{where}.n_steps = {n_steps} must be a multiple of {where}.eval_every = "
            f"{eval_every}"
        )
    if spec["warmup_steps"] >= n_steps:
        raise ConfigError(
            f"{where}.warmup_steps = {spec['warmup_steps']} leaves no steps for the "
            f"decay: it must be less than {where}.n_steps = {n_steps}"
        )


def check_config(config: dict) -> None:
    """Check every target and method of a validated config."""
    for name, spec in config["targets"].items():
        check_target(name, spec)
    for name, spec in config["methods"].items():
        check_method(name, spec)


def canonical(value: Any) -> str:
    """The JSON text of a rule's settings: keys sorted, so key order never matters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# Keys that say where the pipeline runs, not what it computes.
ENVIRONMENT_KEYS = ("container",)


def config_digest(config: dict) -> str:
    """A short digest of what a config computes (its canonical JSON, without the keys
    about the software environment), shown in the report's header."""
    experiment = {k: v for k, v in config.items() if k not in ENVIRONMENT_KEYS}
    return hashlib.sha256(canonical(experiment).encode("utf-8")).hexdigest()[:12]
