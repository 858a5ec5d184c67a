"""aggregate.py on hand-written result JSONs: row order, derived columns, blanks, formats."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sbt import aggregate

ETHICS = ["ethics_cm", "ethics_deontology", "ethics_justice", "ethics_utilitarianism"]
ETHICS += ["ethics_virtue"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_result(folder: Path, name: str, run: dict, metrics: dict) -> Path:
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "run": run, "metrics": metrics}))
    return path


def run_of(backbone: str, method: str, data: str = "", **extra) -> dict:
    return {"backbone": backbone, "data": data, "method": method, **extra}


@pytest.fixture
def results_dir(tmp_path) -> Path:
    """Two backbones; the files are written in an order the table must not follow."""
    root = tmp_path / "eval"
    runs = {
        # (backbone, method, data): (mc1, mc2, five ETHICS scores or None where missing)
        ("zeta", "lora", "textonly"): (0.30, 0.452, [0.6, 0.6, 0.6, 0.6, 0.6]),
        ("zeta", "base", ""): (0.25, 0.401, [0.5, 0.5, 0.5, 0.5, 0.5]),
        ("alpha", "full", "textonly"): (0.27, 0.3333, [0.51, 0.52, 0.53, 0.54, None]),
        ("alpha", "lora", "textonly"): (0.26, 0.3456, [0.55, 0.56, 0.57, 0.58, 0.591]),
        ("alpha", "base", ""): (0.24, 0.3012, [0.50, 0.52, 0.54, 0.56, 0.58]),
        ("alpha", "full", "mixed"): (None, None, [0.40, 0.40, 0.40, 0.40, 0.40]),
    }
    for (backbone, method, data), (mc1, mc2, ethics) in runs.items():
        folder = root / backbone / (method if method == "base" else f"{data}/{method}")
        run = run_of(backbone, method, data)
        if mc1 is not None:
            metrics = {"truthfulqa_mc1/acc": mc1, "truthfulqa_mc2/acc": mc2}
            write_result(folder, "truthfulqa_mc", run, metrics)
        for task, score in zip(ETHICS, ethics, strict=True):
            if score is not None:
                write_result(folder, task, run, {f"{task}/acc": score})
    external = run_of("alpha", "external", name="released-ft")
    write_result(root / "external", "boolq", external, {"boolq/acc": 0.7134})
    return root


def produce(results: list[Path], tmp_path: Path) -> tuple[Path, Path]:
    tables, plots = tmp_path / "tables", tmp_path / "plots"
    assert aggregate.main(["--results", *map(str, results), "--tables-dir", str(tables),
                           "--plots-dir", str(plots)]) == 0  # fmt: skip
    return tables, plots


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_columns_means_deltas_and_blanks(results_dir, tmp_path):
    tables, _ = produce([results_dir], tmp_path)
    rows = read_csv(tables / "summary.csv")
    assert [(r["backbone"], r["data"], r["method"]) for r in rows] == [
        ("alpha", "-", "base"),
        ("alpha", "mixed", "full"),
        ("alpha", "textonly", "full"),
        ("alpha", "textonly", "lora"),
        ("alpha", "released-ft", "external"),
        ("zeta", "-", "base"),
        ("zeta", "textonly", "lora"),
    ]
    header = list(rows[0])
    assert header == [
        "backbone", "data", "method",
        "TruthfulQA mc1", "TruthfulQA mc2", "TruthfulQA mc2 vs base",
        "ETHICS cm", "ETHICS deontology", "ETHICS justice", "ETHICS utilitarianism",
        "ETHICS virtue", "ETHICS mean", "ETHICS mean vs base",
        "BoolQ acc",
    ]  # fmt: skip
    base, mixed, full, lora, external, zeta_base, zeta_lora = rows
    assert (base["TruthfulQA mc1"], base["TruthfulQA mc2"]) == ("24.0", "30.1")
    assert base["ETHICS mean"] == "54.0" and base["ETHICS mean vs base"] == ""
    # the mean of the five unrounded subsets, rounded: (55+56+57+58+59.1)/5 = 57.02
    assert lora["ETHICS mean"] == "57.0" and lora["ETHICS virtue"] == "59.1"
    assert lora["ETHICS mean vs base"] == "3.0"
    # a delta is the difference of the rounded scores shown: 34.6 - 30.1
    assert lora["TruthfulQA mc2"] == "34.6" and lora["TruthfulQA mc2 vs base"] == "4.5"
    assert full["TruthfulQA mc2 vs base"] == "3.2"  # 33.3 - 30.1
    # missing results stay blank, never zero; no mean without all five subsets
    assert full["ETHICS virtue"] == "" and full["ETHICS mean"] == ""
    assert full["ETHICS mean vs base"] == ""
    assert mixed["TruthfulQA mc1"] == "" and mixed["TruthfulQA mc2 vs base"] == ""
    assert mixed["ETHICS mean"] == "40.0" and mixed["ETHICS mean vs base"] == "-14.0"
    assert external["BoolQ acc"] == "71.3" and external["ETHICS cm"] == ""
    assert all(r["BoolQ acc"] == "" for r in rows if r is not external)
    assert zeta_lora["TruthfulQA mc2 vs base"] == "5.1"  # 45.2 - 40.1
    assert zeta_base["TruthfulQA mc2 vs base"] == ""


def test_markdown_latex_and_plots(results_dir, tmp_path):
    tables, plots = produce([results_dir], tmp_path)
    markdown = (tables / "summary.md").read_text()
    assert markdown.startswith("# Evaluation summary\n")
    assert "percentages with one decimal" in markdown and "blank cell" in markdown
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + 7  # header, alignment row, runs
    assert "TruthfulQA mc2 vs base" in table_lines[0]
    lora_line = next(line for line in table_lines if "| textonly" in line and "lora" in line)
    cells = [cell.strip() for cell in lora_line.strip("|").split("|")]
    assert cells[:6] == ["alpha", "textonly", "lora", "26.0", "34.6", "+4.5"]

    latex = (tables / "summary.tex").read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex
    assert "\\multicolumn{7}{c}{ETHICS}" in latex
    assert latex.count("\\midrule") == 2  # under the header, between the two backbones
    body = latex.split("\\midrule")[2]
    assert body.lstrip().startswith("zeta & - & base")
    assert "mc2 vs base" in latex
    escaped = tmp_path / "escaped"
    write_result(escaped, "r", run_of("my_model", "base"), {"boolq/acc": 0.5})
    tables2, _ = produce([escaped], tmp_path / "second")
    assert "my\\_model & - & base & 50.0" in (tables2 / "summary.tex").read_text()

    assert sorted(p.name for p in plots.iterdir()) == ["boolq.png", "ethics.png", "truthfulqa.png"]
    for png in plots.iterdir():
        assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 5000


def test_output_is_deterministic(results_dir, tmp_path):
    files = sorted(results_dir.rglob("*.json"))
    first_tables, first_plots = produce(files, tmp_path / "a")
    second_tables, second_plots = produce(list(reversed(files)), tmp_path / "b")
    for name in ("summary.csv", "summary.md", "summary.tex"):
        assert (first_tables / name).read_bytes() == (second_tables / name).read_bytes()
    for png in first_plots.iterdir():
        assert png.read_bytes() == (second_plots / png.name).read_bytes()


def test_truthfulqa_delta_falls_back_to_mc1_and_halves_round_up(tmp_path):
    folder = tmp_path / "eval"
    write_result(folder / "a", "t", run_of("m", "base"), {"truthfulqa_mc1/acc": 0.0625})
    write_result(folder / "b", "t", run_of("m", "full", "d"), {"truthfulqa_mc1/acc": 0.15625})
    tables, _ = produce([folder], tmp_path)
    rows = read_csv(tables / "summary.csv")
    assert list(rows[0])[3:] == ["TruthfulQA mc1", "TruthfulQA mc1 vs base"]
    assert [r["TruthfulQA mc1"] for r in rows] == ["6.3", "15.6"]  # 6.25 and 15.625
    assert rows[1]["TruthfulQA mc1 vs base"] == "9.3"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"metrics": {}}, "field 'run': missing or not an object"),
        ({"run": {"method": "base"}, "metrics": {}}, "field 'run.backbone': missing"),
        ({"run": run_of("m", "base")}, "field 'metrics': missing or not an object"),
        (
            {"run": run_of("m", "base"), "metrics": {"boolq/acc": "high"}},
            "field 'metrics.boolq/acc': not a number: 'high'",
        ),
        (
            {"run": run_of("m", "base"), "metrics": {"acc": 0.5}},
            "field 'metrics.acc': expected '<task>/<metric>'",
        ),
        ([1, 2], "expected a JSON object (an evaluate.py result)"),
    ],
)
def test_malformed_result_is_one_error_line_and_no_output(document, expected, tmp_path, capsys):
    good = write_result(tmp_path / "eval", "good", run_of("m", "base"), {"boolq/acc": 0.5})
    bad = tmp_path / "eval" / "bad.json"
    bad.write_text(json.dumps(document))
    tables, plots = tmp_path / "tables", tmp_path / "plots"
    code = aggregate.main(["--results", str(good), str(bad), "--tables-dir", str(tables),
                           "--plots-dir", str(plots)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}: {expected}"]
    assert not tables.exists() and not plots.exists()


def test_invalid_json_and_conflicting_duplicates(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert aggregate.main(["--results", str(broken), "--tables-dir", str(tmp_path / "t"),
                           "--plots-dir", str(tmp_path / "p")]) == 2  # fmt: skip
    assert capsys.readouterr().err.startswith(f"error: {broken}: invalid JSON")
    first = write_result(tmp_path / "x", "one", run_of("m", "base"), {"boolq/acc": 0.5})
    second = write_result(tmp_path / "x", "two", run_of("m", "base"), {"boolq/acc": 0.6})
    assert aggregate.main(["--results", str(first), str(second), "--tables-dir",
                           str(tmp_path / "t"), "--plots-dir", str(tmp_path / "p")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"error: {second}: field 'metrics.boolq/acc': differs from {first}" in err


def write_with_stderr(folder: Path, name: str, run: dict, scores: dict, **document) -> None:
    """A result JSON as evaluate.py writes it: metrics plus lm-eval's results with stderrs."""
    results: dict = {}
    for key, (value, stderr) in scores.items():
        task, _, metric = key.partition("/")
        results.setdefault(task, {})[f"{metric},none"] = value
        results[task][f"{metric}_stderr,none"] = stderr
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {key: value for key, (value, _) in scores.items()}
    path.write_text(json.dumps({"run": run, "metrics": metrics, "results": results, **document}))


def test_standard_errors_chance_levels_and_indistinct_deltas(tmp_path):
    tqa = tmp_path / "tqa.jsonl"  # mc1: 1 of 2 and 1 of 4 choices -> chance 37.5%
    tqa.write_text(
        json.dumps({"mc1_targets": {"labels": [1, 0]}, "mc2_targets": {"labels": [1, 0]}})
        + "\n"
        + json.dumps({"mc1_targets": {"labels": [1, 0, 0, 0]}, "mc2_targets": {"labels": [1, 1, 0, 0]}})
        + "\n"
    )  # fmt: skip
    folder = tmp_path / "eval"
    config = {"config": {"data_files": {"validation": str(tqa)}}}
    for method, mc1, mc2, cm in [
        ("base", (0.30, 0.02), (0.40, 0.02), (0.50, 0.01)),
        ("full", (0.31, 0.02), (0.50, 0.02), (0.52, 0.01)),  # mc2 +10 +- 2.8: distinguishable
        ("lora", (0.32, 0.02), (0.42, 0.02), (0.51, 0.01)),  # mc2 +2 +- 2.8: not
    ]:
        run = run_of("m", method, "" if method == "base" else "d")
        scores = {"truthfulqa_mc1/acc": mc1, "truthfulqa_mc2/acc": mc2}
        write_with_stderr(folder / method, "tqa", run, scores, **config)
        write_with_stderr(folder / method, "cm", run, {"ethics_cm/acc": cm})
    tables, plots = produce([folder], tmp_path)

    rows = read_csv(tables / "summary.csv")
    assert list(rows[0])[3:] == [
        "TruthfulQA mc1", "TruthfulQA mc1 stderr", "TruthfulQA mc2", "TruthfulQA mc2 stderr",
        "TruthfulQA mc2 vs base", "TruthfulQA mc2 vs base stderr",
        "TruthfulQA mc2 vs base distinguishable", "ETHICS cm", "ETHICS cm stderr",
    ]  # fmt: skip
    base, full, lora = rows
    assert (base["TruthfulQA mc2"], base["TruthfulQA mc2 stderr"]) == ("40.0", "2.0")
    assert (full["TruthfulQA mc2 vs base"], full["TruthfulQA mc2 vs base stderr"]) == (
        "10.0",
        "2.8",
    )
    assert full["TruthfulQA mc2 vs base distinguishable"] == "True"
    assert lora["TruthfulQA mc2 vs base distinguishable"] == "False"
    assert base["TruthfulQA mc2 vs base distinguishable"] == ""

    markdown = (tables / "summary.md").read_text()
    cells = {
        c.strip() for line in markdown.splitlines() if line.startswith("|") for c in line.split("|")
    }
    assert {"50.0 ± 2.0", "+10.0 ± 2.8", "+2.0 ± 2.8†"} <= cells
    assert "† marks a difference smaller than twice" in " ".join(markdown.split())
    latex = (tables / "summary.tex").read_text()
    assert "+2.0 $\\pm$ 2.8$^\\dagger$" in latex and "40.0 $\\pm$ 2.0" in latex

    from sbt.results import build_summary, load_runs

    summary = build_summary(load_runs([folder]))
    chance = dict(zip((c.key for c in summary.columns), summary.chance, strict=True))
    assert chance["TruthfulQA mc1"] == pytest.approx(37.5)  # mean of 1/2 and 1/4
    assert chance["TruthfulQA mc2"] == pytest.approx(50.0)  # mean of 1/2 and 2/4
    assert chance["ETHICS cm"] == 50.0 and chance["TruthfulQA mc2 vs base"] is None
    assert {p.name for p in plots.iterdir()} == {"truthfulqa.png", "ethics.png"}


def test_multimodal_runs_sort_after_lora_and_only_they_fill_their_columns(tmp_path):
    """An mm benchmark exists for the multimodal runs only: every other row leaves it blank."""
    root = tmp_path / "eval"
    for method, data in (("base", ""), ("lora", "textonly"), ("mm_full", "llava80k")):
        folder = root / "alpha" / (method if method == "base" else f"{data}/{method}")
        write_result(folder, "ethics_cm", run_of("alpha", method, data), {"ethics_cm/acc": 0.5})
    mm = run_of("alpha", "mm_full", "llava80k")
    write_result(root / "alpha/llava80k/mm_full", "pope_coco", mm, {"pope/acc": 0.8125})
    tables, _ = produce([root], tmp_path)
    rows = read_csv(tables / "summary.csv")
    assert [r["method"] for r in rows] == ["base", "lora", "mm_full"]
    pope = [key for key in rows[0] if "pope" in key]  # "Other pope acc": no mm task named
    assert len(pope) == 1, list(rows[0])
    assert [r[pope[0]] for r in rows] == ["", "", "81.3"]  # 81.25 rounds half up
    assert all(r["ETHICS cm"] == "50.0" for r in rows)


def test_mm_evaluate_scores_are_percentages_and_squad_f1_stays_as_it_is(tmp_path):
    """sbt.mm_evaluate's documents (task pope / vqav2, keys "<benchmark>/<metric>") hold
    fractions, f1 among them; SQuAD2's f1 is already on lm-eval's 0-100 scale."""
    root = tmp_path / "eval"
    mm = run_of("alpha", "mm_full", "shapes")
    folder = root / "alpha/shapes/mm_full"
    pope = {"pope_shapes/f1": 0.6923, "pope_shapes/yes_ratio": 0.8}
    document = {"benchmark": "pope_shapes", "task": "pope", "run": mm, "metrics": pope}
    (folder / "pope_shapes.json").parent.mkdir(parents=True)
    (folder / "pope_shapes.json").write_text(json.dumps(document))
    captions = {"caption_coco/cider": 1.0525, "caption_coco/bleu_4": 0.31}
    document = {"benchmark": "caption_coco", "task": "caption", "run": mm, "metrics": captions}
    (folder / "caption_coco.json").write_text(json.dumps(document))
    write_result(folder, "squadv2", mm, {"squadv2/f1": 41.25})
    tables, plots = produce([root], tmp_path)
    (row,) = read_csv(tables / "summary.csv")
    # The POPE family (the document's task), the benchmark's name without the task prefix.
    assert row["POPE shapes f1"] == "69.2" and row["POPE shapes yes_ratio"] == "80.0"
    # Captions: pycocoevalcap's scale times 100, as COCO reports CIDEr (above 100 here).
    assert row["Captions coco cider"] == "105.3" and row["Captions coco bleu_4"] == "31.0"
    assert (plots / "captions.png").is_file()
    assert [row[key] for key in row if key.startswith("SQuAD2")] == ["41.3"]
