"""Run a jitted scan in a few chunks from the host, logging progress and time left.

Samplers and VI fits are pure ``lax.scan`` loops. Running one in about ten chunks lets a
long job report progress without any host callback inside the trace; the chunks see
step indices, not chunk indices, so the numbers do not depend on the chunking.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclass
class Timing:
    """Seconds spent compiling and running, measured."""

    compile_s: float = 0.0
    run_s: float = 0.0


def run_chunked(
    chunk_fn: Callable[[Any, jax.Array], tuple[Any, Any]],
    carry: Any,
    total: int,
    *,
    label: str,
    progress: Callable[[str], None],
    timing: Timing,
    n_chunks: int = 10,
    unit: str = "step",
) -> tuple[Any, Any]:
    """Run ``chunk_fn`` over step indices 0..total-1 in chunks.

    Args:
        chunk_fn: ``(carry, idx) -> (carry, out)``, where ``idx`` is an int32 array of
            the step indices of this chunk and every leaf of ``out`` has the chunk's
            steps on axis 1 (axis 0 is the chain).
        carry: the initial state, a pytree of arrays.
        total: the number of steps.
        label: what is running, for the progress lines.
        progress: where progress lines go.
        timing: accumulates compile and run seconds.
        n_chunks: about how many chunks (and progress lines).
        unit: what one index counts, for the progress lines ("step", "draw").

    Returns:
        The final carry and the outputs of all chunks joined along axis 1 (as numpy).
    """
    size = max(1, math.ceil(total / n_chunks))
    compiled: dict[int, Any] = {}
    outs = []
    start = 0
    t_run = time.perf_counter()
    while start < total:
        m = min(size, total - start)
        idx = jnp.arange(start, start + m, dtype=jnp.int32)
        if m not in compiled:
            t0 = time.perf_counter()
            compiled[m] = jax.jit(chunk_fn).lower(carry, idx).compile()
            dt = time.perf_counter() - t0
            timing.compile_s += dt
            t_run += dt
        carry, out = compiled[m](carry, idx)
        out = jax.tree.map(np.asarray, out)
        outs.append(out)
        start += m
        elapsed = time.perf_counter() - t_run
        left = elapsed / start * (total - start)
        progress(
            f"{label}: {unit} {start}/{total}, {elapsed:.1f} s, ~{left:.1f} s left"
        )
    timing.run_s += time.perf_counter() - t_run
    joined = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *outs)
    return carry, joined
