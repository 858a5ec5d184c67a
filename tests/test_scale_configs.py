"""Multi-GPU settings: DeepSpeed configs, FSDP wrapping, and how the workflow launches them.

GPUs are not needed: these check what the Trainer is handed (and what it makes of it) and
the exact command the study's config would run on a cluster.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex

import pytest
import yaml
from snakemake_run import REPO, copy_repo, output_of, snakemake

from sbt.common import InputError
from sbt.runs import MM_METHODS
from sbt.scale import decoder_layer_classes, fsdp_config_for
from sbt.train_resume import checkpoints_dir
from sbt.training import METHODS, gradient_accumulation, parse_hparams, train

DEEPSPEED_DIR = REPO / "config" / "deepspeed"
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
NO_DEEPSPEED = "deepspeed is not installed here (it is needed only on GPU nodes)"
# What the Trainer fills in for "auto": batch sizes, accumulation, clipping, precision.
AUTO_KEYS = (
    "train_micro_batch_size_per_gpu",
    "train_batch_size",
    "gradient_accumulation_steps",
    "gradient_clipping",
)


@pytest.mark.parametrize(("name", "stage"), [("zero2.json", 2), ("zero3.json", 3)])
def test_deepspeed_configs_leave_the_recipe_to_the_trainer(name, stage):
    config = json.loads((DEEPSPEED_DIR / name).read_text())
    assert config["zero_optimization"]["stage"] == stage
    for key in AUTO_KEYS:
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    # No optimizer or scheduler of its own: the learning rate, warmup and cosine schedule
    # of the hparams must apply (an own section would silently override them).
    for section in ("optimizer", "scheduler"):
        params = config.get(section, {}).get("params", {})
        assert all(value == "auto" for value in params.values()), section
    if stage == 3:  # otherwise save_model writes empty shards instead of the weights
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_fsdp_wraps_each_llama_decoder_layer(tiny_backbone):
    from transformers import TrainingArguments

    assert decoder_layer_classes(str(tiny_backbone)) == ["LlamaDecoderLayer"]
    config = fsdp_config_for(str(tiny_backbone), gradient_checkpointing=True)
    assert config == {
        "activation_checkpointing": True,
        "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
    }
    args = TrainingArguments(
        output_dir="unused",
        fsdp="full_shard auto_wrap",
        fsdp_config=dict(config),
        use_cpu=True,
        report_to="none",
    )
    plugin = args.fsdp_plugin_args
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin["reshard_after_forward"] is True  # full_shard: parameters sharded too
    assert plugin["activation_checkpointing"] is True
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"  # save_model writes whole weights


def test_other_architectures_get_their_own_layer_class(tmp_path):
    from transformers import MistralConfig

    MistralConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    assert decoder_layer_classes(str(tmp_path)) == ["MistralDecoderLayer"]
    with pytest.raises(InputError, match="cannot read the model config"):
        decoder_layer_classes(str(tmp_path / "missing"))


def test_fsdp_without_a_distributed_launch_stops_before_loading(
    tiny_backbone, tiny_corpus, tmp_path
):
    output = tmp_path / "out"
    hparams = {"fsdp": "full_shard auto_wrap", "max_steps": 1, "bf16": False}
    with pytest.raises(InputError, match="field 'fsdp': needs a distributed launch: torchrun"):
        train(str(tiny_backbone), "v1", "full", tiny_corpus, output, hparams)
    assert not output.exists() and not checkpoints_dir(output).exists()


@pytest.mark.skipif(HAS_DEEPSPEED, reason="deepspeed is installed: the missing case cannot occur")
def test_deepspeed_missing_is_one_clear_error(tiny_backbone, tiny_corpus, tmp_path):
    config = str(DEEPSPEED_DIR / "zero2.json")
    with pytest.raises(InputError, match=r"zero2.json: field 'deepspeed': needs DeepSpeed"):
        train(str(tiny_backbone), "v1", "lora", tiny_corpus, tmp_path / "out",
              {"deepspeed": config, "max_steps": 1})  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not HAS_DEEPSPEED, reason=NO_DEEPSPEED)
@pytest.mark.parametrize(("name", "stage"), [("zero2.json", 2), ("zero3.json", 3)])
def test_trainer_resolves_the_deepspeed_config(name, stage):
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir="unused",
        deepspeed=str(DEEPSPEED_DIR / name),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        report_to="none",
    )
    assert args.deepspeed_plugin.zero_stage == stage
    resolved = args.hf_deepspeed_config.config
    assert resolved["train_micro_batch_size_per_gpu"] == 4
    assert resolved["gradient_accumulation_steps"] == 2


# ---------------------------------------------------------------- the study's workflow


def rule_jobs(dry_run_text: str, rule: str) -> list[dict]:
    """Each job of `rule` in `snakemake -n -p`: {"wildcards", "resources", "command"}."""
    jobs = []
    for block in dry_run_text.split(f"\nrule {rule}:\n")[1:]:
        block = block.split("\n\n", 1)[0]
        wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", block)[1]))
        resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block)[1]))
        command = re.search(r"^Shell command: (.*)$", block, re.M)[1]
        jobs.append({"wildcards": wildcards, "resources": resources, "command": command})
    return jobs


def train_jobs(dry_run_text: str, rule: str = "train") -> dict[tuple[str, str], dict]:
    """(backbone, method) -> {"resources": {...}, "command": str} from `snakemake -n -p`
    (mm_pretrain, which has no method wildcard: method "mm_pretrain")."""
    return {
        (job["wildcards"]["backbone"], job["wildcards"].get("method", rule)): {
            "resources": job["resources"],
            "command": job["command"],
        }
        for job in rule_jobs(dry_run_text, rule)
    }


@pytest.mark.workflow
def test_paper_config_launches_sharded_runs_on_four_gpus(tmp_path):
    workdir = copy_repo(tmp_path / "repo")
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/paper.yaml", timeout=300)
    assert proc.returncode == 0, output_of(proc)[-3000:]
    jobs = train_jobs(output_of(proc))
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    expected = {
        (b, m) for b, spec in paper["backbones"].items() for m in spec["methods"] if m in METHODS
    }  # mm_full / mm_lora: rule mm_finetune (test_paper_config_plans_the_multimodal_arm)
    assert set(jobs) == expected
    # The study ran both methods under DeepSpeed ZeRO-2 (train_scripts/*.sh).
    assert paper["training"]["full"]["deepspeed"] == "config/deepspeed/zero2.json"
    assert paper["training"]["full"]["fsdp"] is None

    for (backbone, method), job in jobs.items():
        assert job["resources"]["gpu"] == "4", (backbone, method)
        argv = shlex.split(job["command"].split(" 2> ", 1)[0])
        assert argv[:5] == ["torchrun", "--standalone", "--nproc_per_node=4", "-m", "sbt.train"]
        assert argv[argv.index("--method") + 1] == method
        given = json.loads(argv[argv.index("--hparams") + 1])
        hparams = parse_hparams(json.dumps(given))  # what train.py will run with
        assert (hparams["fsdp"], hparams["deepspeed"]) == (None, "config/deepspeed/zero2.json")
        assert (workdir / hparams["deepspeed"]).is_file()  # relative to the job's directory
        if method == "lora":
            assert hparams["lora"]["r"] == 64 and hparams["lora"]["alpha"] == 16
        # 4 per device x 2 accumulation x 4 GPUs: the study's effective batch of 32
        assert hparams["global_batch_size"] == 32 and hparams["num_gpus"] == 4
        assert gradient_accumulation(hparams, world_size=4) == 2
        assert hparams["bf16"] and hparams["gradient_checkpointing"]
        assert (hparams["max_grad_norm"], hparams["loss_averaging"]) == (0, "micro_batch")
        assert (hparams["group_by_length"], hparams["seed"]) == (False, 42)
        template = argv[argv.index("--template") + 1]
        assert template == ("llava_llama_2" if backbone.startswith("llama2") else "v1")


@pytest.mark.workflow
def test_paper_config_plans_the_multimodal_arm(tmp_path):
    """Stage 1 where no released projector is used, stage 2 for every mm method, each on
    four GPUs under ZeRO-2 with the study's settings (docs/fidelity.md)."""
    workdir = copy_repo(tmp_path / "repo")
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/paper.yaml", timeout=300)
    assert proc.returncode == 0, output_of(proc)[-3000:]
    text = output_of(proc)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    backbones = paper["backbones"]
    stage2 = train_jobs(text, "mm_finetune")
    assert set(stage2) == {
        (b, m) for b, s in backbones.items() for m in s["methods"] if m in MM_METHODS
    }
    stage1 = train_jobs(text, "mm_pretrain")
    assert (
        set(stage1)
        == {
            (b, "mm_pretrain")
            for b, s in backbones.items()
            if s["multimodal"]["projector"] == "pretrain"
        }
        == {("llama-7b", "mm_pretrain"), ("vicuna-7b", "mm_pretrain")}
    )
    for (backbone, method), job in {**stage1, **stage2}.items():
        assert job["resources"]["gpu"] == "4", (backbone, method)
        argv = shlex.split(job["command"].split(" 2> ", 1)[0])
        assert argv[:5] == ["torchrun", "--standalone", "--nproc_per_node=4", "-m", "sbt.mm_train"]
        hparams = parse_hparams(argv[argv.index("--hparams") + 1])
        assert hparams["deepspeed"] == "config/deepspeed/zero2.json"
        assert argv[argv.index("--tower") + 1] == "openai/clip-vit-large-patch14"
        if method == "mm_pretrain":
            assert (hparams["learning_rate"], hparams["weight_decay"]) == (2e-3, 0)
            assert hparams["per_device_train_batch_size"] == 16
            assert argv[argv.index("--data") + 1] == "resources/llava/cc3m/chat.json"
            continue
        assert argv[argv.index("--method") + 1] == method.removeprefix("mm_")
        assert argv[argv.index("--images") + 1] == "resources/coco/train2017"
        assert hparams["learning_rate"] == 2e-5 and hparams["global_batch_size"] == 32
        projector = argv[argv.index("--projector") + 1]
        released = backbones[backbone]["multimodal"]["projector"]
        assert projector == (
            f"results/models/{backbone}/mm_pretrain/mm_projector.bin"
            if released == "pretrain"
            else released
        )
        if method == "mm_lora":
            assert hparams["lora"]["r"] == 64 and hparams["lora"]["alpha"] == 16
    # POPE's three splits, VQAv2 and COCO captions for every multimodal run, one GPU each,
    # as the study ran them: VQAv2 its draw of 5000 questions from the val2014 files, the
    # captions Karpathy's test split made into the study's format (rule karpathy_split).
    evaluations = rule_jobs(text, "evaluate_mm")
    assert len(evaluations) == len(stage2) * len(paper["mm_benchmarks"]) == 50
    tasks = []
    for job in evaluations:
        assert job["resources"]["gpu"] == "1", job
        command = job["command"]
        task = command.split("--task ")[1].split()[0]
        tasks.append(task)
        assert f"--task {task} --mode study --image real --prompt study" in command, command
        if task == "vqav2":
            assert "--samples 5000" in command and "--seed 42" in command, command
            assert "--annotations resources/vqav2/v2_mscoco_val2014_annotations.json" in command
        if task == "caption":
            assert "--questions resources/captions/coco_test.json" in command, command
            assert "--demonstrations resources/captions/coco_train.json" in command, command
    assert tasks.count("pope") == 30 and tasks.count("vqav2") == 10 and tasks.count("caption") == 10
    splits = re.findall(r"sbt\.caption_splits --karpathy (\S+) --split (\w+)", text)
    assert sorted(splits) == [
        ("resources/captions/dataset_coco.json", s) for s in ("test", "train")
    ]
