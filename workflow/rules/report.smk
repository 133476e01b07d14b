rule report:
    input:
        llc="results/llc.parquet",
        draws=[f"{d}/draws.parquet" for d in run_dirs()],
    output:
        index=report(
            "results/report/index.html",
            caption="../report/index.rst",
            category="Summary",
            labels={"figure": "the lambda-hat report (self-contained page)"},
        ),
        summary=report(
            "results/report/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"figure": "summary table"},
        ),
        llc=report(
            "results/report/llc_by_method.png",
            caption="../report/llc_by_method.rst",
            category="Summary",
            labels={"figure": "λ̂ by method"},
        ),
        cost=report(
            "results/report/error_vs_cost.png",
            caption="../report/error_vs_cost.rst",
            category="Summary",
            labels={"figure": "error against cost"},
        ),
        running=report(
            directory("results/report/running"),
            patterns=["{target}.png"],
            caption="../report/running.rst",
            category="{target}",
            subcategory="all methods",
            labels={"target": "{target}", "figure": "running λ̂"},
        ),
        traces=report(
            directory("results/report/traces"),
            patterns=["{target}/{method}.png"],
            caption="../report/traces.rst",
            category="{target}",
            subcategory="{method}",
            labels={"target": "{target}", "method": "{method}", "figure": "traces"},
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
        digest=config_digest(config),
        out_dir=subpath(output.index, parent=True),
        code=code_digest("report"),
    shell:
        "lambda-hat --log {log} report --llc {input.llc} --runs-dir results/runs"
        " --out-dir {params.out_dir} --title {params.title:q}"
        " --config-digest {params.digest}"
