"""The experiment grid: every fine-tuning run, every evaluated model (base backbones, our
runs, external checkpoints) and every result file; the run of an evaluation job; what
each data variant is converted from, and how."""

from sbt import runs


def backbone_data(backbone):
    settings = config["backbones"][backbone]
    return settings.get("data") or list(config["data"])


def runs_on(data, method):
    """Text methods train on variants with text_runs, multimodal ones on variants with
    images (config.smk checks that each mm backbone has one)."""
    variant = config["data"][data]
    return bool(variant["images"]) if method in MM_METHODS else variant["text_runs"]


def trained_runs():
    """(backbone, data, method) of every fine-tuning run in the grid."""
    return [
        (backbone, data, method)
        for backbone, settings in config["backbones"].items()
        for data in backbone_data(backbone)
        for method in settings["methods"]
        if runs_on(data, method)
    ]


def mm_runs():
    """The multimodal runs' paths: the only runs that get mm_benchmarks."""
    return [
        f"{backbone}/{data}/{method}"
        for backbone, data, method in trained_runs()
        if method in MM_METHODS
    ]


def mm_backbones():
    """Backbones with a multimodal run (each has a tower and a stage-1 projector)."""
    return sorted(
        {backbone for backbone, _, method in trained_runs() if method in MM_METHODS}
    )


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
    """Every result JSON: every run x every benchmark, every mm run x every mm benchmark."""
    return [
        eval_result(run, bench) for bench in config["benchmarks"] for run in all_runs()
    ] + [
        eval_result(run, bench)
        for bench in config["mm_benchmarks"]
        for run in mm_runs()
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
