"""Config values get one type each, whether they came from a file or ``--config``."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import SCHEMA
from snakemake.cli import parse_config
from snakemake.utils import update_config, validate
from snakemake_runs import load_tiny

from lambda_hat.config import canonical
from lambda_hat.schema import check_schema, coerce_types, load_schema


def prepared(config: dict) -> dict:
    """What the Snakefile does with a config: coerce types, check, then validate."""
    config = copy.deepcopy(config)
    coerce_types(config, SCHEMA)
    check_schema(config, SCHEMA)
    validate(config, str(SCHEMA))
    return config


def same_types(a, b) -> bool:
    """Equal values with equal types all the way down (1 == 1.0 does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_types, a, b))
    return a == b


def test_command_line_values_match_the_file():
    base = load_tiny()
    from_file = prepared(base)

    # Snakemake's own parser: below the top level every value is a string.
    given = parse_config(
        [
            "seed=0",
            "methods={sgld: {gamma: 1, step_size: 1.0e-4, n_chains: 2, beta: null}}",
            "targets={dln: {widths: [3, 2, 3], n: 200.0}}",
        ]
    )
    assert given["methods"]["sgld"]["gamma"] == "1"
    from_cli = copy.deepcopy(base)
    update_config(from_cli, given)

    assert same_types(prepared(from_cli), from_file)
    for part in ("targets", "methods"):
        for name in from_file[part]:
            assert canonical(prepared(from_cli)[part][name]) == canonical(
                from_file[part][name]
            )


@pytest.mark.parametrize(
    ("value", "types", "expected"),
    [
        (1, ["number"], 1.0),
        ("1e-4", ["number"], 1e-4),
        ("2", ["integer"], 2),
        (3.0, ["integer"], 3),
        ("3.0", ["integer"], 3),
        ("null", ["number", "null"], None),
        ("true", ["boolean"], True),
        ("1", ["string"], "1"),
    ],
)
def test_values_take_the_schema_type(value, types, expected):
    from lambda_hat.schema import _convert

    out = _convert(value, types)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    ("value", "types"),
    [
        (3.5, ["integer"]),
        ("abc", ["number"]),
        ("nan", ["number"]),
        (True, ["number"]),
        ("yes", ["boolean"]),
    ],
)
def test_values_that_do_not_convert_are_left_for_the_schema(value, types):
    from lambda_hat.schema import _convert

    assert _convert(value, types) is value


def test_conditional_blocks_and_lists_are_followed():
    schema = load_schema(SCHEMA)
    config = yaml.safe_load(
        """
        seed: "7"
        targets:
          t: {family: dln, widths: ["3", 2], rank: "1", n: 10, noise: 1}
        methods:
          m: {algo: sgld, gamma: 2, step_size: "1e-3", n_steps: 10.0}
        """
    )
    coerce_types(config, schema)
    assert same_types(
        config,
        {
            "seed": 7,
            "targets": {
                "t": {
                    "family": "dln",
                    "widths": [3, 2],
                    "rank": 1,
                    "n": 10,
                    "noise": 1.0,
                }
            },
            "methods": {
                "m": {"algo": "sgld", "gamma": 2.0, "step_size": 1e-3, "n_steps": 10}
            },
        },
    )


def test_a_value_that_does_not_convert_is_named_by_validation():
    config = load_tiny()
    config["methods"]["sgld"]["step_size"] = "small"
    with pytest.raises(Exception, match="small"):
        prepared(config)


def with_per_target(entry: dict, method: str = "sgld_small") -> dict:
    """The tiny config, its method given ``entry`` for target dln, prepared as the
    Snakefile prepares it (per-target entries typed and checked last)."""
    from lambda_hat.config import check_config
    from lambda_hat.schema import coerce_per_target

    config = load_tiny()
    config["methods"][method]["per_target"] = {"dln": entry}
    config = prepared(config)
    coerce_per_target(config, SCHEMA)
    check_config(config)
    return config


def test_per_target_settings_apply_to_that_target_only():
    from lambda_hat.config import method_spec

    # "2e-5" is how YAML 1.1 reads 2e-5 and how --config passes it: typed as a float.
    config = with_per_target({"step_size": "2e-5", "n_steps": 400.0})
    dln = method_spec(config, "sgld_small", "dln")
    linreg = method_spec(config, "sgld_small", "linreg")
    assert same_types(dln["step_size"], 2e-5) and same_types(dln["n_steps"], 400)
    assert linreg["step_size"] == 5e-5 and linreg["n_steps"] == 300
    assert "per_target" not in dln and "replicates" not in linreg
    assert {k: v for k, v in dln.items() if k not in ("step_size", "n_steps")} == {
        k: v for k, v in linreg.items() if k not in ("step_size", "n_steps")
    }


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"stepsize": 1e-4}, "methods.sgld_small.per_target.dln: Additional prop"),
        ({"step_size": -1.0}, "methods.sgld_small.per_target.dln.step_size"),
        ({"k": 4}, "'k' was unexpected"),
        ({"algo": "hmc"}, "methods.sgld_small.per_target.dln.algo cannot be set"),
        ({"replicates": 2}, "per_target.dln.replicates cannot be set"),
        ({"burn_in": 300}, "methods.sgld_small.per_target.dln.burn_in = 300"),
    ],
    ids=["unknown-key", "range", "other-algo-key", "algo", "replicates", "cross"],
)
def test_bad_per_target_entry_is_named(entry, named):
    from lambda_hat.config import ConfigError

    with pytest.raises(ConfigError) as err:
        with_per_target(entry)
    assert named in str(err.value)


def test_per_target_entry_for_an_unknown_target_is_named():
    from lambda_hat.config import ConfigError, check_config

    config = prepared(load_tiny())
    config["methods"]["sgld"]["per_target"] = {"mlp": {"step_size": 1e-5}}
    with pytest.raises(ConfigError, match=r"methods\.sgld\.per_target\.mlp: there is"):
        check_config(config)


def test_schema_errors_name_each_key_and_list_the_known_ones():
    """A config that breaks the schema fails with one line per problem, each naming
    the key by its dotted path; an unknown key comes with the keys known there.
    Every problem is listed, not only the first, and the schema is not printed."""
    from lambda_hat.config import ConfigError

    config = load_tiny()
    config["methods"]["sgld"]["n_step"] = config["methods"]["sgld"].pop("n_steps")
    config["methods"]["sgld"]["step_size"] = -1.0
    config["targets"]["dln"]["widths"] = "five"
    with pytest.raises(ConfigError) as err:
        prepared(config)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("the config breaks its schema")
    assert lines[1:] == [
        "  methods.sgld: unknown key 'n_step'; known keys here: algo, batch_size, "
        "beta, burn_in, gamma, n_chains, n_steps, per_target, replicates, step_size, "
        "thin",
        "  methods.sgld.step_size: -1.0 is less than or equal to the minimum of 0",
        "  targets.dln.widths: 'five' is not of type 'array'",
    ]
    check_schema(prepared(load_tiny()), SCHEMA)  # a good config passes
