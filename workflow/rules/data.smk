"""Raw LLaVA instruction JSON -> text-only LLaVA JSON, one output per data variant."""


rule convert_text_only:
    input:
        data_sources,
    output:
        data=f"{RESULTS}/data/{{data}}.json",
        stats=f"{RESULTS}/data/{{data}}.stats.json",
    log:
        "logs/convert_text_only/{data}.log",
    benchmark:
        "benchmarks/convert_text_only/{data}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        flags=conversion_flags,
    shell:
        "python -m sbt.convert --input {input:q} --output {output.data:q}"
        " --stats {output.stats:q} {params.flags} 2> {log:q}"


rule prefetch_data:
    """On a machine with network: download a data source from its variant's url."""
    output:
        "{source}",
    log:
        "logs/prefetch_data/{source}.log",
    benchmark:
        "benchmarks/prefetch_data/{source}.tsv"
    wildcard_constraints:
        source=names_pattern(SOURCE_URLS),
    localrule: True
    conda:
        "../../envs/workflow.yaml"
    params:
        url=lambda wildcards: SOURCE_URLS[wildcards.source],
    shell:
        "python -m sbt.prefetch --url {params.url:q} --output {output:q} 2> {log:q}"


rule prefetch:
    """Every data source that has a url: `snakemake prefetch` on a machine with network."""
    input:
        list(SOURCE_URLS),
    localrule: True
