rule train_target:
    output:
        params="results/targets/{target}/params.eqx",
        data="results/targets/{target}/data.npz",
        meta="results/targets/{target}/meta.json",
    log:
        "logs/train_target/{target}.log",
    conda:
        "../../envs/lambda-hat.yaml"
    container:
        config["container"]
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=target_settings,
        seed=config["seed"],
        out=subpath(output.meta, parent=True),
        code=code_digest("train"),
    shell:
        "lambda-hat --log {log} train --name {wildcards.target} --seed {params.seed}"
        " --settings {params.settings:q} --out {params.out}"
