"""Batches of the items of `speech_datasets`: padded audio, the items that failed to decode dropped and
counted, and (for classification) the encoded labels. The CTC collator, which encodes transcripts,
is `asr_vocabulary.CtcCollator`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from .audio import raw_waveform_feature_extractor
from .corpora.labels import LabelSet

_PADDER = raw_waveform_feature_extractor()


class BatchMasker(Protocol):
    """Draws a batch's frame mask in the collator: sample-level attention_mask (B, S), the B utterance ids
    and the epoch -> bool (B, T), True = masked frame."""

    def __call__(self, attention_mask: torch.Tensor, utterance_ids: Sequence[str], epoch: int) -> torch.Tensor: ...


@dataclass
class AudioCollator:
    """Pad items from `speech_datasets` into a batch, dropping the None ones.

    Returns:
        ``input_values``: float32 (B, S), zero-padded on the right;
        ``attention_mask``: long (B, S), 1 for real samples, 0 for padding;
        ``input_lengths``: list of B ints, the real samples of each item (the rows of
        ``attention_mask`` summed);
        ``text``: list of B transcripts (when the items have "text");
        ``id``: list of B utterance ids (when the items have "id");
        ``num_skipped``: int, how many None items were dropped;
        ``item_positions``: list of B ints, where each kept item was in `items` (what
        `speech_trainer.SplitScoringTrainer.gather_rows` needs to tell apart the items that
        accelerate repeats to even out the processes' last batches);
        ``mask_time_indices``: bool (B, T), only with `span_mask`: the frames to
        mask, T the number of frames the model makes of S samples.
        B is the number of non-None items and S the longest of them. If every
        item is None, the batch is empty:
        ``input_values`` and ``attention_mask`` of shape (0, 0), ``input_lengths``
        [], ``item_positions`` [], ``num_skipped`` = number of items, no ``text``; test
        ``input_values.shape[0] == 0``.

    The lengths and the count are Python values, which the Trainer leaves on the
    host when it moves a batch to the device: the task models need the lengths
    there (packing, per-utterance random draws, length checks) and the trainers
    count the skipped items at every step; reading them back from a GPU would
    stall it each time.

    With `span_mask` (e.g. `distillation_trainer.DistillationMasker`), the
    collator also draws the batch's span mask. It then runs in the DataLoader
    workers instead of the training step; it is seeded only by what the items
    carry (their "id"s and "epoch"), so a batch gets the same mask wherever it
    is collated.
    """

    span_mask: BatchMasker | None = None

    def __call__(self, items: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        positions = [position for position, item in enumerate(items) if item is not None]
        present = [items[position] for position in positions]
        num_skipped = len(items) - len(present)
        if not present:
            return {
                "input_values": torch.zeros(0, 0, dtype=torch.float32),
                "attention_mask": torch.zeros(0, 0, dtype=torch.long),
                "input_lengths": [],
                "item_positions": [],
                "num_skipped": num_skipped,
            }
        # The feature extractor's own padding: zeros on the right and a 1/0 attention mask.
        padded = _PADDER.pad({"input_values": [np.asarray(item["input_values"], dtype=np.float32) for item in present]},
                             padding="longest", return_attention_mask=True, return_tensors="pt")
        attention_mask = padded["attention_mask"].long()
        batch: dict[str, Any] = {"input_values": padded["input_values"].float(), "attention_mask": attention_mask,
                                 "input_lengths": attention_mask.sum(-1).tolist()}
        if "text" in present[0]:
            batch["text"] = [item["text"] for item in present]
        if "id" in present[0]:
            batch["id"] = [item["id"] for item in present]
        batch["item_positions"] = positions
        batch["num_skipped"] = num_skipped
        if self.span_mask is not None:
            if "id" not in present[0]:
                raise ValueError("Drawing the span mask in the collator needs an 'id' in every item (it seeds "
                                 "the mask); build the dataset with `build_dataset`, whose items have one.")
            # Items without an epoch (datasets other than build_dataset's) count as epoch 0.
            epoch = int(present[0].get("epoch", 0))
            batch["mask_time_indices"] = self.span_mask(attention_mask, batch["id"], epoch)
        return batch


@dataclass
class ClassificationCollator:
    """`AudioCollator`'s batch plus ``label`` (the B label strings) and ``labels``: long (B,), or (B, slots)
    for a several-slot task; no ``labels`` when an item has no label (unlabelled prediction data)."""

    label_set: LabelSet
    audio: AudioCollator = field(default_factory=AudioCollator)

    def __call__(self, items: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        batch = self.audio(items)
        labels = [item["label"] for item in items if item is not None]
        batch["label"] = labels
        if labels and all(labels):
            encoded = torch.tensor([self.label_set.encode(label) for label in labels], dtype=torch.long)
            batch["labels"] = encoded if self.label_set.is_multi_slot else encoded[:, 0]
        return batch


@dataclass
class DiarizationCollator:
    """`AudioCollator`'s batch of `DiarizationChunkDataset` items plus ``labels``: float32 (B, T, speakers),
    T the longest chunk's label frames, padded with 0 (the model reads each item's own frames only), and
    ``start``: the B chunks' first label frames (``id`` names their recordings)."""

    audio: AudioCollator = field(default_factory=AudioCollator)

    def __call__(self, items: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        batch = self.audio(items)
        present = [item for item in items if item is not None]
        if present:
            frames = max(len(item["labels"]) for item in present)
            labels = torch.zeros(len(present), frames, present[0]["labels"].shape[1])
            for row, item in enumerate(present):
                labels[row, :len(item["labels"])] = torch.from_numpy(item["labels"])
            batch["labels"] = labels
        batch["start"] = [item["start"] for item in present]
        return batch
