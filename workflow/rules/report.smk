rule report:
    input:
        llc="results/llc.parquet",
        draws=[f"{d}/draws.parquet" for d in run_dirs()],
    output:
        index=report(
            "results/report/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
    params:
        title=config["name"],
        out_dir=subpath(output.index, parent=True),
    log:
        "logs/report/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/lambda-hat.yaml"
    container:
        config["container"]
    shell:
        "lambda-hat --log {log} report --llc {input.llc} --runs-dir results/runs"
        " --out-dir {params.out_dir} --title {params.title:q}"
