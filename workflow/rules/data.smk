"""Raw LLaVA instruction JSON -> text-only LLaVA JSON, one output per data variant."""


def data_sources(wildcards):
    return config["data"][wildcards.data]["sources"]


def conversion_flags(wildcards):
    """The variant's conversion options as converter flags (a params, so edits rerun it)."""
    variant = config["data"][wildcards.data]
    flags = [
        f"--{key.replace('_', '-')}"
        for key in ("strip_newline", "all_turns", "drop_image_key", "skip_invalid")
        if variant[key]
    ]
    if variant["max_records"]:
        flags += [
            "--max-records",
            str(variant["max_records"]),
            "--seed",
            str(variant["seed"]),
        ]
    return " ".join(flags)


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
        "python {SCRIPTS}/convert_text_only.py --input {input:q} --output {output.data:q}"
        " --stats {output.stats:q} {params.flags} 2> {log:q}"


rule prefetch_data:
    """On a machine with network: download a variant's single source from its url."""
    output:
        "{source}",
    log:
        "logs/prefetch_data/{source}.log",
    benchmark:
        "benchmarks/prefetch_data/{source}.tsv"
    wildcard_constraints:
        source=names_pattern(
            [s for v in config["data"].values() if v["url"] for s in v["sources"]]
        ),
    shell:
        "python {SCRIPTS}/prefetch.py --url {params.url:q} --output {output:q} 2> {log:q}"


rule prefetch:
    """Every data source that has a url: `snakemake prefetch` on a machine with network."""
    input:
        [s for v in config["data"].values() if v["url"] for s in v["sources"]],
    localrule: True
