"""Fine-tune a LLaMA-family backbone on LLaVA-format conversations (full or LoRA).

Loss is on assistant tokens only. Hyperparameters default to the study's text-only
settings; `--hparams` overrides any of them with a JSON object, for example
`'{"max_steps": 20, "bf16": false, "lora": {"r": 8}}'`. The known keys and their
defaults are listed at the end of --help (declared in sbt/train_config.py, documented in
config/README.md).

The output directory appears only when training succeeded; checkpoints live beside it in
`OUTPUT.checkpoints/` so that the same command, run again after a crash, resumes
(hparam `resume`: "auto"; another run's checkpoints are moved aside, "never" starts afresh).
For several GPUs launch it with `torchrun --nproc_per_node N -m sbt.train ...`.
"""

from __future__ import annotations

import argparse

from sbt.common import cli, use_offline_hub
from sbt.templates import TEMPLATE_NAMES
from sbt.train_config import TrainConfig
from sbt.train_loop import exit_status
from sbt.training import METHODS, config_from_json, train


def _defaults() -> str:
    return "\n".join(f"  {key} = {value!r}" for key, value in TrainConfig().to_dict().items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1] + "\nhparams and their defaults:\n" + _defaults(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="backbone: local directory or HF id")
    parser.add_argument("--template", required=True, choices=TEMPLATE_NAMES)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--data", required=True, help="LLaVA-format JSON (list of records)")
    parser.add_argument("--output", required=True, help="model or adapter directory to create")
    parser.add_argument("--hparams", default="{}", help="JSON object of overrides (default {})")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_offline_hub()
    hparams = config_from_json(args.hparams)
    run = (args.model, args.template, args.method, args.data, args.output, hparams)
    return exit_status(args.output, lambda: train(*run))


if __name__ == "__main__":
    raise SystemExit(main())
