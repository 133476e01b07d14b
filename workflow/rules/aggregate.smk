rule aggregate:
    input:
        [f"{d}/summary.parquet" for d in run_dirs()],
    output:
        "results/llc.parquet",
    log:
        "logs/aggregate/aggregate.log",
    conda:
        "../../envs/lambda-hat.yaml"
    container:
        config["container"]
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_digest("aggregate"),
    shell:
        "lambda-hat --log {log} aggregate --out {output} {input}"
