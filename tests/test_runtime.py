"""How a job uses the machine: chains under vmap or lax.map, threads, compile cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat import keys, runtime, sgld
from lambda_hat.cli import parser
from lambda_hat.posterior import make_posterior
from lambda_hat.targets import load_target


@pytest.fixture
def chain_map():
    """Set the process-wide chain map for one test and restore ``auto`` after."""
    yield runtime.set_chain_map
    runtime.set_chain_map("auto")


def test_map_and_vmap_give_the_same_chains(chain_map):
    def chain(key, w):
        def body(w, i):
            return w + jnp.tanh(w) * jax.random.normal(jax.random.fold_in(key, i)), w

        return jax.lax.scan(body, w, jnp.arange(5))

    ks = jax.random.split(jax.random.key(3, impl="threefry2x32"), 3)
    ws = jnp.arange(6.0).reshape(3, 2)
    outs = {}
    for how in ("vmap", "map"):
        chain_map(how)
        outs[how] = runtime.map_chains(chain, ks, ws, work=1.0)
    for a, b in zip(
        jax.tree.leaves(outs["vmap"]), jax.tree.leaves(outs["map"]), strict=True
    ):
        assert a.shape == b.shape
        # Batching may reorder a sum; in float64 that is far below 1e-12 here.
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_auto_picks_map_for_heavy_chains_on_cpu(chain_map):
    assert jax.default_backend() == "cpu"
    assert runtime.chain_map_for(10.0) == "vmap"
    assert runtime.chain_map_for(10 * runtime.MAP_ABOVE_WORK) == "map"
    chain_map("vmap")
    assert runtime.chain_map_for(10 * runtime.MAP_ABOVE_WORK) == "vmap"
    with pytest.raises(ValueError, match="chain map"):
        chain_map("pmap")


def test_sgld_same_draws_under_map_and_vmap(make_target, default_config, chain_map):
    spec = default_config["targets"]["linreg"]
    target = load_target(make_target("linreg", spec, seed=0))
    post = make_posterior(target, beta=None, gamma=1.0)
    settings = {
        "step_size": 1e-4,
        "n_chains": 2,
        "n_steps": 60,
        "burn_in": 20,
        "thin": 10,
        "batch_size": 50,
    }
    losses = {}
    for how in ("vmap", "map"):
        chain_map(how)
        ks = keys.chain_keys(keys.job_key(0, "sample", {"t": "x"}), 2)
        out = sgld.run(post, ks, settings, progress=lambda s: None)
        losses[how] = out.draws["loss"]
    # Same keys, same steps: only the order of floating-point sums may differ.
    np.testing.assert_allclose(losses["vmap"], losses["map"], rtol=1e-10)


def _python(code: str, env: dict | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


EIGEN_THREADS = """
    import os
    from lambda_hat.runtime import limit_threads
    before = sorted(os.sched_getaffinity(0))
    size = limit_threads({threads})
    import jax, jax.numpy as jnp
    a = jnp.ones((256, 256))
    (a @ a).block_until_ready()
    names = [open(f"/proc/self/task/{{t}}/comm").read().strip()
             for t in os.listdir("/proc/self/task")]
    print(size, names.count("tf_XLAEigen"), sorted(os.sched_getaffinity(0)) == before)
"""


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or not os.path.isdir("/proc/self/task"),
    reason="needs Linux and two CPUs to tell one thread from all",
)
def test_limit_threads_sizes_xla_pool_and_restores_affinity():
    # XLA names its CPU worker threads tf_XLAEigen; one per CPU unless limited.
    n_cpus = len(os.sched_getaffinity(0))
    assert _python(EIGEN_THREADS.format(threads=1)).split() == ["1", "1", "True"]
    assert _python(EIGEN_THREADS.format(threads=None)).split() == [
        str(n_cpus),
        str(n_cpus),
        "True",
    ]


def test_compilation_cache_is_written_and_read(tmp_path):
    code = f"""
        from lambda_hat.runtime import enable_compilation_cache
        enable_compilation_cache({str(tmp_path)!r})
        import jax, jax.numpy as jnp
        f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)
        f(jnp.ones((8, 8))).block_until_ready()
        print(len(list(__import__("pathlib").Path({str(tmp_path)!r}).iterdir())))
    """
    first = int(_python(code))
    assert first >= 1
    # A second process compiles the same program: it reads the entry, adds none.
    assert int(_python(code)) == first


def test_cli_threads_default_from_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = parser().parse_args(["aggregate", "--out", "x.parquet"])
    assert args.threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    monkeypatch.setenv("LAMBDA_HAT_COMPILATION_CACHE", "")
    args = parser().parse_args(["aggregate", "--out", "x.parquet"])
    assert args.threads is None
    assert args.compilation_cache is None
    assert args.chain_map == "auto"
