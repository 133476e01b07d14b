"""Typed PRNG keys derived from the config seed and a job's rule and wildcards.

Every key here is a typed threefry key (``jax.random.key(..., impl="threefry2x32")``),
made on the host before any ``jit`` or ``vmap``. The global default PRNG implementation
is never touched, so the same seed gives the same key whatever else the process does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

IMPL = "threefry2x32"
SEED_LIMIT = 2**32


def digest32(text: str) -> int:
    """A stable 32-bit digest of ``text`` (blake2b, 4 bytes, big-endian).

    Python's ``hash()`` is salted per process, so it must never stand in for this.
    """
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


def check_seed(seed: Any) -> int:
    """Return ``seed`` as an int after checking 0 <= seed < 2**32."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}: {seed!r}")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"seed must satisfy 0 <= seed < 2**32, got {seed}")
    return int(seed)


def root_key(seed: int) -> jax.Array:
    """The typed threefry root key of a config seed."""
    return jax.random.key(check_seed(seed), impl=IMPL)


def job_labels(rule: str, wildcards: Mapping[str, Any]) -> list[str]:
    """The labels folded into a job's key, in their fixed order.

    The rule name comes first, then one ``name=value`` label per wildcard, sorted
    by name.
    """
    return [f"rule={rule}"] + [f"{k}={wildcards[k]}" for k in sorted(wildcards)]


def job_key(seed: int, rule: str, wildcards: Mapping[str, Any]) -> jax.Array:
    """The key of one job: the root key folded with each label's 32-bit digest."""
    key = root_key(seed)
    for label in job_labels(rule, wildcards):
        key = jax.random.fold_in(key, digest32(label))
    return key


def as_typed_key(key: Any) -> jax.Array:
    """Accept a typed threefry key, or a legacy ``uint32[2]`` key which is wrapped.

    This is the public boundary for keys: call it on the host, outside any trace.

    Raises:
        TypeError: for anything else, saying what was expected.
    """
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(
        key.dtype, jax.dtypes.prng_key
    ):
        impl = str(jax.random.key_impl(key))
        if "threefry" not in impl:
            raise TypeError(f"expected a threefry2x32 key, got a key of impl {impl}")
        return key
    if isinstance(key, jax.Array | np.ndarray):
        if key.dtype == np.uint32 and key.shape[-1:] == (2,):
            return jax.random.wrap_key_data(jnp.asarray(key), impl=IMPL)
        raise TypeError(
            "expected a typed threefry key (jax.random.key) or legacy key data of "
            f"dtype uint32 and trailing shape (2,), got dtype {key.dtype} and shape "
            f"{key.shape}"
        )
    raise TypeError(
        "expected a typed threefry key (jax.random.key) or legacy uint32[2] key data, "
        f"got {type(key).__name__}"
    )


def chain_keys(key: jax.Array, n_chains: int) -> jax.Array:
    """Keys of chains 0..n_chains-1: chain c gets ``fold_in(key, c)``.

    Chain c's key does not depend on how many chains run beside it.
    """
    key = as_typed_key(key)
    return jnp.stack([jax.random.fold_in(key, c) for c in range(n_chains)])


def key_data(key: jax.Array) -> list[int]:
    """The uint32 words of a single key, for recording in outputs."""
    return [int(x) for x in np.asarray(jax.random.key_data(key)).ravel()]


def key_record(seed: int, rule: str, wildcards: Mapping[str, Any]) -> dict[str, Any]:
    """Everything needed to replay a job's randomness."""
    return {
        "seed": check_seed(seed),
        "labels": job_labels(rule, wildcards),
        "key_data": key_data(job_key(seed, rule, wildcards)),
        "impl": IMPL,
    }
