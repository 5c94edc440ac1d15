"""Torch datasets of decoded 16 kHz mono utterances, and the builders that make them from the data
arguments of a script.

Every script reads its audio through here, so that distillation and the SUPERB tasks see exactly the
same waveforms. The path, top to bottom:

1. A corpus reader (`corpora`) produces an *index*: one row per utterance, audio not decoded.
2. `build_dataset` (distillation, CTC) or `build_classification_datasets` filters the index by
   duration (from file headers only) and wraps it in a torch dataset whose items are decoded on
   access: ``{"input_values": np.float32 (samples,), "text": str, "id": str, "epoch": int}`` (a
   classification item has "label" instead of "text"), or ``None`` when the audio of that item cannot
   be decoded. It refuses a split left with no usable utterance, and records on the dataset
   (`skipped`) which utterances it left out and why.
3. `collators.AudioCollator` pads items into a batch and counts the ``None`` ones.
4. `audio.skip_metrics` turns both counts into the ``skipped_files*`` metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch

from configuration_armhubert import RECEPTIVE_FIELD_SAMPLES

from .arguments import (AsrDataArguments, ClassificationDataArguments, DiarizationDataArguments,
                        DistillationDataArguments, SnipsArguments)
from .audio import SAMPLING_RATE, SKIP_REASONS, AudioError, AudioSource, Skipped, load_audio, warn_skipped
from .corpora import check_every_class_trained, corpus_label_set, corpus_utterances
from .corpora.hub import STREAMING_SHUFFLE_BUFFER, hub_dataset, hub_index, hub_labelled_index, row_id_and_text
from .corpora.index import check_not_empty, column, filter_by_length, utterance_index
from .corpora.labels import LabelSet, check_labels
from .corpora.librimix import Recording, Turn, chunk_bounds, librimix_recordings, read_rttm
from .corpora.librispeech import NO_UTTERANCES, librispeech_folder, librispeech_index
from .corpora.snips import snips_folder, snips_index
from .corpora.speech_commands import SILENCE_SECONDS

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Torch datasets
# --------------------------------------------------------------------------- #


class _DecodingDataset:
    """What the map-style and streaming datasets share: decoding, skipping, duration limits.

    Lengths are in samples at 16 kHz. Audio shorter than `min_length`, or
    longer than `max_length` when not cropping, is out of range.
    Utterances longer than `max_length` are cropped to a random window when
    `crop` is true (`_crop_seed` says what the window depends on).
    `set_epoch` moves the windows; call it at the start of every epoch
    (accelerate's data loader does not always forward its own `set_epoch` to
    the dataset, e.g. under DDP). DataLoader workers get a copy of the dataset
    when an epoch's iterator starts, so call it before that, and avoid
    persistent workers if crops should change between epochs.
    """

    def __init__(self, audio_column: str, min_length: int, max_length: int | None, crop: bool, seed: int,
                 effects: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.audio_column = audio_column
        self.effects = effects  # applied after decoding, before cropping (`input_effects.InputEffects`)
        self.min_length = min_length
        self.max_length = max_length
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self._reads: dict[int, int] = {}  # position -> times read since `set_epoch` in this copy (crop seeds)
        # Ids whose audio failed to decode in this process; each is logged once.
        self.failed_ids: set[str] = set()
        # Utterances left out before any decoding, by reason (see SKIP_REASONS); none when streaming.
        self.skipped: Skipped = {reason: [] for reason in SKIP_REASONS}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._reads = {}

    @property
    def crops_per_read(self) -> bool:
        """Whether every read draws a new crop: for items sampled with replacement, read many times per epoch."""
        return False

    def _note_failure(self, utt_id: str, problem: str) -> None:
        """Log a file that came out unusable when read, once per id in this process."""
        if utt_id not in self.failed_ids:
            self.failed_ids.add(utt_id)
            logger.warning("Skipping utterance %s (%d failed so far): %s", utt_id, len(self.failed_ids), problem)

    def _load(self, source: AudioSource, utt_id: str) -> np.ndarray | None:
        """Decoded audio, or None (logged the first time for this id) if it fails."""
        try:
            audio = load_audio(source)
        except AudioError as err:
            self._note_failure(utt_id, str(err))
            return None
        return audio if self.effects is None else self.effects(audio)

    def _in_range(self, length: int) -> bool:
        too_long = self.max_length is not None and not self.crop and length > self.max_length
        return length >= self.min_length and not too_long

    def _crop_seed(self, position: int) -> tuple[int, ...]:
        """The seed of a random crop: the run's seed, the epoch and the item, so that an item read once per
        epoch is cropped the same whichever process or worker reads it (a run on several processes crops
        as one process does). With `crops_per_read` (items sampled with replacement, such as Speech
        Commands' _silence_ items, read hundreds of times per epoch) every read draws a new crop, as SUPERB
        does: the process, the DataLoader worker and how often this copy has read the item join the seed.
        The read counts restart with `set_epoch`, which the trainers also call before each evaluation, so
        that every evaluation draws the same crops."""
        if not self.crops_per_read:
            return (self.seed, position, self.epoch)
        reads = self._reads.get(position, 0)
        self._reads[position] = reads + 1
        worker = torch.utils.data.get_worker_info()
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return (self.seed, position, self.epoch, rank, 0 if worker is None else worker.id + 1, reads)

    def _item(self, audio: np.ndarray, text: str, utt_id: str, position: int) -> dict[str, Any]:
        if self.crop and self.max_length is not None and len(audio) > self.max_length:
            rng = np.random.default_rng(self._crop_seed(position))
            start = int(rng.integers(0, len(audio) - self.max_length + 1))
            audio = audio[start:start + self.max_length]
        # The epoch travels with the item: a collator in a DataLoader worker seeds the span mask with it.
        return {"input_values": audio, "text": text, "id": utt_id, "epoch": self.epoch}


class SpeechDataset(_DecodingDataset, torch.utils.data.Dataset):
    """Map-style dataset over an utterance index; audio is decoded in `__getitem__`.

    The index should already be filtered to the duration range (`build_dataset`
    does this from the file headers).

    Attributes:
        index: the `datasets.Dataset` behind it, with columns ``id``, ``text``,
            ``duration`` (seconds) and the audio column; read it for anything
            that needs no audio (e.g. its transcripts, to build a vocabulary).
        lengths: samples per item at 16 kHz (after cropping), from the header
            durations, for length-grouped batching without decoding.
        skipped: reason -> ids of the utterances of the split left out before
            decoding (see `SKIP_REASONS`); `skip_metrics` counts them.
    """

    def __init__(self, index: datasets.Dataset, audio_column: str, min_length: int,
                 max_length: int | None = None, crop: bool = True, seed: int = 0,
                 skipped: Mapping[str, Sequence[str]] | None = None,
                 effects: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(audio_column, min_length, max_length, crop, seed, effects)
        for reason, ids in (skipped or {}).items():
            self.skipped[reason] = list(ids)
        self.index = index
        lengths = [round(duration * SAMPLING_RATE) for duration in column(index, "duration")]
        if crop and max_length is not None:
            lengths = [min(length, max_length) for length in lengths]
        self.lengths: list[int] = lengths

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, position: int) -> dict[str, Any] | None:
        """-> {"input_values": float32 (samples,), "text": str, "id": str}, or None if the audio fails."""
        row = self.index[position]
        audio = self._load(row[self.audio_column], row["id"])
        if audio is None:
            return None
        if not self._in_range(len(audio)):
            # The header promised a length in range but the file decodes (or its input effects, e.g. silence
            # removal, leave it) to another one: treat it like any other unusable file.
            after = " after the input effects" if self.effects is not None else ""
            self._note_failure(row["id"], f"decodes to {len(audio)} samples{after}, outside the duration range.")
            return None
        return self._item(audio, row["text"], row["id"], position)


class StreamingSpeechDataset(_DecodingDataset, torch.utils.data.IterableDataset):
    """Iterable dataset over a streaming `datasets.IterableDataset`; decodes as it goes.

    Yields the same items as `SpeechDataset` (None for audio that fails to
    decode, or that is shorter than the receptive field: both are named and
    counted). Other utterances outside the duration range are left out, as the
    index filter does for map-style data. In DataLoader workers, the `datasets`
    source splits its shards between the workers.
    """

    def __init__(self, source: datasets.IterableDataset, audio_column: str, text_column: str | None,
                 min_length: int, max_length: int | None = None, crop: bool = True, seed: int = 0) -> None:
        super().__init__(audio_column, min_length, max_length, crop, seed)
        self.source = source
        self.text_column = text_column

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.source.set_epoch(epoch)  # reshuffles the stream

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        for position, row in enumerate(self.source):
            utt_id, text = row_id_and_text(row, position, self.audio_column, self.text_column)
            audio = self._load(row[self.audio_column], utt_id)
            if audio is not None and len(audio) < RECEPTIVE_FIELD_SAMPLES:
                # Unusable for the model, not merely outside a chosen range: named and counted.
                self._note_failure(utt_id, f"decodes to {len(audio)} samples, fewer than the receptive field "
                                           f"({RECEPTIVE_FIELD_SAMPLES}).")
                audio = None
            if audio is None:
                yield None
            elif self._in_range(len(audio)):
                yield self._item(audio, text, utt_id, position)


class LabelledSpeechDataset(SpeechDataset):
    """`SpeechDataset` whose items carry a label: {"input_values", "label" (str), "id", "epoch"}.

    The label is the index's ``text`` column. `sample_weights` (one per item, or None) asks for
    sampling with replacement in proportion to them (class-balanced sampling).
    """

    def __init__(self, *args, sample_weights: list[float] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sample_weights = sample_weights

    @property
    def crops_per_read(self) -> bool:
        return self.sample_weights is not None

    @property
    def labels(self) -> list[str]:
        return column(self.index, "text")

    def _item(self, audio: np.ndarray, text: str, utt_id: str, position: int) -> dict[str, Any]:
        item = super()._item(audio, text, utt_id, position)
        item["label"] = item.pop("text")
        return item


# --------------------------------------------------------------------------- #
# Transcribed (or unlabelled) speech: distillation and CTC
# --------------------------------------------------------------------------- #


def build_dataset(data_args: DistillationDataArguments | AsrDataArguments, split: Literal["train", "eval"],
                  seed: int = 0, purpose: str | None = None, option: str | None = None,
                  has_targets: Callable[[str], bool] | None = None,
                  refusal: str = "whose transcript cannot be turned into training targets",
                  ) -> SpeechDataset | StreamingSpeechDataset:
    """The training or evaluation dataset described by `data_args`.

    Args:
        data_args: the data source and filters.
        split: "train" (`train_splits`) or "eval" (`eval_splits`). With --librispeech_root these
            are split folders; with --dataset_name split names or expressions, read as one split
            joined with "+" (["train", "validation[:10]"] -> "train+validation[:10]").
        seed: seeds the crop windows and the streaming shuffle (pass TrainingArguments.seed).
        purpose: what the data is for, in error messages (default "training" / "evaluation").
        option: the option that named the splits, in error messages (default "--train_splits" /
            "--eval_splits").
        has_targets: transcript -> whether training targets can be made of it; utterances for which
            it says False are left out (reason "no_targets") and named in a warning. Not applied to
            streaming datasets.
        refusal: what makes `has_targets` say False, for that warning ("with a word missing from
            the lexicon").

    Returns:
        A map-style `SpeechDataset`, or a `StreamingSpeechDataset` when
        ``data_args.streaming``. Items are ``{"input_values": np.float32
        (samples,), "text": str, "id": str}``, or None for audio that fails to
        decode (logged once per file; `AudioCollator` drops and counts them).
        Its `skipped` holds the utterances left out before decoding, by reason.

    Raises:
        ValueError: a map-style split has no usable utterance left (none found, all
            unreadable, or all outside the duration limits); the message says which
            split and why. A streaming split cannot be checked before it is read.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    is_train = split == "train"
    max_items = data_args.max_train_samples if is_train else data_args.max_eval_samples
    limits = dict(min_length=data_args.min_audio_samples, max_length=data_args.max_audio_samples,
                  crop=data_args.crop_to_max_duration, seed=seed)
    text_column = data_args.text_column or None
    splits = data_args.train_splits if is_train else data_args.eval_splits
    no_rows = "it has no rows."

    if data_args.librispeech_root is not None:
        index, skipped = librispeech_index(data_args.librispeech_root, splits, data_args.preprocessing_num_workers)
        audio_column = "path"
        where = f"LibriSpeech {librispeech_folder(Path(data_args.librispeech_root))} {list(splits)}"
        no_rows = NO_UTTERANCES
    elif isinstance(data_args, SnipsArguments) and data_args.snips_root is not None:
        index, skipped = snips_index(data_args.snips_root, splits, data_args.preprocessing_num_workers)
        audio_column = "path"
        where = f"Audio SNIPS {snips_folder(Path(data_args.snips_root))} {list(splits)}"
    else:
        hub_split = "+".join(splits)
        hub = hub_dataset(data_args.dataset_name, data_args.dataset_config, hub_split,
                          data_args.audio_column, text_column, streaming=data_args.streaming)
        where = f"{data_args.dataset_name} split {hub_split!r}"
        audio_column = data_args.audio_column
        if data_args.streaming:
            if max_items is not None:
                hub = hub.take(max_items)
            if is_train:
                hub = hub.shuffle(seed=seed, buffer_size=STREAMING_SHUFFLE_BUFFER)
            return StreamingSpeechDataset(hub, audio_column, text_column, **limits)
        index, skipped = hub_index(hub, audio_column, text_column, data_args.preprocessing_num_workers)

    if has_targets is not None:
        keep = [has_targets(text) for text in column(index, "text")]
        if not all(keep):
            ids = column(index, "id")
            refused = [ids[i] for i, kept in enumerate(keep) if not kept]
            warn_skipped(refused, len(keep), where, refusal)
            skipped.setdefault("no_targets", []).extend(refused)
            index = index.select([i for i, kept in enumerate(keep) if kept])
    index, skipped["too_short"], out_of_range = filter_by_length(
        index, data_args.min_audio_samples, None if data_args.crop_to_max_duration else data_args.max_audio_samples,
        where)
    what = f"{purpose or ('training' if is_train else 'evaluation')} data, {where}"
    option = option or ("--train_splits" if is_train else "--eval_splits")
    check_not_empty(index, skipped, out_of_range, what, option, data_args, no_rows)
    if max_items is not None:
        index = index.select(range(min(max_items, len(index))))
    return SpeechDataset(index, audio_column, skipped=skipped, **limits)


# --------------------------------------------------------------------------- #
# Labelled speech: utterance classification
# --------------------------------------------------------------------------- #


@dataclass
class ClassificationData:
    """The datasets of a run and their classes."""

    train: LabelledSpeechDataset | None
    eval: LabelledSpeechDataset | None
    predict: dict[str, LabelledSpeechDataset]
    label_set: LabelSet


def build_classification_datasets(data_args: ClassificationDataArguments, do_train: bool, do_eval: bool,
                                  do_predict: bool, seed: int, label_set: LabelSet | None = None,
                                  split_key=lambda split: split,
                                  effects: Callable[[np.ndarray], np.ndarray] | None = None) -> ClassificationData:
    """Index every split the run needs, check every label against the classes (given by a fine-tuned
    model as `label_set`, else by the task) and, when training on a corpus with fixed classes, that
    every class has training data; wrap the splits in datasets.

    Training crops utterances longer than --max_duration_seconds (or drops them without
    --crop_to_max_duration); evaluation and prediction use whole utterances, except Speech Commands'
    silence items, which are always a random 1 s crop. Speech Commands' train and validation splits are
    sampled class-balanced (`sample_weights`). `split_key` names each prediction split in the result.
    `effects` (SUPERB's input effects, `input_effects.InputEffects`) apply to every waveform after decoding.
    """
    wanted = []  # (role, split expression(s))
    if do_train:
        wanted.append(("train", data_args.train_splits))
    if do_eval:
        wanted.append(("eval", data_args.eval_splits))
    if do_predict:
        wanted += [(f"predict:{split}", [split]) for split in data_args.predict_splits]
    indexed = {}
    class_names = None
    for role, splits in wanted:
        if data_args.corpus is not None:
            readings = [corpus_utterances(data_args, split) for split in splits]
            where = f"{data_args.corpus} {data_args.corpus_root} {list(splits)}"
            index, skipped = utterance_index([u for utterances, _ in readings for u in utterances],
                                             data_args.preprocessing_num_workers, where)
            for _, left_out in readings:  # what the reader left out (e.g. a malformed label line), by reason
                for reason, ids in left_out.items():
                    skipped.setdefault(reason, []).extend(ids)
            audio_column = "path"
        else:
            index, skipped, names = hub_labelled_index(data_args.dataset_name, data_args.dataset_config,
                                                       "+".join(splits), data_args.audio_column,
                                                       data_args.label_column, data_args.preprocessing_num_workers)
            class_names = class_names or names
            where = f"{data_args.dataset_name} split {'+'.join(splits)!r}"
            audio_column = data_args.audio_column
        indexed[role] = (index, skipped, where, audio_column)

    if label_set is None:
        if data_args.corpus is None and class_names is not None:
            label_set = LabelSet.single(class_names)
        else:
            train_labels = column(indexed["train"][0], "text") if "train" in indexed else None
            label_set = corpus_label_set(data_args, train_labels)
    for role, (index, _, where, _) in indexed.items():
        labels = [label for label in column(index, "text") if label or role == "train" or role == "eval"]
        check_labels(label_set, labels, where)

    result = ClassificationData(None, None, {}, label_set)
    for role, (index, skipped, where, audio_column) in indexed.items():
        is_train = role == "train"
        crop_seconds = data_args.max_duration_seconds if is_train and data_args.crop_to_max_duration else None
        if data_args.corpus == "speech_commands" and role in ("train", "eval"):
            crop_seconds = SILENCE_SECONDS  # the other items are 1 s long at most
        drop_above = (data_args.max_audio_samples if is_train and not data_args.crop_to_max_duration else None)
        index, skipped["too_short"], out_of_range = filter_by_length(index, data_args.min_audio_samples,
                                                                    drop_above, where)
        purpose = {"train": "training", "eval": "evaluation"}.get(role, "prediction")
        option = {"train": "--train_splits", "eval": "--eval_splits"}.get(role, "--predict_splits")
        check_not_empty(index, skipped, out_of_range, f"{purpose} data, {where}", option, data_args)
        if is_train:
            check_every_class_trained(data_args, label_set, column(index, "text"), where)
        max_items = {"train": data_args.max_train_samples, "eval": data_args.max_eval_samples}.get(
            role, data_args.max_predict_samples)
        if max_items is not None:
            index = index.select(range(min(max_items, len(index))))
        weights = None
        if data_args.corpus == "speech_commands" and role in ("train", "eval"):
            weights = class_balancing_weights(column(index, "text"))
        dataset = LabelledSpeechDataset(
            index, audio_column, min_length=data_args.min_audio_samples,
            max_length=None if crop_seconds is None else round(crop_seconds * SAMPLING_RATE),
            crop=crop_seconds is not None, seed=seed, skipped=skipped, sample_weights=weights, effects=effects)
        if role == "train":
            result.train = dataset
        elif role == "eval":
            result.eval = dataset
        else:
            result.predict[split_key(role.removeprefix("predict:"))] = dataset
    return result


def class_balancing_weights(labels: Sequence[str]) -> list[float]:
    """N / count(class) per item: sampling N items with replacement by these weights draws every class
    equally often on average."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return [len(labels) / counts[label] for label in labels]


# --------------------------------------------------------------------------- #
# Speaker diarization (SUPERB SD): chunks of LibriMix recordings
# --------------------------------------------------------------------------- #


class DiarizationChunkDataset(_DecodingDataset, torch.utils.data.Dataset):
    """The chunks of diarization recordings, decoded on access.

    An item is {"input_values": float32 ((end - start) * frame_shift,), "labels": float32 (end - start,
    num_speakers) speaker activities, "id": recording, "start": first label frame}, or None when the
    audio fails to decode. A chunk shorter than the receptive field (a last chunk of one frame) is left
    out: the model makes no frame of it.

    Attributes:
        recordings: id -> `Recording`, in split order; reference: id -> turns of the split's RTTM files
            (what DER is scored against); lengths: samples per chunk; skipped: as `SpeechDataset`'s.
    """

    def __init__(self, recordings: Sequence[Recording], reference: Mapping[str, list[Turn]],
                 skipped: Mapping[str, Sequence[str]], chunk_frames: int, frame_shift: int, num_speakers: int) -> None:
        super().__init__("path", RECEPTIVE_FIELD_SAMPLES, None, crop=False, seed=0)
        for reason, ids in skipped.items():
            self.skipped[reason] = list(ids)
        self.recordings = {recording.id: recording for recording in recordings}
        self.reference = dict(reference)
        self.frame_shift, self.num_speakers = frame_shift, num_speakers
        self.chunks = [(recording.id, start, end) for recording in recordings
                       for start, end in chunk_bounds(recording.frames, chunk_frames)
                       if (end - start) * frame_shift >= RECEPTIVE_FIELD_SAMPLES]
        self.lengths = [(end - start) * frame_shift for _, start, end in self.chunks]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, position: int) -> dict[str, Any] | None:
        recording_id, start, end = self.chunks[position]
        recording = self.recordings[recording_id]
        audio = self._load(recording.path, recording_id)
        if audio is None:
            return None
        # A file a little shorter than its reco2dur is padded with silence, so that the chunk has all its frames.
        piece = audio[start * self.frame_shift:end * self.frame_shift]
        piece = np.pad(piece, (0, (end - start) * self.frame_shift - len(piece)))
        return {"input_values": piece, "labels": recording.labels(self.frame_shift, start, end, self.num_speakers),
                "id": recording_id, "start": start}


@dataclass
class DiarizationData:
    """The datasets of a diarization run: train, eval and predict (name -> dataset); None/empty when not asked for."""

    train: DiarizationChunkDataset | None
    eval: DiarizationChunkDataset | None
    predict: dict[str, DiarizationChunkDataset]


def build_diarization_datasets(data_args: DiarizationDataArguments, frame_shift: int, num_speakers: int,
                               do_train: bool, do_eval: bool, do_predict: bool,
                               split_key: Callable[[str], str]) -> DiarizationData:
    """The LibriMix splits the run uses, each a `DiarizationChunkDataset`; a split with no usable recording
    stops the run here."""
    root = Path(data_args.librimix_root)

    def split_dataset(splits: list[str], limit: int | None, option: str) -> DiarizationChunkDataset:
        recordings: list[Recording] = []
        reference: dict[str, list[Turn]] = {}
        skipped: Skipped = {"unreadable": []}
        for split in splits:
            found, left_out = librimix_recordings(root, split, frame_shift, num_speakers,
                                                  data_args.preprocessing_num_workers)
            recordings += found
            skipped["unreadable"] += left_out["unreadable"]
            reference.update(read_rttm(root / split / "rttm"))
        recordings = recordings[:limit]
        dataset = DiarizationChunkDataset(recordings, reference, skipped, data_args.chunk_frames, frame_shift,
                                          num_speakers)
        if not len(dataset):
            why = (f"all {len(skipped['unreadable'])} recordings are unreadable (named in the warning above)"
                   if skipped["unreadable"] else "its wav.scp lists no recording longer than one frame")
            raise ValueError(f"No usable recording in LibriMix {' + '.join(splits)} ({option}): {why}. Check "
                             "--librimix_root and the split names.")
        return dataset

    return DiarizationData(
        train=(split_dataset(data_args.train_splits, data_args.max_train_samples, "--train_splits")
               if do_train else None),
        eval=split_dataset(data_args.eval_splits, data_args.max_eval_samples, "--eval_splits") if do_eval else None,
        predict={split_key(split): split_dataset([split], data_args.max_predict_samples, "--predict_splits")
                 for split in data_args.predict_splits} if do_predict else {})


# --------------------------------------------------------------------------- #
# Speaker verification: the files of a trial list
# --------------------------------------------------------------------------- #


class TrialDataset(LabelledSpeechDataset):
    """The files that `trials` name (each once, whole, without a label), to embed and then score the trials.

    Attributes:
        trials: the `corpora.voxceleb1_verification.Trial`s; one whose file is left out (`skipped`) or fails
            when read cannot be scored and is counted by the trainer.
    """

    def __init__(self, *args, trials: Sequence[Any], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trials = list(trials)
