# Helpers about the DAG only: job lists, each rule's settings, wildcard constraints.
# Everything else lives in the lambda_hat package, where it is unit-tested.
from functools import cache

from lambda_hat.config import canonical, check_config, config_digest, method_spec
from lambda_hat.provenance import code_digest

check_config(config)


wildcard_constraints:
    target="[A-Za-z0-9_-]+",
    method="[A-Za-z0-9_-]+",
    rep="[0-9]+",


def replicates(method):
    return config["methods"][method].get("replicates", config["replicates"])


def run_dirs():
    """results/runs/<target>/<method>/<rep> for every job of Stage B."""
    return [
        f"results/runs/{t}/{m}/{r}"
        for t in sorted(config["targets"])
        for m in sorted(config["methods"])
        for r in range(replicates(m))
    ]


def target_settings(wildcards):
    """The train rule's params: its target's settings and the seed, as sorted JSON."""
    return canonical(config["targets"][wildcards.target])


def method_settings(wildcards):
    """The sample rule's params: its method's settings on its target, as sorted JSON."""
    return canonical(method_spec(config, wildcards.method, wildcards.target))


@cache
def algo_code(algo):
    """The digest of the code a sample job of ``algo`` runs (read once per run)."""
    return code_digest("sample", algo=algo)


def sample_code(wildcards):
    """The sample rule's code param."""
    return algo_code(config["methods"][wildcards.method]["algo"])


# --- performance: settings of every job's process, passed through the environment
# (so they are no job's params and changing them reruns nothing). The rules' `threads`
# reach the jobs as OMP_NUM_THREADS, which Snakemake sets and `lambda-hat` reads.
os.environ.update(
    LAMBDA_HAT_COMPILATION_CACHE=(
        os.path.abspath(config["compilation_cache"])
        if config["compilation_cache"]
        else ""
    ),
    LAMBDA_HAT_CHAIN_MAP=config["chain_map"],
)
# --- end performance ---
