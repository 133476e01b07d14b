# lambda-hat: estimate the local learning coefficient (λ̂) of trained networks.
# Stage A trains targets, Stage B runs every method on every target, then the runs are
# aggregated into results/llc.parquet and a report. See README.md and config/README.md.
from snakemake.utils import min_version, validate

from lambda_hat.schema import check_schema, coerce_per_target, coerce_types

min_version("9.0")


# An experiment named with --configfile replaces the default one rather than merging
# into it, so its targets and methods are exactly those it lists.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# One type per value however it was given (file or --config), then the schema's check.
coerce_types(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
check_schema(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
validate(config, "workflow/schemas/config.schema.yaml")
coerce_per_target(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")


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
