rule train_target:
    output:
        params="results/targets/{target}/params.eqx",
        data="results/targets/{target}/data.npz",
        meta="results/targets/{target}/meta.json",
    params:
        settings=target_settings,
        seed=config["seed"],
        out=subpath(output.meta, parent=True),
    log:
        "logs/train_target/{target}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/lambda-hat.yaml"
    container:
        config["container"]
    shell:
        "lambda-hat --log {log} train --name {wildcards.target} --seed {params.seed}"
        " --settings {params.settings:q} --out {params.out}"
