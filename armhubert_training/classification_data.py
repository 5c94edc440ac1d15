"""Labelled utterances for audio classification: SUPERB's four utterance-level corpora in their original
download layouts, a folder of class folders, or any `datasets` dataset with an audio and a label column.

Each reader gives an *index* (one row per utterance, no audio decoded: ``id``, ``path`` or the audio
column, ``duration`` in seconds, ``text`` = the label as a string) and the utterances it left out by
reason (see `speech_data.SKIP_REASONS`). `build_classification_dataset` turns one into a
`LabelledSpeechDataset` whose items are decoded on access, with the label checked against a `LabelSet`.

The SUPERB corpora are read as s3prl's downstream tasks read them (docs/superb.md of this project
lists the settings):

- ``speech_commands`` (KS): Speech Commands v0.01. Train and validation come from the training archive,
  split by the hash of the speaker part of each file name (< 10 % validation, 10-20 % left out: the
  test portion of the list-less split, the test set being its own archive); the 10 words keep their
  label, the other 20 become ``_unknown_``; each background-noise file is a ``_silence_`` item whose
  audio is a random 1 s crop, drawn anew at each read. Train and validation are sampled class-balanced.
  The test set (`--speech_commands_test_root`) is labelled by its 12 folders.
- ``fluent_commands`` (IC): Fluent Speech Commands, ``data/{train,valid,test}_data.csv``; three slots
  (action, object, location) whose values are indexed in order of first appearance in the train csv.
- ``voxceleb1`` (SID): VoxCeleb1, the identification split file (1 = train, 2 = validation, 3 = test)
  over ``<root>/*/wav/<speaker>/<video>/<n>.wav``; the label is the speaker id; training crops
  utterances longer than 8 s to a random 8 s window (the recipe's --max_duration_seconds).
- ``iemocap`` (ER): IEMOCAP, labels from ``SessionN/dialog/EmoEvaluation/*.txt``; neu, hap (with exc
  merged into it), ang, sad; the others dropped. `--fold N` tests on session N; the other four are
  shuffled (seed 0) into 80 % train and 20 % validation.
- ``folder``: ``<root>/<split>/<label>/<file>``, the `audiofolder` layout, read without `datasets`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from .speech_data import (
    SAMPLING_RATE,
    DataArguments,
    Skipped,
    SpeechDataset,
    _check_not_empty,
    _column,
    _filter_by_length,
    _hub_index,
    _warn_skipped,
    header_durations,
    hub_dataset,
)

logger = logging.getLogger(__name__)

CORPORA = ("speech_commands", "fluent_commands", "voxceleb1", "iemocap", "folder")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

# Speech Commands v0.01 as SUPERB uses it: 10 words, everything else, and background noise, in this order.
SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_COMMANDS_CLASSES = (*SPEECH_COMMANDS_WORDS, "_unknown_", "_silence_")
SPEECH_COMMANDS_NOISE = "_background_noise_"
SILENCE_SECONDS = 1.0
# The list-less split of Speech Commands (TensorFlow's `which_set`): hash modulus and the two cut-offs in %.
_MAX_UTTERANCES_PER_CLASS = 2**27 - 1
_VALIDATION_PERCENT, _TEST_PERCENT = 10.0, 10.0

FLUENT_COMMANDS_SLOTS = ("action", "object", "location")
FLUENT_COMMANDS_CSV = {"train": "train_data.csv", "validation": "valid_data.csv", "test": "test_data.csv"}

VOXCELEB1_CODES = {"train": "1", "validation": "2", "test": "3"}

# IEMOCAP as SUPERB uses it: four classes in this order; "excited" counts as happy.
IEMOCAP_CLASSES = ("neu", "hap", "ang", "sad")
IEMOCAP_MERGED = {"exc": "hap"}
IEMOCAP_SESSIONS = 5
IEMOCAP_DEV_RATIO = 0.2
IEMOCAP_SPLIT_SEED = 0

SPLITS = ("train", "validation", "test")
SLOT_SEPARATOR = "|"


# --------------------------------------------------------------------------- #
# Labels
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class LabelSet:
    """The classes of a task: one slot of values, or several slots (intent classification) whose
    label strings join one value per slot with "|" ("activate|lights|kitchen")."""

    slots: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def single(cls, values: Iterable[str]) -> LabelSet:
        return cls((("label", tuple(values)),))

    @property
    def is_multi_slot(self) -> bool:
        return len(self.slots) > 1

    @property
    def num_labels(self) -> int:
        return sum(len(values) for _, values in self.slots)

    def encode(self, label: str) -> list[int]:
        """A label string -> its value index in each slot (raises KeyError for an unknown one)."""
        parts = label.split(SLOT_SEPARATOR) if self.is_multi_slot else [label]
        if len(parts) != len(self.slots):
            raise KeyError(label)
        return [values.index(part) for part, (_, values) in zip(parts, self.slots)]

    def decode(self, indices: Sequence[int]) -> str:
        """Value indices (one per slot) -> the label string."""
        return SLOT_SEPARATOR.join(values[i] for i, (_, values) in zip(indices, self.slots))

    def unknown(self, labels: Iterable[str]) -> dict[str, int]:
        """label -> count, for the labels that are not in this set."""
        counts: dict[str, int] = {}
        for label in labels:
            try:
                self.encode(label)
            except (KeyError, ValueError):
                counts[label] = counts.get(label, 0) + 1
        return counts

    def config_fields(self) -> dict[str, Any]:
        """`num_labels`, `id2label`, `label2id` and the slot fields of an ArmHubertConfig for these classes."""
        if self.is_multi_slot:
            names = [f"{slot}={value}" for slot, values in self.slots for value in values]
            slot_names, slot_sizes = [slot for slot, _ in self.slots], [len(values) for _, values in self.slots]
        else:
            names, slot_names, slot_sizes = list(self.slots[0][1]), None, None
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)},
                "classifier_slot_names": slot_names, "classifier_slot_sizes": slot_sizes}

    @classmethod
    def from_config(cls, config) -> LabelSet:
        """The classes of a fine-tuned model, from its config."""
        names = [config.id2label[i] for i in range(config.num_labels)]
        if not config.classifier_slot_names:
            return cls.single(names)
        slots = []
        for slot, block in config.slot_slices:
            slots.append((slot, tuple(name.removeprefix(f"{slot}=") for name in names[block])))
        return cls(tuple(slots))


def check_labels(label_set: LabelSet, labels: Sequence[str], where: str) -> None:
    """Refuse labels outside `label_set`, naming them and the valid ones."""
    unknown = label_set.unknown(labels)
    if unknown:
        shown = ", ".join(f"{label!r} ({count}x)" for label, count in list(unknown.items())[:10])
        valid = [list(values) for _, values in label_set.slots]
        raise ValueError(f"{sum(unknown.values())} label(s) of {where} are outside the label set: {shown}. The "
                         f"classes are {valid[0] if len(valid) == 1 else valid} (fixed by the task, taken from the "
                         "training data, or those of the fine-tuned model). Fix the labels or train on data that "
                         "has these classes.")


# --------------------------------------------------------------------------- #
# Corpus readers: (utterances as (id, path, label), skipped) per split
# --------------------------------------------------------------------------- #

Utterance = tuple[str, str, str]  # (id, audio path, label)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder; check --corpus_root "
                                "(the folder of the corpus as downloaded and extracted).")
    return path


def _require_split(split: str, corpus: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"--corpus {corpus} has the splits {list(SPLITS)}, not {split!r}; name them with "
                         "--train_splits, --eval_splits and --predict_splits.")


def speech_commands_hash_split(file_name: str) -> str:
    """'train', 'validation' or 'test' of a Speech Commands file from the hash of its speaker part
    (the part before "_nohash_"), so that one speaker's recordings all fall in one split."""
    speaker = re.sub(r"_nohash_.*$", "", file_name)
    hashed = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percent = (hashed % (_MAX_UTTERANCES_PER_CLASS + 1)) * (100.0 / _MAX_UTTERANCES_PER_CLASS)
    if percent < _VALIDATION_PERCENT:
        return "validation"
    return "test" if percent < _VALIDATION_PERCENT + _TEST_PERCENT else "train"


def speech_commands_utterances(root: Path, split: str, test_root: Path | None) -> list[Utterance]:
    """KS utterances of one split (see the module docstring); ids are "<folder>/<file stem>"."""
    _require_split(split, "speech_commands")
    if split == "test":
        if test_root is None:
            raise ValueError("The Speech Commands test set is its own archive (speech_commands_test_set_v0.01): "
                             "extract it and pass its folder as --speech_commands_test_root.")
        return folder_utterances(_require_dir(test_root, "Speech Commands test folder"))
    _require_dir(root, "Speech Commands folder")
    utterances = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != SPEECH_COMMANDS_NOISE):
        label = folder.name if folder.name in SPEECH_COMMANDS_WORDS else "_unknown_"
        for path in sorted(folder.glob("*.wav")):
            if speech_commands_hash_split(path.name) == split:
                utterances.append((f"{folder.name}/{path.stem}", str(path), label))
    # Every background-noise recording is a silence item of both train and validation (cropped when read).
    for path in sorted((root / SPEECH_COMMANDS_NOISE).glob("*.wav")):
        utterances.append((f"{SPEECH_COMMANDS_NOISE}/{path.stem}", str(path), "_silence_"))
    return utterances


def fluent_commands_label_set(root: Path) -> LabelSet:
    """The three slots, each value indexed in order of first appearance in the train csv (as SUPERB does)."""
    rows = _fluent_commands_rows(root, "train")
    return LabelSet(tuple((slot, tuple(dict.fromkeys(row[slot] for row in rows))) for slot in FLUENT_COMMANDS_SLOTS))


def _fluent_commands_rows(root: Path, split: str) -> list[dict[str, str]]:
    _require_split(split, "fluent_commands")
    path = _require_dir(root, "Fluent Speech Commands folder") / "data" / FLUENT_COMMANDS_CSV[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --corpus_root must be the fluent_speech_commands_dataset "
                                "folder, which holds data/train_data.csv, valid_data.csv and test_data.csv.")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [column for column in ("path", *FLUENT_COMMANDS_SLOTS) if rows and column not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; its columns are {list(rows[0])}.")
    return rows


def fluent_commands_utterances(root: Path, split: str) -> list[Utterance]:
    """IC utterances of one split; the label is "action|object|location", the id the file stem."""
    return [(Path(row["path"]).stem, str(root / row["path"]),
             SLOT_SEPARATOR.join(row[slot] for slot in FLUENT_COMMANDS_SLOTS))
            for row in _fluent_commands_rows(root, split)]


def _voxceleb1_split_lines(split_file: Path) -> list[tuple[str, str]]:
    if not split_file.is_file():
        raise FileNotFoundError(f"VoxCeleb1 split file {split_file} not found; pass the identification split "
                                "(iden_split.txt, lines '<1|2|3> <speaker>/<video>/<n>.wav') as "
                                "--voxceleb1_split_file.")
    lines = []
    for number, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2 or parts[0] not in VOXCELEB1_CODES.values():
                raise ValueError(f"{split_file} line {number} is {line!r}; expected '<1|2|3> <speaker>/<video>/<n>.wav'.")
            lines.append((parts[0], parts[1]))
    return lines


def voxceleb1_label_set(split_file: Path) -> LabelSet:
    """The speakers of the split file, sorted (id10001 ... id11251: SUPERB's class order)."""
    return LabelSet.single(sorted({path.split("/")[0] for _, path in _voxceleb1_split_lines(split_file)}))


def voxceleb1_utterances(root: Path, split: str, split_file: Path) -> list[Utterance]:
    """SID utterances of one split: every split-file line with its code, found under <root>/*/wav/
    (the dev and test archives extracted side by side). The id is "<speaker>/<video>/<n>"."""
    _require_split(split, "voxceleb1")
    wav_folders = sorted(_require_dir(root, "VoxCeleb1 folder").glob("*/wav")) or [root / "wav"]
    utterances = []
    for code, relative in _voxceleb1_split_lines(split_file):
        if code != VOXCELEB1_CODES[split]:
            continue
        found = next((folder / relative for folder in wav_folders if (folder / relative).is_file()),
                     wav_folders[0] / relative)  # a missing file is skipped as unreadable
        utterances.append((relative.removesuffix(".wav"), str(found), relative.split("/")[0]))
    return utterances


def iemocap_utterances(root: Path, split: str, fold: int) -> list[Utterance]:
    """ER utterances of one split for test session `fold` (see the module docstring); ids are utterance names."""
    _require_split(split, "iemocap")
    if not 1 <= fold <= IEMOCAP_SESSIONS:
        raise ValueError(f"--fold must be 1 to {IEMOCAP_SESSIONS} (the session held out for testing), got {fold}.")
    sessions = [fold] if split == "test" else [s for s in range(1, IEMOCAP_SESSIONS + 1) if s != fold]
    utterances = []
    for session in sessions:
        folder = _require_dir(root / f"Session{session}", "IEMOCAP session folder")
        for labels in sorted((folder / "dialog" / "EmoEvaluation").glob("*.txt")):
            for line in labels.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.startswith("["):  # only the "[start - end]\tutterance\temotion\t[v, a, d]" lines
                    continue
                fields = [field for field in re.split(r"\t", line) if field]
                name, emotion = fields[1], IEMOCAP_MERGED.get(fields[2], fields[2])
                if emotion in IEMOCAP_CLASSES:
                    dialog = name.rsplit("_", 1)[0]
                    utterances.append((name, str(folder / "sentences" / "wav" / dialog / f"{name}.wav"), emotion))
    if split == "test":
        return utterances
    order = torch.randperm(len(utterances), generator=torch.Generator().manual_seed(IEMOCAP_SPLIT_SEED)).tolist()
    train_size = int((1 - IEMOCAP_DEV_RATIO) * len(utterances))
    chosen = order[:train_size] if split == "train" else order[train_size:]
    return [utterances[i] for i in chosen]


def folder_utterances(root: Path) -> list[Utterance]:
    """<root>/<label>/<file>: every audio file of every class folder; ids are "<label>/<file stem>"."""
    return [(f"{folder.name}/{path.stem}", str(path), folder.name)
            for folder in sorted(p for p in root.iterdir() if p.is_dir())
            for path in sorted(folder.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES]


# --------------------------------------------------------------------------- #
# Arguments
# --------------------------------------------------------------------------- #


@dataclass
class ClassificationDataArguments(DataArguments):
    """Where the labelled audio comes from: a corpus folder (--corpus) or a `datasets` dataset."""

    # Not options here: LibriSpeech has no classes, streaming datasets cannot be checked for unknown
    # labels before training, and the label column is --label_column.
    librispeech_root: str | None = field(default=None, init=False)  # type: ignore[assignment]
    streaming: bool = field(default=False, init=False)  # type: ignore[assignment]
    text_column: str = field(default="", init=False)  # type: ignore[assignment]
    dataset_name: str | None = field(default=None, metadata={
        "help": "A `datasets` dataset with an audio column and a label column: a hub name or a local path "
                "(parquet/arrow/CSV/JSON files). Use this or --corpus."})
    train_splits: list[str] | None = field(default=None, metadata={
        "help": "What to train on (default: train): with --corpus train, validation or test; with --dataset_name "
                "split names or expressions, e.g. 'train[:1000]', joined into one."})
    eval_splits: list[str] | None = field(default=None, metadata={
        "help": "What --do_eval scores (and the best checkpoint is chosen on), read like --train_splits "
                "(default: validation)."})
    max_duration_seconds: float | None = field(default=None, metadata={
        "help": "Training only: utterances longer than this, in seconds, are cropped to a random window of that "
                "length, drawn anew for each (seed, item, epoch) (SUPERB's SID: 8), or dropped with "
                "--crop_to_max_duration false. Evaluation and prediction use whole utterances."})
    crop_to_max_duration: bool = field(default=True, metadata={
        "help": "With --max_duration_seconds: crop longer training utterances (true) or drop them (false)."})
    corpus: str | None = field(default=None, metadata={
        "help": f"A corpus in its original download layout, one of {list(CORPORA)}, under --corpus_root; "
                "its splits are train, validation and test. Use this or --dataset_name.", "choices": CORPORA})
    corpus_root: str | None = field(default=None, metadata={
        "help": "The corpus folder: speech_commands: the extracted speech_commands_v0.01 archive; fluent_commands: "
                "fluent_speech_commands_dataset/ (with data/*.csv); voxceleb1: the folder holding the extracted "
                "archives as dev/wav and test/wav (or wav/); iemocap: IEMOCAP_full_release/ (Session1..5); "
                "folder: <root>/<split>/<label>/<audio file>."})
    speech_commands_test_root: str | None = field(default=None, metadata={
        "help": "speech_commands: the extracted speech_commands_test_set_v0.01 archive (the test split)."})
    voxceleb1_split_file: str | None = field(default=None, metadata={
        "help": "voxceleb1: the identification split file (iden_split.txt); default <corpus_root>/iden_split.txt."})
    fold: int = field(default=1, metadata={
        "help": "iemocap: the session held out as the test split (1-5); SUPERB reports the mean over the 5 folds."})
    label_column: str = field(default="label", metadata={
        "help": "Column of --dataset_name holding the label (class names, or a ClassLabel)."})
    predict_splits: list[str] | None = field(default=None, metadata={
        "help": "What --do_predict classifies, each split scored on its own (default: test)."})
    max_predict_samples: int | None = field(default=None, metadata={
        "help": "Classify only the first N utterances of each prediction split, for quick runs."})

    def _check_source_and_default_splits(self) -> None:
        self.corpus = self.corpus or None
        self.dataset_name = self.dataset_name or None
        if (self.corpus is None) == (self.dataset_name is None):
            raise ValueError("Give exactly one data source: --corpus (with --corpus_root) or --dataset_name; got "
                             f"corpus={self.corpus!r}, dataset_name={self.dataset_name!r}.")
        if self.corpus is not None and not self.corpus_root:
            raise ValueError(f"--corpus {self.corpus} needs --corpus_root, the folder the corpus was extracted to.")
        self.train_splits = self.train_splits or ["train"]
        self.eval_splits = self.eval_splits or ["validation"]
        self.predict_splits = self.predict_splits or ["test"]
        if self.max_predict_samples is not None and self.max_predict_samples < 1:
            raise ValueError(f"--max_predict_samples must be a positive integer; got {self.max_predict_samples}.")

    @property
    def split_file(self) -> Path:
        return Path(self.voxceleb1_split_file) if self.voxceleb1_split_file else Path(self.corpus_root) / "iden_split.txt"


# --------------------------------------------------------------------------- #
# Datasets
# --------------------------------------------------------------------------- #


class LabelledSpeechDataset(SpeechDataset):
    """`SpeechDataset` whose items carry a label: {"input_values", "label" (str), "id", "epoch"}.

    The label is the index's ``text`` column. `sample_weights` (one per item, or None) asks for
    sampling with replacement in proportion to them (class-balanced sampling).
    """

    def __init__(self, *args, sample_weights: list[float] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sample_weights = sample_weights

    @property
    def labels(self) -> list[str]:
        return _column(self.index, "text")

    def _item(self, audio: np.ndarray, text: str, utt_id: str, position: int) -> dict[str, Any]:
        item = super()._item(audio, text, utt_id, position)
        item["label"] = item.pop("text")
        return item


def _corpus_index(utterances: list[Utterance], num_workers: int | None, where: str) -> tuple[datasets.Dataset, Skipped]:
    """Index rows (id, path, duration, text = label) of the readable utterances, from file headers."""
    durations = header_durations([path for _, path, _ in utterances], num_workers)
    columns: dict[str, list] = {"id": [], "path": [], "duration": [], "text": []}
    skipped: Skipped = {"unreadable": []}
    for (utt_id, path, label), duration in zip(utterances, durations):
        if duration is None:
            skipped["unreadable"].append(utt_id)
            continue
        for name, value in zip(columns, (utt_id, path, duration, label)):
            columns[name].append(value)
    _warn_skipped(skipped["unreadable"], len(utterances), where)
    features = datasets.Features({"id": datasets.Value("string"), "path": datasets.Value("string"),
                                  "duration": datasets.Value("float64"), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(columns, features=features), skipped


def corpus_utterances(data_args: ClassificationDataArguments, split: str) -> list[Utterance]:
    root = Path(data_args.corpus_root)
    if data_args.corpus == "speech_commands":
        test_root = Path(data_args.speech_commands_test_root) if data_args.speech_commands_test_root else None
        return speech_commands_utterances(root, split, test_root)
    if data_args.corpus == "fluent_commands":
        return fluent_commands_utterances(root, split)
    if data_args.corpus == "voxceleb1":
        return voxceleb1_utterances(root, split, data_args.split_file)
    if data_args.corpus == "iemocap":
        return iemocap_utterances(root, split, data_args.fold)
    return folder_utterances(_require_dir(root / split, f"split {split!r}: folder"))


def corpus_label_set(data_args: ClassificationDataArguments, train_labels: Sequence[str] | None) -> LabelSet:
    """The classes of the task: fixed by SUPERB's corpora, else those of the training labels (sorted)."""
    if data_args.corpus == "speech_commands":
        return LabelSet.single(SPEECH_COMMANDS_CLASSES)
    if data_args.corpus == "iemocap":
        return LabelSet.single(IEMOCAP_CLASSES)
    if data_args.corpus == "fluent_commands":
        return fluent_commands_label_set(Path(data_args.corpus_root))
    if data_args.corpus == "voxceleb1":
        return voxceleb1_label_set(data_args.split_file)
    if train_labels is None:
        raise ValueError("The classes come from the training labels: add --do_train, or start from a fine-tuned model.")
    return LabelSet.single(sorted(set(train_labels)))


def _hub_labelled_index(data_args: ClassificationDataArguments, split: str) -> tuple[datasets.Dataset, Skipped, list[str] | None]:
    """(index with the label as text, skipped, the ClassLabel names of the label column or None)."""
    dataset = hub_dataset(data_args.dataset_name, data_args.dataset_config, split, data_args.audio_column,
                          text_column=None)
    column = data_args.label_column
    if column not in dataset.column_names:
        raise ValueError(f"dataset {data_args.dataset_name!r} split {split!r} has no label column {column!r}; its "
                         f"columns are {dataset.column_names}. Set --label_column to one of them.")
    feature = dataset.features[column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    values = _column(dataset, column)
    labels = [names[v] if names is not None and v is not None and v >= 0 else ("" if v is None else str(v))
              for v in values]
    # The row ids ("id" column, else the file names) name the utterances in the predictions.
    kept = [data_args.audio_column] + (["id"] if "id" in dataset.column_names else [])
    dataset = dataset.select_columns(kept).add_column("_label", labels)
    index, skipped = _hub_index(dataset, data_args.audio_column, "_label", data_args.preprocessing_num_workers)
    return index, skipped, names


@dataclass
class ClassificationData:
    """The datasets of a run and their classes."""

    train: LabelledSpeechDataset | None
    eval: LabelledSpeechDataset | None
    predict: dict[str, LabelledSpeechDataset]
    label_set: LabelSet


def build_classification_datasets(data_args: ClassificationDataArguments, do_train: bool, do_eval: bool,
                                  do_predict: bool, seed: int, label_set: LabelSet | None = None,
                                  split_key=lambda split: split) -> ClassificationData:
    """Index every split the run needs, check every label against the classes (given by a fine-tuned
    model as `label_set`, else by the task), and wrap the splits in datasets.

    Training crops utterances longer than --max_duration_seconds (or drops them without
    --crop_to_max_duration); evaluation and prediction use whole utterances, except Speech Commands'
    silence items, which are always a random 1 s crop. Speech Commands' train and validation splits are
    sampled class-balanced (`sample_weights`). `split_key` names each prediction split in the result.
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
            utterances = [u for split in splits for u in corpus_utterances(data_args, split)]
            where = f"{data_args.corpus} {data_args.corpus_root} {list(splits)}"
            index, skipped = _corpus_index(utterances, data_args.preprocessing_num_workers, where)
            audio_column = "path"
        else:
            index, skipped, names = _hub_labelled_index(data_args, "+".join(splits))
            class_names = class_names or names
            where = f"{data_args.dataset_name} split {'+'.join(splits)!r}"
            audio_column = data_args.audio_column
        indexed[role] = (index, skipped, where, audio_column)

    if label_set is None:
        if data_args.corpus is None and class_names is not None:
            label_set = LabelSet.single(class_names)
        else:
            train_labels = _column(indexed["train"][0], "text") if "train" in indexed else None
            label_set = corpus_label_set(data_args, train_labels)
    for role, (index, _, where, _) in indexed.items():
        labels = [label for label in _column(index, "text") if label or role == "train" or role == "eval"]
        check_labels(label_set, labels, where)

    result = ClassificationData(None, None, {}, label_set)
    for role, (index, skipped, where, audio_column) in indexed.items():
        is_train = role == "train"
        crop_seconds = data_args.max_duration_seconds if is_train and data_args.crop_to_max_duration else None
        if data_args.corpus == "speech_commands" and role in ("train", "eval"):
            crop_seconds = SILENCE_SECONDS  # the other items are 1 s long at most
        drop_above = (data_args.max_audio_samples if is_train and not data_args.crop_to_max_duration else None)
        index, skipped["too_short"], out_of_range = _filter_by_length(index, data_args.min_audio_samples,
                                                                     drop_above, where)
        purpose = {"train": "training", "eval": "evaluation"}.get(role, "prediction")
        option = {"train": "--train_splits", "eval": "--eval_splits"}.get(role, "--predict_splits")
        _check_not_empty(index, skipped, out_of_range, f"{purpose} data, {where}", data_args, option)
        max_items = {"train": data_args.max_train_samples, "eval": data_args.max_eval_samples}.get(
            role, data_args.max_predict_samples)
        if max_items is not None:
            index = index.select(range(min(max_items, len(index))))
        weights = None
        if data_args.corpus == "speech_commands" and role in ("train", "eval"):
            weights = class_balancing_weights(_column(index, "text"))
        dataset = LabelledSpeechDataset(
            index, audio_column, min_length=data_args.min_audio_samples,
            max_length=None if crop_seconds is None else round(crop_seconds * SAMPLING_RATE),
            crop=crop_seconds is not None, seed=seed, skipped=skipped, sample_weights=weights)
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
