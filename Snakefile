# lambda-hat: estimate the local learning coefficient (λ̂) of trained networks.
# Stage A trains targets, Stage B runs every method on every target, then the runs are
# aggregated into results/llc.parquet and a report. See README.md and config/README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        "results/llc.parquet",
        rules.report.output,
