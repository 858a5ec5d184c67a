"""The training data path: tokenize_records' examples, as a memory-mapped Arrow cache.

The rows must be exactly tokenize_records' (ids, labels, skip counts, truncation), also
across the batches of `Dataset.map`; bad data leaves nothing behind; a cache appears only
complete, and a fresh start of the checkpoint directory keeps this run's cache.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

import sbt.train_data as train_data
from sbt.common import InputError
from sbt.lazy_records import read_records
from sbt.packing import PackCollator, PadCollator
from sbt.tokenize_chat import count_trained_tokens, load_records, load_tokenizer, tokenize_records
from sbt.train_data import (
    build_tokenized,
    load_tokenized,
    prepare_train_data,
    tokenized_cache_path,
)
from sbt.train_resume import prepare_work_dir

EMPTY = {
    "id": "empty",
    "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}],
}
NO_ANSWER = {"id": "question", "conversations": [{"from": "human", "value": "Anyone there?"}]}


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return load_tokenizer(str(tiny_backbone), "v1", 48)[0]


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(train_data, "_MAP_BATCH", 7)  # many map batches over a few records


def write_text(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def write(path, records):
    return write_text(path, json.dumps(records))


class OneProcess:
    """The part of TrainingArguments that prepare_train_data uses, for one process."""

    @contextlib.contextmanager
    def main_process_first(self, local=True, desc="work"):
        yield


def test_rows_are_tokenize_records_examples(tiny_records, tokenizer, tmp_path, small_batches):
    records = [*tiny_records[:20], EMPTY, *tiny_records[20:33], NO_ANSWER, *tiny_records[33:40]]
    data = write(tmp_path / "data.json", records)
    built = build_tokenized(tmp_path / "cache" / "tokenized-x", data, tokenizer, "v1", 48, 1.0)
    expected, skips = tokenize_records(records, tokenizer, "v1", 48)
    assert skips["empty_message"] == skips["no_assistant_message"] == 1
    rows = built.dataset[:]
    assert [ids.tolist() for ids in rows["input_ids"]] == [ex["input_ids"] for ex in expected]
    assert [labels.tolist() for labels in rows["labels"]] == [ex["labels"] for ex in expected]
    assert rows["truncated"].tolist() == [ex["truncated"] for ex in expected]
    assert rows["length"].tolist() == [len(ex["input_ids"]) for ex in expected]
    assert built.skips == skips and list(built.skips) == list(skips)  # same order
    assert (built.records, built.examples) == (len(records), len(expected))
    assert built.truncated == sum(ex["truncated"] for ex in expected) > 0
    assert built.trained_tokens == count_trained_tokens(expected)
    assert str(rows["input_ids"][0].dtype) in ("int32", "int64")


def test_a_malformed_record_is_named_by_its_place_in_the_file(
    tiny_records, tokenizer, tmp_path, small_batches
):
    odd = {"id": "odd", "conversations": [{"from": "system", "value": "x"}]}
    data = write(tmp_path / "data.json", [*tiny_records[:20], odd])
    with pytest.raises(InputError) as caught:
        build_tokenized(tmp_path / "work" / "tokenized-x", data, tokenizer, "v1", 48, 1.0)
    assert str(caught.value) == (
        f"{data}: record 20 (id 'odd'): field 'conversations[0].from': "
        "unknown role 'system' (expected 'human' or 'gpt')"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_too_many_skipped_records_leave_nothing_behind(tiny_records, tokenizer, tmp_path):
    data = write(tmp_path / "data.json", [*tiny_records[:9], EMPTY])
    args = (data, "d" * 64, tokenizer, "v1", 48)
    with pytest.raises(InputError, match=r"1 of 10 records skipped \(empty_message: 1\), more"):
        prepare_train_data(
            OneProcess(), *args, cache_dir=tmp_path / "work", max_skipped_fraction=0.01
        )
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]
    with pytest.raises(InputError, match="no trainable record"):
        prepare_train_data(
            OneProcess(),
            write(tmp_path / "data.json", [EMPTY]),
            *args[1:],
            cache_dir=tmp_path / "work",
            max_skipped_fraction=1.0,
        )


def test_prepare_reuses_the_cache_and_reports_skips(tiny_records, tokenizer, tmp_path, capsys):
    data = write(tmp_path / "data.json", [*tiny_records[:99], EMPTY])
    kwargs = {"cache_dir": tmp_path / "cache", "max_skipped_fraction": 0.05}
    first = prepare_train_data(OneProcess(), data, "d" * 64, tokenizer, "v1", 48, **kwargs)
    second = prepare_train_data(OneProcess(), data, "d" * 64, tokenizer, "v1", 48, **kwargs)
    assert (first.hit, second.hit, first.path) == (False, True, second.path)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "skipped 1 of 100 records: empty_message: 1",
        f"tokenized examples from {first.path}",
        "skipped 1 of 100 records: empty_message: 1",
    ]
    # A tighter limit applies to cached examples as well.
    with pytest.raises(InputError, match="more than max_skipped_fraction=0.0"):
        prepare_train_data(
            OneProcess(), data, "d" * 64, tokenizer, "v1", 48, **kwargs | {"max_skipped_fraction": 0.0}
        )  # fmt: skip


def test_unreadable_or_concurrent_caches(tiny_records, tokenizer, tmp_path, capsys):
    data = write(tmp_path / "data.json", tiny_records[:30])
    path = tokenized_cache_path(tmp_path / "cache", "k")
    build_tokenized(path, data, tokenizer, "v1", 48, 0.0)
    # Another process published the same examples first: its cache is used, ours dropped.
    again = build_tokenized(path, data, tokenizer, "v1", 48, 0.0)
    assert again.examples == 30 and [p.name for p in path.parent.iterdir()] == [path.name]
    (path / "meta.json").write_text("{", encoding="utf-8")
    assert load_tokenized(path) is None
    assert f"ignoring unreadable tokenized cache {path}: " in capsys.readouterr().err
    rebuilt = build_tokenized(path, data, tokenizer, "v1", 48, 0.0)  # replaces the broken one
    assert load_tokenized(path).examples == rebuilt.examples == 30
    (path / "data.arrow").write_bytes(b"not arrow")
    assert load_tokenized(path) is None


def test_collators_read_dataset_rows(tiny_records, tokenizer, tmp_path):
    data = write(tmp_path / "data.json", tiny_records[:8])
    built = build_tokenized(tmp_path / "tokenized-x", data, tokenizer, "v1", 48, 0.0)
    expected, _ = tokenize_records(tiny_records[:8], tokenizer, "v1", 48)
    rows = [built.dataset[i] for i in range(4)]
    for collator in (PadCollator(0), PackCollator(loss_logits_only=True)):
        from_arrow, from_lists = collator(rows), collator(expected[:4])
        assert from_arrow.keys() == from_lists.keys()
        for key, value in from_lists.items():  # tensors, and max_length_q/k as ints
            same = torch.equal(from_arrow[key], value) if torch.is_tensor(value) else None
            assert same if same is not None else from_arrow[key] == value, key


def test_a_fresh_start_keeps_this_runs_tokenized_data(tmp_path, capsys):
    work = tmp_path / "out.checkpoints"
    keep, other = work / "tokenized-this", work / "tokenized-old"
    for path in (work / "checkpoint-2", keep, other):
        path.mkdir(parents=True)
    (keep / "meta.json").write_text("{}")
    (work / "run.json").write_text(json.dumps({"lr": 1}))
    assert prepare_work_dir(work, {"lr": 2}, "auto", keep) is None
    (stale,) = tmp_path.glob("out.checkpoints.stale-*")
    assert sorted(p.name for p in stale.iterdir()) == ["checkpoint-2", "run.json", "tokenized-old"]
    assert sorted(p.name for p in work.iterdir()) == ["run.json", "tokenized-this"]
    assert "moved checkpoints of a different run (lr: 1 -> 2)" in capsys.readouterr().err
    (work / "checkpoint-4").mkdir()
    assert prepare_work_dir(work, {"lr": 2}, "never", keep) is None
    assert sorted(p.name for p in work.iterdir()) == ["run.json", "tokenized-this"]
    assert (keep / "meta.json").is_file()


# "T" stands for a valid turn list (the shared schema, sbt.records, wants one or more turns).
_TURNS = '[{"from": "gpt", "value": "a"}]'
READER_CASES = {
    name: text.replace('"conversations": T', f'"conversations": {_TURNS}')
    for name, text in {
        "plain": '[{"id": 1, "conversations": T}, {"id": "a\\"]}", "conversations": [{"from": "human", "value": "[{x}]"}]}]',  # noqa: E501
        "spaces and unicode": ' \n[ \n{"conversations": T} ,\n {"conversations": T, "é": "ü😀"} \n]\n',
        "empty list": "[ ]",
        "object": '{"conversations": T}',
        "not an object": '[1, {"conversations": T}]',
        "a string": '["x"]',
        "no comma": '[{"conversations": T} {"conversations": T}]',
        "trailing comma": '[{"conversations": T},]',
        "junk after": '[{"conversations": T}] x',
        "bad JSON inside": '[{"conversations": [}]',
        "no conversations": '[{"id": 3}, {"conversations": 5}]',
        "nested list": '[[{"conversations": T}]]',
        "not closed": '[{"conversations": T}',
        "empty conversations": '[{"conversations": T}, {"conversations": []}]',
    }.items()
}


@pytest.mark.parametrize("text", READER_CASES.values(), ids=READER_CASES)
def test_read_records_reads_and_rejects_as_load_records(tmp_path, text):
    """The lazy reader (the file's bytes, records decoded when asked for) agrees with
    load_records on every file: the same records, or the same error."""

    def outcome(read, path):
        try:
            records = read(path)
        except InputError as exc:
            return "error", str(exc)
        return "records", [records[i] for i in range(len(records))]

    for name, content in (("data.json", text), ("data.jsonl", text.replace("}, {", "}\n{"))):
        path = write_text(tmp_path / name, content)
        assert outcome(read_records, path) == outcome(load_records, path), name


def test_read_records_holds_bytes_not_objects(tiny_records, tmp_path):
    path = write(tmp_path / "data.json", tiny_records)
    records = read_records(path)
    assert not isinstance(records, list) and len(records) == len(tiny_records)
    assert records[7] == tiny_records[7] and records[-1] == tiny_records[-1]


@pytest.mark.slow
def test_bench_measures_the_data_path_before_and_after(tmp_path, capsys):
    from bench_train import main as bench_main

    assert bench_main(["--measure", "data", "--records", "40", "--workdir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("data path: 40 LLaVA-like records -> 40 examples, ")
    labels = ["before"] * 2 + ["after"] * 3 + ["reading"] * 2
    assert [line.split(":")[0].strip() for line in lines[1:8]] == labels
    assert lines[-3].startswith("data path ratio (tokenize): after / before = ")
    assert lines[-2].startswith("data path ratio (cache): after / before = ")
    assert lines[-1].startswith("record reading ratio: lazy_records / datasets' JSON loader = ")


def test_read_records_reads_the_converters_indented_output(tmp_path):
    """Training reads what convert_text_only writes (json.dump's indent=4 layout) lazily."""
    from sbt.demo.llava import DEFAULT_OUTPUT as DEMO
    from sbt.llava import convert

    convert([DEMO], tmp_path / "data.json")
    records = read_records(tmp_path / "data.json")
    assert not isinstance(records, list)  # the lazy reader, not load_records' fallback
    assert (
        list(records)
        == load_records(tmp_path / "data.json")
        == json.loads((tmp_path / "data.json").read_text())
    )
