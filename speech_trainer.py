"""`SpeechTrainer`: what the project's Trainers share for batches of raw audio from `speech_data`.

- batches grouped by length from the lengths in the file headers (never by decoding audio), over
  the global batch, in an order seeded by (seed, epoch): the same in every process and after resuming;
- the training dataset told the epoch (it moves random crop windows);
- unreadable audio files (dropped by `AudioCollator`) counted, logged, and reported as `skipped_files`;
  a batch whose files were all unreadable costs a zero step instead of a crash;
- the project's own model card, written to output_dir and uploaded by `push_to_hub`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import datasets
import torch
import transformers
from huggingface_hub import ModelCard
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

logger = logging.getLogger(__name__)


def setup_script_logging(training_args: TrainingArguments, *script_loggers: str) -> None:
    """Log to stdout at the Trainer's level for this process (warnings only on the other processes),
    for the script's own loggers, the project's shared modules, datasets and transformers."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    for name in (*script_loggers, "speech_trainer", "speech_data"):
        logging.getLogger(name).setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)


class LengthGroupedEpochSampler(LengthGroupedSampler):
    """Length-grouped order from lengths known up front, reshuffled by (seed, epoch).

    Seeding by epoch rather than drawing from a global generator makes the order the same in every
    process and after resuming from a checkpoint.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class DatasetEpochCallback(TrainerCallback):
    """Tell the training dataset the epoch, which moves its random crop windows (the data loader
    does not forward `set_epoch` to a dataset under DDP)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class SpeechTrainer(Trainer):
    """A Trainer for `speech_data` batches. Subclasses write `compute_loss`.

    Args:
        model_card_fn: builds the README.md written to output_dir (and uploaded by `push_to_hub`);
            None = the Trainer's generic card.
        All other arguments are the Trainer's.
    """

    def __init__(self, *args, model_card_fn: Callable[[], ModelCard] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_card_fn = model_card_fn
        # Our losses are means per batch: let the Trainer average them over gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.skipped_files = 0
        if hasattr(self.train_dataset, "set_epoch"):
            self.add_callback(DatasetEpochCallback(self.train_dataset))

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths is not None:
            # Group by the global batch (all processes, all accumulation steps), so the utterances of one
            # optimisation step are the same however the run is split.
            global_batch = (self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
                            * self.args.world_size)
            return LengthGroupedEpochSampler(global_batch, lengths, seed=self.args.data_seed or self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def count_skipped(self, inputs: dict[str, Any]) -> None:
        """Take `num_skipped` out of a batch; count and log the unreadable files it reports."""
        skipped = inputs.pop("num_skipped", None)
        if skipped is not None and int(skipped) > 0:
            self.skipped_files += int(skipped)
            logger.warning("Skipped %d unreadable audio file(s) in this batch (%d so far).", int(skipped),
                           self.skipped_files)

    @staticmethod
    def is_empty(inputs: dict[str, Any]) -> bool:
        """True for a batch whose files were all unreadable."""
        return inputs["input_values"].numel() == 0

    @staticmethod
    def zero_loss(model) -> torch.Tensor:
        """A zero loss that still reaches every trained parameter, so that all processes run the same
        collective operations when one of them has an empty batch."""
        return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs["skipped_files"] = self.skipped_files
        super().log(logs, start_time)

    def create_model_card(self, **kwargs) -> None:
        """Write our card instead of the Trainer's generic one."""
        if self.model_card_fn is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            self.model_card_fn().save(os.path.join(self.args.output_dir, "README.md"))
