"""All result JSONs -> tables (CSV, Markdown, LaTeX), plots and the HTML report."""

import os


rule aggregate:
    input:
        eval_outputs(),
    output:
        csv=report(
            f"{RESULTS}/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
        md=f"{RESULTS}/tables/summary.md",
        tex=f"{RESULTS}/tables/summary.tex",
        plots=report(
            directory(f"{RESULTS}/plots"),
            patterns=["{family}.png"],
            caption="../report/plots.rst",
            category="Plots",
            labels={"benchmark family": "{family}"},
        ),
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    localrule: True
    conda:
        "../../envs/workflow.yaml"
    params:
        tables_dir=lambda wildcards, output: os.path.dirname(output.csv),
    shell:
        "python -m sbt.aggregate --results {input:q}"
        " --tables-dir {params.tables_dir:q} --plots-dir {output.plots:q} 2> {log:q}"
