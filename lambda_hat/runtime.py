"""How a job uses the machine: CPU threads, the persistent compilation cache, and
whether chains run under ``jax.vmap`` or ``jax.lax.map``.

None of these change a result beyond floating-point reordering; they change how long a
job takes. The command line sets them once per process, before any JAX computation
(see ``lambda-hat --help``); README.md ("Performance") has the measurements
behind the defaults.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHAIN_MAPS = ("auto", "vmap", "map")
# On a CPU, chains run one after another (lax.map) once a chain's gradient evaluation
# costs more than this many multiply-adds (batch size × parameters): such a program
# already keeps the cores busy, and vmap's batched matmuls are slower than plain ones.
# Below it, vmap's fewer, larger operations win. Measured on an idle 2-core machine
# (benchmarks/throughput.md): lax.map is 1.2–2.5× faster at 4·10^7 multiply-adds and
# above (10k and 100k parameters, full batch of 4096), vmap 5–19% faster at 4·10^6 and
# below, and the two within 13% of each other at 2.5·10^7.
MAP_ABOVE_WORK = 10_000_000

# The cache's size limit; beyond it the least recently used entries go. A sampler's
# program holds the target's data and the chain keys as constants (its loop closes
# over them), so an entry is about as large as the data and is reused only by the
# same job run again; small shared programs (diagnostics, conversions) are reused by
# every job.
CACHE_MAX_BYTES = 2 * 2**30

_chain_map = "auto"


def limit_threads(threads: int | None) -> int:
    """Make XLA's CPU backend use at most ``threads`` worker threads.

    XLA sizes its CPU thread pool from the CPUs this process may run on, once, when
    the backend starts; XLA_FLAGS such as ``intra_op_parallelism_threads`` no longer
    change it. So the CPU affinity is narrowed to ``threads`` CPUs while the backend
    starts and then restored: the pool has ``threads`` threads, which the operating
    system may still place on any CPU. Call before any JAX computation.

    Args:
        threads: the most worker threads; None or at least the CPU count leaves the
            default (one per CPU).

    Returns:
        The size of the thread pool asked for (the CPU count when not limited).
    """
    allowed = sorted(os.sched_getaffinity(0))
    if threads is None or threads >= len(allowed):
        return len(allowed)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    import jax

    os.sched_setaffinity(0, allowed[:threads])
    try:
        jax.devices()
    finally:
        os.sched_setaffinity(0, allowed)
    return threads


def enable_compilation_cache(path: str | os.PathLike | None) -> None:
    """Keep compiled XLA programs in ``path`` across processes (None: do nothing).

    Every compilation is cached, however quick: a pipeline job compiles a handful of
    programs of a second or less each, which JAX's default threshold would skip. The
    directory is capped at :data:`CACHE_MAX_BYTES`.
    """
    if path is None:
        return
    import jax

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)


def set_chain_map(how: str) -> None:
    """Choose how :func:`map_chains` runs chains: ``auto``, ``vmap`` or ``map``."""
    global _chain_map
    if how not in CHAIN_MAPS:
        raise ValueError(f"chain map must be one of {CHAIN_MAPS}, got {how!r}")
    _chain_map = how


def chain_map_for(work: float) -> str:
    """``vmap`` or ``map`` for chains whose gradient costs ``work`` multiply-adds."""
    if _chain_map != "auto":
        return _chain_map
    import jax

    if jax.default_backend() != "cpu":
        return "vmap"
    return "map" if work > MAP_ABOVE_WORK else "vmap"


def map_chains(fn: Callable[..., Any], *args: Any, work: float) -> Any:
    """``fn`` applied to every chain's slice of ``args`` (axis 0), outputs stacked.

    Equal to ``jax.vmap(fn)(*args)`` up to floating-point reordering; runs either as
    that or as ``jax.lax.map`` over the chains, as :func:`chain_map_for` decides.

    Args:
        fn: a chain's computation; every argument has the chain on axis 0.
        args: pytrees of arrays whose leaves have shape (chains, ...).
        work: multiply-adds of one gradient evaluation of one chain (batch size
            times parameters), used by ``auto``.
    """
    import jax

    if chain_map_for(work) == "vmap":
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args)
