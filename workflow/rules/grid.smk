"""The experiment grid: every fine-tuning run, every evaluated model (base backbones, our
runs, external checkpoints) and every result file; the run of an evaluation job; what
each data variant is converted from, and how."""

from sbt import runs


def backbone_data(backbone):
    settings = config["backbones"][backbone]
    return settings.get("data") or list(config["data"])


def trained_runs():
    """(backbone, data, method) of every fine-tuning run in the grid."""
    return [
        (backbone, data, method)
        for backbone, settings in config["backbones"].items()
        for data in backbone_data(backbone)
        for method in settings["methods"]
    ]


def all_runs():
    """Every evaluated model as its results path: base backbones, our runs, external."""
    return (
        [f"{backbone}/base" for backbone in config["backbones"]]
        + [f"{backbone}/{data}/{method}" for backbone, data, method in trained_runs()]
        + [f"{EXTERNAL}/{checkpoint}" for checkpoint in config["external"]]
    )


def run_of(wildcards):
    """The run an evaluate job belongs to (sbt.runs.Run; its path is one of all_runs())."""
    return runs.resolve_run(config, dict(wildcards.items()))


def eval_result(run, benchmark):
    return f"{RESULTS}/eval/{run}/{benchmark}.json"


def eval_outputs():
    """Every result JSON: every run x every benchmark."""
    return [
        eval_result(run, bench) for bench in config["benchmarks"] for run in all_runs()
    ]


def get_final_output():
    return [
        f"{RESULTS}/tables/summary.csv",
        f"{RESULTS}/tables/summary.md",
        f"{RESULTS}/tables/summary.tex",
        f"{RESULTS}/plots",
    ]


# ---------------------------------------------------------------- data


# Data sources that the prefetch rules may download: source path -> url.
SOURCE_URLS = {
    v["sources"][0]: v["url"] for v in config["data"].values() if v.get("url")
}


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
