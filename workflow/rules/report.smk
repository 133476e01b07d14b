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
    log:
        "logs/report/report.log",
    conda:
        "../../envs/lambda-hat.yaml"
    container:
        config["container"]
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        title=config["name"],
        out_dir=subpath(output.index, parent=True),
        code=code_digest("report"),
    shell:
        "lambda-hat --log {log} report --llc {input.llc} --runs-dir results/runs"
        " --out-dir {params.out_dir} --title {params.title:q}"
