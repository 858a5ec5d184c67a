"""Running transformers' Trainer for `sbt.training.train`: one progress line per logging
step on stderr, a stop at the first NaN or infinite loss (and that run's checkpoints
deleted, so a rerun starts afresh instead of diverging again), and the study's loss
averaging. transformers is imported lazily: importing this module stays light.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time

from sbt.train_config import TrainConfig


class NonFiniteLossError(RuntimeError):
    """Training diverged: the logged loss is NaN or infinite."""


def exit_status(output, train) -> int:
    """A training CLI's ending: run ``train()`` (returning the run's info), 1 with one
    error line when it diverged, else 0 after one summary line from global rank 0."""
    try:
        info = train()
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    if os.environ.get("RANK", "0") == "0":  # under torchrun: one line, not one per process
        loss = info["final_loss"]
        loss = "n/a" if loss is None else f"{loss:.4f}"
        print(f"wrote {output}: {info['global_step']} steps, final loss {loss}", file=sys.stderr)
    return 0


def _clock(seconds: float | None) -> str:
    """h:mm:ss (or ? when not known yet)."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def trainer_callbacks():
    """The callbacks of every run (stop on a non-finite loss, progress on stderr); their
    classes are built here, so importing this module does not import transformers."""
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        """Abort as soon as a logged loss is NaN or infinite (nothing useful comes after)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"training diverged: loss is {loss} at step {state.global_step}; "
                    "lower the learning rate or check the data and precision settings"
                )

    class StderrProgress(TrainerCallback):
        """One line per logging step on stderr: step, loss, learning rate, elapsed, ETA."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started, self.first_step = time.monotonic(), state.global_step  # resumed: > 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                elapsed = time.monotonic() - self.started
                done = state.global_step - self.first_step
                left = elapsed / done * (state.max_steps - state.global_step) if done else None
                print(
                    f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                    f"lr {logs.get('learning_rate', float('nan')):.3g} "
                    f"elapsed {_clock(elapsed)} eta {_clock(left)}",
                    file=sys.stderr,
                    flush=True,
                )
            elif "train_runtime" in logs:
                print(
                    f"done: {state.global_step} steps in {logs['train_runtime']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )

    return [StopOnNonFiniteLoss(), StderrProgress()]


def run_trainer(network, args, dataset, collator, callbacks, hp: TrainConfig, resume_from, work):
    """Train; a diverged run's checkpoints are deleted (a rerun then starts afresh)."""
    from transformers import PrinterCallback, Trainer

    trainer = Trainer(
        model=network,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[*trainer_callbacks(), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    if hp.loss_averaging == "micro_batch":
        # transformers 4.31's loss: the model's mean over each micro-batch's trained tokens,
        # divided by the accumulation steps (and averaged over processes by DDP/DeepSpeed).
        # A Trainer that believes the model takes no loss kwargs does exactly that instead of
        # dividing by the step's trained tokens (tests/test_recipe.py pins this).
        trainer.model_accepts_loss_kwargs = False
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteLossError:
        # Resuming a diverged run would only diverge again: let a rerun start afresh.
        if args.process_index == 0:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return trainer
