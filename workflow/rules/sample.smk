rule sample:
    input:
        rules.train_target.output,
    output:
        draws="results/runs/{target}/{method}/{rep}/draws.parquet",
        summary="results/runs/{target}/{method}/{rep}/summary.parquet",
    log:
        "logs/sample/{target}/{method}/{rep}.log",
    conda:
        "../../envs/lambda-hat.yaml"
    container:
        config["container"]
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=method_settings,
        seed=config["seed"],
        target_dir=lambda wildcards, input: os.path.dirname(input[0]),
        code=sample_code,
    shell:
        "lambda-hat --log {log} sample --target-dir {params.target_dir}"
        " --target {wildcards.target} --method {wildcards.method}"
        " --rep {wildcards.rep} --seed {params.seed} --settings {params.settings:q}"
        " --draws {output.draws} --summary {output.summary}"
