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


# A method's settings for some targets only; these keys shape the DAG or the entry
# itself, so they are the method's for every target.
PER_TARGET = "per_target"
NOT_PER_TARGET = ("algo", "replicates", PER_TARGET)


def method_spec(config: dict, method: str, target: str) -> dict:
    """The settings ``method`` runs with on ``target``.

    The method's own settings, updated by its ``per_target`` entry for ``target`` if
    it has one, without the keys that are not the run's (``replicates`` and
    ``per_target``). These are the sample rule's params, so an edit of one target's
    entry reruns that target's jobs of the method only.
    """
    spec = dict(config["methods"][method])
    overrides = spec.pop(PER_TARGET, None) or {}
    spec.pop("replicates", None)
    spec.update(overrides.get(target, {}))
    return spec


def check_per_target(config: dict) -> None:
    """Raise :class:`ConfigError` if a ``per_target`` entry names no target, or sets a
    key that only the whole method can have."""
    for name, spec in config["methods"].items():
        for target, overrides in (spec.get(PER_TARGET) or {}).items():
            where = f"methods.{name}.{PER_TARGET}.{target}"
            if target not in config["targets"]:
                raise ConfigError(
                    f"{where}: there is no target {target!r} (targets: "
                    f"{', '.join(sorted(config['targets']))})"
                )
            fixed = sorted(set(overrides) & set(NOT_PER_TARGET))
            if fixed:
                raise ConfigError(
                    f"{where}.{fixed[0]} cannot be set per target; set it on "
                    f"methods.{name}"
                )


def check_config(config: dict) -> None:
    """Check every target and method of a validated config.

    A method with ``per_target`` entries is checked as it runs on each of them.
    """
    check_per_target(config)
    for name, spec in config["targets"].items():
        check_target(name, spec)
    for name, spec in config["methods"].items():
        check_method(name, spec)
        for target in spec.get(PER_TARGET) or {}:
            check_method(
                f"{name}.{PER_TARGET}.{target}", method_spec(config, name, target)
            )


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
