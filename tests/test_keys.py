"""Typed keys from the seed and a job's wildcards."""

from __future__ import annotations

import itertools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat import keys


def test_job_key_is_typed_threefry():
    key = keys.job_key(0, "sample", {"target": "dln", "method": "sgld", "rep": 0})
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    assert "threefry" in str(jax.random.key_impl(key))


def test_digest_is_stable_across_processes():
    code = (
        "from lambda_hat import keys;"
        "print(keys.key_data(keys.job_key(7, 'sample', "
        "{'target': 'a', 'method': 'b', 'rep': 3})))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(salt), "JAX_PLATFORMS": "cpu"},
        ).stdout
        for salt in (1, 2)
    }
    here = keys.key_data(
        keys.job_key(7, "sample", {"target": "a", "method": "b", "rep": 3})
    )
    assert outs == {f"{here}\n"}


@pytest.mark.parametrize("x64", [False, True])
def test_same_key_with_and_without_x64(x64):
    # The conftest turns x64 on; compare against a fixed key computed both ways.
    wildcards = {"target": "linreg", "method": "sgld", "rep": 1}
    with jax.enable_x64(x64):
        data = keys.key_data(keys.job_key(123, "sample", wildcards))
    with jax.enable_x64(not x64):
        other = keys.key_data(keys.job_key(123, "sample", wildcards))
    assert data == other


def test_wildcard_order_does_not_matter():
    a = keys.job_key(1, "sample", {"target": "t", "method": "m", "rep": 0})
    b = keys.job_key(1, "sample", {"rep": 0, "method": "m", "target": "t"})
    assert keys.key_data(a) == keys.key_data(b)


def test_keys_distinct_over_default_grid(default_config):
    seen = set()
    jobs = [("train_target", {"target": t}) for t in default_config["targets"]]
    jobs += [
        ("sample", {"target": t, "method": m, "rep": r})
        for t, m, r in itertools.product(
            default_config["targets"], ["sgld", "hmc", "mfa", "flow"], range(5)
        )
    ]
    for rule, wildcards in jobs:
        job = keys.job_key(default_config["seed"], rule, wildcards)
        seen.add(tuple(keys.key_data(job)))
        for c in keys.chain_keys(job, 4):
            seen.add(tuple(keys.key_data(c)))
    assert len(seen) == len(jobs) * 5


def test_chain_keys_do_not_depend_on_chain_count():
    job = keys.job_key(0, "sample", {"target": "t", "method": "m", "rep": 0})
    two = np.asarray(jax.random.key_data(keys.chain_keys(job, 2)))
    four = np.asarray(jax.random.key_data(keys.chain_keys(job, 4)))
    np.testing.assert_array_equal(two, four[:2])


@pytest.mark.parametrize("seed", [2**32, -1, 2**40])
def test_seed_out_of_range_rejected(seed):
    with pytest.raises(ValueError, match="seed"):
        keys.root_key(seed)


@pytest.mark.parametrize("seed", [1.5, "3", True])
def test_seed_of_wrong_type_rejected(seed):
    with pytest.raises(TypeError, match="seed"):
        keys.root_key(seed)


def test_largest_seed_accepted():
    keys.root_key(2**32 - 1)


def test_legacy_key_is_wrapped_to_the_same_key():
    typed = jax.random.key(5, impl="threefry2x32")
    legacy = jax.random.key_data(typed)
    wrapped = keys.as_typed_key(legacy)
    assert keys.key_data(wrapped) == keys.key_data(typed)
    assert keys.key_data(keys.as_typed_key(np.asarray(legacy))) == keys.key_data(typed)
    a = jax.random.normal(wrapped, (3,))
    b = jax.random.normal(typed, (3,))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "bad",
    [
        jnp.zeros(2, dtype=jnp.int32),
        jnp.zeros(3, dtype=jnp.uint32),
        np.zeros(2, dtype=np.float64),
        5,
        "key",
    ],
)
def test_other_key_inputs_rejected(bad):
    with pytest.raises(TypeError, match="expected a typed threefry key"):
        keys.as_typed_key(bad)


def test_other_impl_rejected():
    with pytest.raises(TypeError, match="threefry2x32"):
        keys.as_typed_key(jax.random.key(0, impl="rbg"))


def test_key_record_replays_the_key():
    record = keys.key_record(9, "sample", {"target": "t", "method": "m", "rep": 2})
    assert record["labels"] == ["rule=sample", "method=m", "rep=2", "target=t"]
    replay = jax.random.key(record["seed"], impl=record["impl"])
    for label in record["labels"]:
        replay = jax.random.fold_in(replay, keys.digest32(label))
    assert keys.key_data(replay) == record["key_data"]
