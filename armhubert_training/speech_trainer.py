"""`SpeechTrainer`: what the project's Trainers share for batches of raw audio from `speech_datasets`.

- batches grouped by length from the lengths in the file headers (never by decoding audio), over
  the global batch, in an order seeded by (seed, epoch): the same in every process and after resuming;
  evaluation batches too are ordered from header lengths (or sequentially), never by decoding;
- the training dataset told the epoch (it moves random crop windows);
- files left out counted by reason (`audio.skip_metrics`): those left out when the corpus was
  indexed, plus those that failed when read (dropped by `AudioCollator`), which are also logged.
  Training reports `skipped_files*` (carried over a resume in the checkpoint's TrainerState),
  each evaluation `eval_skipped_files*`; a batch whose files were all unreadable costs a zero step
  instead of a crash;
- the project's own model card, written to output_dir and uploaded by `push_to_hub`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import datasets
import torch
import transformers
from accelerate.utils import gather_object
from huggingface_hub import ModelCard
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import BatchRebalanceSampler, LengthGroupedSampler
from transformers.trainer_utils import EvalLoopOutput, PredictionOutput, has_length, seed_worker, speed_metrics

from .audio import SAMPLING_RATE, skip_metrics

logger = logging.getLogger(__name__)


def setup_script_logging(training_args: TrainingArguments, *script_loggers: str) -> None:
    """Log to stdout at the Trainer's level for this process (warnings only on the other processes),
    for the script's own loggers, the project's shared modules, datasets and transformers."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    for name in (*script_loggers, __package__):
        logging.getLogger(name).setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)


def split_name(split: str) -> str:
    """A split name or expression as the name of its scores and predictions file: 'test[:10%]' -> 'test_10'."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", split).strip("_")


class EpochSeededSampler:
    """Mixin for a sampler with a `generator` attribute: a fresh generator seeded by (seed, epoch) at
    every epoch. Seeding by epoch rather than drawing from a global generator makes the order the same
    in every process and after resuming from a checkpoint. Call `_init_epoch_seed` in `__init__`."""

    generator: torch.Generator | None

    def _init_epoch_seed(self, seed: int) -> None:
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class LengthGroupedEpochSampler(EpochSeededSampler, LengthGroupedSampler):
    """Length-grouped order from lengths known up front, reshuffled by (seed, epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self._init_epoch_seed(seed)


class AudioBudgetBatchSampler(Sampler[list[int]]):
    """Batches bounded by padded audio: at most `max_batch_size` utterances, and
    len(batch) x its longest utterance <= `max_samples` (the samples a padded batch holds, what its
    memory grows with; fairseq's `max_tokens`, as DPHuBERT batches).

    Each epoch the utterances are ordered by length (longest first; equal lengths in an order seeded
    by (seed, epoch)), cut greedily into batches under both limits, and the batches are visited in an
    order seeded by (seed, epoch): every utterance exactly once per epoch, little padding, and the
    same batches in every process and after resuming. Long utterances come in small batches and short
    ones in large batches, so a budget that fits the longest utterance fits every batch.
    """

    def __init__(self, lengths: list[int], max_samples: int, max_batch_size: int, seed: int):
        if not lengths:
            raise ValueError("AudioBudgetBatchSampler needs at least one utterance length.")
        if max(lengths) > max_samples:
            raise ValueError(f"--max_batch_seconds ({max_samples / SAMPLING_RATE:g} s) is shorter than the longest "
                             f"utterance ({max(lengths) / SAMPLING_RATE:.2f} s): raise it, or crop or drop long "
                             "utterances with --max_duration_seconds.")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}.")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.max_samples, self.max_batch_size, self.seed, self.epoch = max_samples, max_batch_size, seed, 0
        # Batch boundaries depend only on the sorted lengths, so their number is the same every epoch.
        self._num_batches = len(self._batches(torch.Generator().manual_seed(seed)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, generator: torch.Generator) -> list[list[int]]:
        shuffled = torch.randperm(len(self.lengths), generator=generator)
        order = shuffled[torch.argsort(self.lengths[shuffled], descending=True, stable=True)].tolist()
        batches, batch = [], []
        for index in order:
            longest = int(self.lengths[batch[0]]) if batch else int(self.lengths[index])  # sorted: the first
            if batch and (len(batch) == self.max_batch_size or (len(batch) + 1) * longest > self.max_samples):
                batches.append(batch)
                batch = []
            batch.append(index)
        batches.append(batch)
        return batches

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = self._batches(generator)
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]

    def __len__(self) -> int:
        return self._num_batches


class EpochCallback(TrainerCallback):
    """Tell the training dataset (its random crop windows) and the epoch-seeded samplers (their order)
    the epoch, before the epoch's batches are drawn. The data loader's own `set_epoch` reaches neither
    in every case: not the dataset under DDP, and not the sampler of a run resumed inside an epoch
    after the first on several processes (accelerate's `SkipBatchSampler` wraps it), which would then
    replay the first epoch's order."""

    def __init__(self, receivers: list):
        self.receivers = receivers  # filled by the trainer as it builds its samplers

    def on_epoch_begin(self, args, state, control, **kwargs):
        for receiver in self.receivers:
            receiver.set_epoch(int(state.epoch or 0))


class SkippedFilesCallback(TrainerCallback, ExportableState):
    """Counts the training files that failed when read (None items), over all processes and across resumes.

    Its count is saved in every checkpoint's TrainerState (`stateful_callbacks`) and read back at
    the start of a resumed run, so the run reports its whole count. (Transformers itself restores
    callback states only with --restore_callback_states_from_checkpoint, which restores every
    callback's state; this one needs no such flag.)
    """

    def __init__(self) -> None:
        self.undecodable = 0

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"undecodable": self.undecodable}}

    def on_train_begin(self, args, state, control, **kwargs):
        # A fresh run's state holds this callback's own count; a resumed one, the checkpoint's.
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0]
        if saved:
            self.undecodable = int(saved.get("attributes", {}).get("undecodable", self.undecodable))


class SpeechTrainer(Trainer):
    """A Trainer for batches of `speech_datasets` items. Subclasses write `compute_loss`.

    Args:
        model_card_fn: builds the README.md written to output_dir (and uploaded by `push_to_hub`);
            None = the Trainer's generic card.
        max_batch_seconds: bound training batches by padded audio as well as by utterance count
            (`AudioBudgetBatchSampler`); None = batches of per_device_train_batch_size utterances.
        All other arguments are the Trainer's.
    """

    # Files copied next to every saved model (task trainers: the pipeline class of the model).
    pipeline_files: tuple[Path, ...] = ()

    def __init__(self, *args, model_card_fn: Callable[[], ModelCard] | None = None,
                 max_batch_seconds: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # Our collators' batches carry what the loss and the scoring need besides the model's inputs
        # (ids, references, skip counts); the Trainer's column pruning would drop them silently.
        self.args.remove_unused_columns = False
        self.model_card_fn = model_card_fn
        self.max_batch_seconds = max_batch_seconds
        if self.args.dataloader_persistent_workers and hasattr(self.train_dataset, "set_epoch"):
            raise ValueError("--dataloader_persistent_workers keeps each worker's copy of the dataset at the epoch "
                             "it started in, so random crops and span masks would repeat every epoch: leave it off.")
        # Our losses are means per batch: let the Trainer average them over gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.add_callback(SkippedFilesCallback())
        self._eval_undecodable = 0  # files that failed when read in the current evaluation, this process
        self._pending_undecodable = 0  # training files that failed when read since `_commit_skipped`, this process
        self._stand_in: dict[str, Any] | None = None  # see stand_in_batch
        self._epoch_receivers = [self.train_dataset] if hasattr(self.train_dataset, "set_epoch") else []
        self.add_callback(EpochCallback(self._epoch_receivers))

    @property
    def data_seed(self) -> int:
        """The seed of every data order: --data_seed, else --seed (as the Trainer's own samplers)."""
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    @property
    def _skip_counter(self) -> SkippedFilesCallback:
        # Looked up each time: restoring callback states from a checkpoint replaces the instance.
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, SkippedFilesCallback))

    def skipped_files_metrics(self) -> dict[str, int]:
        """`skipped_files` and `skipped_files_<reason>` of the training split: the files left out when it
        was indexed, plus those that failed when read during training (including the runs this one resumed):
        every process's up to the last training log, checkpoint or the end of training, and this process's
        since."""
        return skip_metrics(self.train_dataset, self._skip_counter.undecodable + self._pending_undecodable)

    @property
    def skipped_files(self) -> int:
        """All training files left out so far, for every reason."""
        return self.skipped_files_metrics()["skipped_files"]

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's loader, or with `max_batch_seconds` one whose batches come from an
        `AudioBudgetBatchSampler` (accelerate hands each process every N-th batch)."""
        if self.max_batch_seconds is None:
            return super().get_train_dataloader()
        lengths = getattr(self.train_dataset, "lengths", None)
        if lengths is None:
            raise ValueError("--max_batch_seconds needs utterance lengths known up front (a LibriSpeech folder or a "
                             "map-style --dataset_name), not a streamed dataset.")
        batch_sampler = self.epoch_seeded(AudioBudgetBatchSampler(
            list(lengths), max_samples=round(self.max_batch_seconds * SAMPLING_RATE),
            max_batch_size=self.args.per_device_train_batch_size, seed=self.data_seed))
        args = self.args
        loader = DataLoader(
            self.train_dataset, batch_sampler=batch_sampler, collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index))
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        strategy = self.args.train_sampling_strategy
        if strategy in ("group_by_length", "batch_rebalance") and dataset is not None and has_length(dataset):
            if lengths is None:
                # The Trainer would decode every item to learn its length (and fail on an unreadable one).
                logger.warning("train_sampling_strategy %s needs lengths known up front, which this dataset lacks; "
                               "sampling at random instead.", strategy)
                return RandomSampler(dataset)
            if strategy == "batch_rebalance":
                world_size = max(1, self.args.world_size)
                return BatchRebalanceSampler(
                    lengths=list(lengths), effective_batch_size=(self.args.train_batch_size
                                                                 * self.args.gradient_accumulation_steps * world_size),
                    dp_size=world_size, grad_accum=self.args.gradient_accumulation_steps,
                    rank=self.args.process_index if world_size > 1 else 0, drop_last=self.args.dataloader_drop_last)
            # Group by the global batch (all processes, all accumulation steps), so the utterances of one
            # optimisation step are the same however the run is split.
            global_batch = (self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
                            * self.args.world_size)
            return self.epoch_seeded(LengthGroupedEpochSampler(global_batch, lengths, seed=self.data_seed))
        return super()._get_train_sampler(train_dataset)

    def get_eval_dataloader(self, eval_dataset=None):
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        self._restart_reads(self.eval_dataset[dataset] if isinstance(dataset, str) else dataset)
        return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        self._restart_reads(test_dataset)
        return super().get_test_dataloader(test_dataset)

    @staticmethod
    def _restart_reads(dataset) -> None:
        """Every evaluation reads its split as the first did: the same random crops (`_crop_seed`)."""
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(0)

    def epoch_seeded(self, sampler):
        """`sampler`, registered to be told the epoch at each epoch's start (`EpochCallback`)."""
        self._epoch_receivers.append(sampler)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation and prediction order: grouped by the header lengths, or sequential.

        The Trainer's own sampler decodes every item of the split at each evaluation to learn
        its length, and crashes on the None of an unreadable file.
        """
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        lengths = getattr(eval_dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths is not None:
            return LengthGroupedSampler(self.args.eval_batch_size, lengths=list(lengths),
                                        generator=torch.Generator().manual_seed(self.data_seed))
        # Under several processes, None lets accelerate shard the dataset in order.
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def count_skipped(self, inputs: dict[str, Any], training: bool = True) -> None:
        """Take `num_skipped` out of a batch; count and log the files that failed when read.

        Args:
            training: count into the training split's count (carried over resumes), else into
                the current evaluation's.
        """
        skipped = inputs.pop("num_skipped", None)
        if skipped is None or int(skipped) == 0:
            return
        if training:
            self._pending_undecodable += int(skipped)
            so_far = self._skip_counter.undecodable + self._pending_undecodable
            where = "training (the other processes' counted up to the last log)"
        else:
            self._eval_undecodable += int(skipped)
            so_far, where = self._eval_undecodable, "this evaluation"
        logger.warning("Skipped %d audio file(s) of this batch that failed when read (%d reads so far in %s).",
                       int(skipped), so_far, where)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """The Trainer's loop, plus `<prefix>_skipped_files*` of the evaluated split."""
        self._eval_undecodable = 0
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        # Each process read its own share of the batches; what the index left out is the same in every one.
        undecodable = self.accelerator.reduce(torch.tensor(self._eval_undecodable, device=self.args.device), "sum")
        counts = skip_metrics(getattr(dataloader, "dataset", None), int(undecodable))
        output.metrics.update({f"{metric_key_prefix}_{key}": value for key, value in counts.items()})
        return output

    @staticmethod
    def is_empty(inputs: dict[str, Any]) -> bool:
        """True for a batch whose files were all unreadable."""
        return inputs["input_values"].numel() == 0

    def pop_bookkeeping(self, inputs: dict[str, Any]) -> None:
        """Take the collator's fields that are not model inputs (ids, references, counts) out of a training
        batch; `num_skipped` is taken by `count_skipped` before."""

    def stand_in_batch(self) -> dict[str, Any]:
        """A one-utterance training batch on the device, for a process whose batch had no readable file.

        That process runs its training step on this batch with the loss times zero. Under several
        processes, DDP all-reduces the gradients during each backward that follows the wrapped model's
        forward; a process that skipped its step would average its next gradients with the others'
        current ones, and the processes would drift apart or hang. A zero loss through the same
        forward keeps them in step and adds nothing. The batch is the first readable item of the
        training data, collated as any batch, its bookkeeping taken out, read once, when first needed.
        """
        if self._stand_in is None:
            dataset = self.train_dataset
            items = (dataset[i] for i in range(len(dataset))) if has_length(dataset) else iter(dataset)
            for item in items:
                batch = self.data_collator([item]) if item is not None else None
                if batch is not None and not self.is_empty(batch):
                    for count in ("num_skipped", "num_unknown_chars"):  # counted when the item was first read
                        batch.pop(count, None)
                    self.pop_bookkeeping(batch)
                    self._stand_in = self._prepare_inputs(batch)
                    break
            else:
                raise RuntimeError("No file of the training data could be read (the warnings above name each one): "
                                   "check the corpus, or the data options that point to it.")
        return dict(self._stand_in)  # a copy: the loss takes entries out of its batch

    def _commit_skipped(self) -> None:
        """Add every process's training files that failed since the last commit to the run's count.

        Called where all processes are at the same point (a training log, a checkpoint save, the end of
        training), so that the count logged, saved in checkpoints and reported is the whole run's."""
        pending = torch.tensor(self._pending_undecodable, device=self.args.device)
        self._skip_counter.undecodable += int(self.accelerator.reduce(pending, "sum"))
        self._pending_undecodable = 0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # every process logs the training loss at the same steps
            self._commit_skipped()
            logs["skipped_files"] = self.skipped_files
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial) -> None:
        self._commit_skipped()  # the checkpoint's count, restored on resume, is every process's
        super()._save_checkpoint(model, trial)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        self._commit_skipped()
        return output

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:  # the pipeline class named in config.custom_pipelines travels with the model
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            for module in self.pipeline_files:
                (folder / module.name).write_text(module.read_text())

    def create_model_card(self, **kwargs) -> None:
        """Write our card instead of the Trainer's generic one."""
        if self.model_card_fn is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            self.model_card_fn().save(os.path.join(self.args.output_dir, "README.md"))


def incomplete_checkpoint_reason(checkpoint: str | os.PathLike) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from (a save that was killed half-way), or None
    when it is complete: trainer_state.json parses, the model weights open with their full size, and the
    optimizer and scheduler states are there and end as a torch.save archive ends."""
    import json

    from safetensors import SafetensorError, safe_open

    folder = os.fspath(checkpoint)

    def present(name: str) -> bool:
        path = os.path.join(folder, name)
        return os.path.isdir(path) or (os.path.isfile(path) and os.path.getsize(path) > 0)

    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict) or "global_step" not in state:
            return "trainer_state.json holds no global_step"
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError) as err:
        return f"trainer_state.json does not parse ({err})"

    names = set(os.listdir(folder))
    # DeepSpeed and FSDP keep weights and optimizer in their own files; only their presence is checked.
    sharded_engine = any(name.startswith(("global_step", "pytorch_model_fsdp", "optimizer_0")) for name in names)
    weights = []
    if "model.safetensors.index.json" in names:
        try:
            with open(os.path.join(folder, "model.safetensors.index.json"), encoding="utf-8") as f:
                weights = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as err:
            return f"model.safetensors.index.json does not parse ({err})"
    elif "model.safetensors" in names:
        weights = ["model.safetensors"]
    for name in weights:
        try:
            # Opening reads the header and checks that the file is as long as the header says.
            with safe_open(os.path.join(folder, name), framework="pt"):
                pass
        except (OSError, SafetensorError) as err:
            return f"{name} is incomplete or corrupt ({err})"
    if not weights and not sharded_engine and not present("pytorch_model.bin"):
        return "no model weights (model.safetensors)"
    if not sharded_engine:
        optimizer = next((name for name in ("optimizer.pt", "optimizer.bin") if present(name)), None)
        if optimizer is None:
            return "no optimizer state (optimizer.pt)"
        if not present("scheduler.pt"):
            return "no scheduler state (scheduler.pt)"
        # Weights without safetensors: an older Transformers' torch.save'd pytorch_model.bin.
        for name in (*([] if weights else ["pytorch_model.bin"]), optimizer, "scheduler.pt"):
            # torch.save writes a zip archive whose directory comes last: a file cut short has none.
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not zipfile.is_zipfile(path):
                return f"{name} is incomplete (cut short, or not written by torch.save)"
    return None


def resolve_resume_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint `--resume_from_checkpoint` asks for.

    "last" (or true) is the newest complete checkpoint-N in `output_dir`: newer folders left incomplete by
    a crash during a save are skipped, each logged with what it lacks, so that resuming never needs
    them deleted by hand. A path is returned as given; None or "" means no resuming.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

    if resume_from_checkpoint in (None, "", False, "false", "False"):
        return None
    if resume_from_checkpoint not in (True, "last", "true", "True"):
        return str(resume_from_checkpoint)
    if not os.path.isdir(output_dir):
        raise ValueError(f"--resume_from_checkpoint last: the output directory {output_dir} does not exist; "
                         "give the --output_dir of the run to resume, or start without --resume_from_checkpoint.")
    # Transformers' own lookup, in step order; names such as checkpoint-4-tmp are not checkpoints.
    checkpoints = [path for path in sort_checkpoints(output_dir, PREFIX_CHECKPOINT_DIR)
                   if os.path.basename(path).removeprefix(f"{PREFIX_CHECKPOINT_DIR}-").isdigit()]
    if not checkpoints:
        raise ValueError(f"--resume_from_checkpoint last: no {PREFIX_CHECKPOINT_DIR}-* folder in {output_dir}.")
    skipped = []
    for path in reversed(checkpoints):
        reason = incomplete_checkpoint_reason(path)
        if reason is None:
            if skipped:
                logger.warning("Resuming from %s, the newest complete checkpoint; skipped newer ones that an "
                               "interrupted save left incomplete: %s. Move or delete those folders: checkpoint "
                               "rotation (save_total_limit) counts them as checkpoints.", path, "; ".join(skipped))
            else:
                logger.info("Resuming from %s", path)
            return path
        skipped.append(f"{path}: {reason}")
    raise ValueError(f"--resume_from_checkpoint last: no complete checkpoint in {output_dir}; "
                     f"{'; '.join(skipped)}. Resume from an explicit checkpoint path or start the run anew.")


def select_items(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The batch's items at `rows`: every tensor and list with one entry per item is indexed along its
    first dimension; the rest (counts) is kept."""
    size = len(batch["input_values"])
    index = torch.tensor(rows, dtype=torch.long)
    selected: dict[str, Any] = {}
    for key, value in batch.items():
        if torch.is_tensor(value) and value.dim() > 0 and len(value) == size:
            selected[key] = value[index]
        elif isinstance(value, list) and len(value) == size:
            selected[key] = [value[row] for row in rows]
        else:
            selected[key] = value
    return selected


@dataclass
class ScoredSplit:
    """One split as a task trainer scored it: the rows of its `<name>_predictions.tsv` and its metrics."""

    ids: list[str]
    references: list[str]  # "" for an utterance without a reference
    predictions: list[str]  # transcripts (CTC) or labels (classification), in the order of `ids`
    metrics: dict[str, float]  # prefixed "<name>_"


class SplitScoringTrainer(SpeechTrainer):
    """What the task Trainers share: a supervised loss on (input_values, attention_mask, labels) batches,
    and evaluation that scores the whole split with the task's metrics and writes a predictions file.

    The Trainer's evaluation hooks work as a Transformers user expects: `evaluate()` (also a dict of
    datasets, as the Trainer), `predict()` (its predictions are the decoded strings), `on_evaluate` /
    `on_predict` / `on_prediction_step` callbacks (so the progress bar shows), the speed metrics, and
    `metric_for_best_model` on any metric of the task. `compute_metrics` and
    `preprocess_logits_for_metrics` are refused: the task's metrics are computed on decoded strings
    by `run_split`; extend it in a subclass to add one.
    """

    # The collator's lists of per-utterance counts that the model takes as host ints, so that its training
    # forward reads none back from the device (see AudioCollator).
    host_length_inputs: tuple[str, ...] = ("input_lengths",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.compute_metrics is not None or self.preprocess_logits_for_metrics is not None:
            raise ValueError(
                f"{type(self).__name__} computes the task's metrics itself, on decoded transcripts or labels "
                "(run_split), so compute_metrics / preprocess_logits_for_metrics would never be called. Leave them "
                f"out; to add a metric, subclass {type(self).__name__} and extend run_split.")

    # -- the steps of a task script's run ------------------------------------------------------

    def training_counts(self) -> dict[str, int]:
        """What training left out, for the train_* metrics: the skipped files by reason (a task trainer
        adds its own counts)."""
        return self.skipped_files_metrics()

    def train_and_save(self, **extra: float) -> dict[str, float]:
        """--do_train: train (--resume_from_checkpoint "last" = the newest complete checkpoint in output_dir),
        save the model and the Trainer state, and record the train metrics: the Trainer's, `training_counts`
        (prefixed train_) and `extra`."""
        checkpoint = resolve_resume_checkpoint(self.args.resume_from_checkpoint, self.args.output_dir)
        result = self.train(resume_from_checkpoint=checkpoint)
        self.save_model()
        metrics = dict(result.metrics, **{f"train_{key}": value for key, value in self.training_counts().items()},
                       **extra)
        self.record("train", metrics)
        self.save_state()
        weights = getattr(self.accelerator.unwrap_model(self.model), "layer_weight_distribution", None)
        if weights is not None:
            logger.info("Learned layer weights (softmax): %s", " ".join(f"{w:.3f}" for w in weights.tolist()))
        return metrics

    def record(self, split: str, metrics: dict[str, float]) -> dict[str, float]:
        """Log `metrics` and write them to output_dir/<split>_results.json; returns them."""
        self.log_metrics(split, metrics)
        self.save_metrics(split, metrics)
        return metrics

    def publish(self, commit_message: str) -> None:
        """After training: push the model with its card to the Hub (--push_to_hub), else write the card to
        output_dir."""
        if self.args.push_to_hub:
            self.push_to_hub(commit_message=commit_message)
        else:
            self.create_model_card()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.count_skipped(inputs)
        self.pop_bookkeeping(inputs)
        empty = self.is_empty(inputs)
        if empty:  # no file of this batch could be read: a zero loss through the same forward
            inputs = self.stand_in_batch()
        host_lengths = {name: inputs.get(name) for name in self.host_length_inputs}
        outputs = model(input_values=inputs["input_values"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"], **host_lengths)
        loss = outputs.loss * 0.0 if empty else outputs.loss
        return (loss, outputs) if return_outputs else loss

    def run_split(self, dataset, name: str, dataloader: DataLoader | None = None) -> ScoredSplit:
        """Run the model over `dataset` (or `dataloader`), write `<name>_predictions.tsv` and score it
        (subclasses run the model with `score_batches`)."""
        raise NotImplementedError

    def score_batches(self, dataloader: DataLoader,
                      score_batch: Callable[[dict[str, Any]], list]) -> tuple[list, int]:
        """The evaluation loop of every task trainer: `score_batch(batch)` returns one row (a prediction,
        an embedding, ...) per item of a batch, run in eval mode without gradients, the batch on the
        device with its bookkeeping fields (ids, references) still in it and `num_skipped`
        and `item_positions` taken out. Each process scores its own share of the batches; returns the
        rows of every process, in batch order, and the number of files that failed to read, summed over
        the processes. A batch with no readable file is not scored.

        Under several processes, the items that accelerate repeats to even out the last batches are
        left out before scoring (`repeated_items`), so that they count in no metric, loss or skip count.
        """
        self.model.eval()
        rows: list = []
        undecodable = 0
        for batch in dataloader:
            positions = batch.pop("item_positions")
            batch_items = len(positions) + int(batch.pop("num_skipped", 0))
            repeated = self.repeated_items(batch_items)
            # Counted per split, not into training's count.
            undecodable += len(set(range(batch_items)) - set(positions) - repeated)
            if repeated & set(positions):
                batch = select_items(batch, [row for row, position in enumerate(positions)
                                             if position not in repeated])
            batch_rows: list = []
            if not self.is_empty(batch):
                with torch.no_grad():
                    batch_rows = score_batch(self._prepare_inputs(batch))
            rows.extend(self.gather_rows(batch_rows))
            self.prediction_step_done(dataloader)
        counts = torch.tensor([undecodable], device=self.args.device)
        return rows, int(self.accelerator.reduce(counts, "sum").item())

    def gather_rows(self, rows: list) -> list:
        """This batch's rows from every process, in process order. Called for every batch, one without a
        row too, so that the processes' gathers stay paired."""
        return gather_object(rows) if self.accelerator.num_processes > 1 else rows

    def repeated_items(self, batch_items: int) -> set[int]:
        """The positions in this process's batch of `batch_items` items that hold items accelerate repeated
        to even out the processes' last batches.

        Laid end to end in process order, the last batches hold the split's remaining items first, then
        the repeats (the split's first items): accelerate's `gather_for_metrics` cuts the gathered results
        at the number of remaining items. Cutting results is wrong when an item failed to read (it has no
        result, and a repeat moves up into the cut); positions in the batches are not moved by failures."""
        state = self.accelerator.gradient_state
        if self.accelerator.num_processes == 1 or not (state.end_of_dataloader and state.remainder > 0):
            return set()
        sizes = gather_object([batch_items])  # every process's, in process order
        offset = sum(sizes[:self.accelerator.process_index])
        return {position for position in range(batch_items) if offset + position >= state.remainder}

    def prediction_step_done(self, dataloader: DataLoader) -> None:
        """Tell the callbacks a batch was scored (the Trainer's progress bar counts these)."""
        self.callback_handler.eval_dataloader = dataloader
        self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)

    def _timed_split(self, dataset, name: str, dataloader: DataLoader) -> ScoredSplit:
        start = time.time()
        scored = self.run_split(dataset, name, dataloader)
        scored.metrics.update(speed_metrics(name, start, num_samples=len(scored.ids), num_steps=len(dataloader)
                                            if has_length(dataloader) else None))
        return scored

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Score the evaluation split(s): a dict of datasets (or the name of one of `self.eval_dataset`'s)
        is scored per dataset under "<prefix>_<name>_", as the Trainer does."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            metrics: dict[str, float] = {}
            for key, split in dataset.items():
                metrics.update(self.evaluate(split, ignore_keys, f"{metric_key_prefix}_{key}"))
            return metrics
        if isinstance(dataset, str):
            dataset = self.eval_dataset[dataset]
        metrics = self._timed_split(dataset, metric_key_prefix, self.get_eval_dataloader(dataset)).metrics
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Score `test_dataset` like `evaluate` (without logging) and return its predictions: the decoded
        strings, with the references as `label_ids` when the data has them."""
        scored = self._timed_split(test_dataset, metric_key_prefix, self.get_test_dataloader(test_dataset))
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, scored.metrics)
        label_ids = scored.references if any(scored.references) else None
        return PredictionOutput(predictions=scored.predictions, label_ids=label_ids, metrics=scored.metrics)
