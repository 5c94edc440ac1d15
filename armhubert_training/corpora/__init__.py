"""Corpus readers: one module per corpus, each turning a corpus into an *index* (one row per utterance,
no audio decoded; see `index`) and the utterances it left out, by reason (`audio.SKIP_REASONS`).

    librispeech.py       LibriSpeech (distillation; SUPERB ASR and PR)
    snips.py             Audio SNIPS (SUPERB SF)
    speech_commands.py   Speech Commands v0.01 (SUPERB KS)
    fluent_commands.py   Fluent Speech Commands (SUPERB IC)
    voxceleb1.py         VoxCeleb1 identification split (SUPERB SID)
    librimix.py          Libri2Mix in s3prl's Kaldi-style folders (SUPERB SD)
    voxceleb1_verification.py  VoxCeleb1 dev/wav and a trial list over test/wav (SUPERB ASV)
    iemocap.py           IEMOCAP (SUPERB ER)
    quesst14.py          QUESST 2014, English (SUPERB QbE; read by run_query_by_example.py)
    folder.py            a folder of class folders
    hub.py               any `datasets` dataset, for every task
    labels.py            the classes of a classification task (`LabelSet`)
    index.py             what the readers share: index columns, length filter, emptiness check

The SUPERB corpora are read as s3prl's downstream tasks read them (docs/superb.md of this project
lists the settings). The classification corpora (--corpus of run_audio_classification.py) are
dispatched below; `speech_datasets` wraps an index in a torch dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..audio import Skipped
from .fluent_commands import fluent_commands_label_set, fluent_commands_utterances
from .folder import folder_utterances
from .iemocap import IEMOCAP_CLASSES, iemocap_utterances
from .index import Utterance, require_dir
from .labels import LabelSet
from .speech_commands import SPEECH_COMMANDS_CLASSES, speech_commands_utterances
from .voxceleb1 import voxceleb1_label_set, voxceleb1_utterances

# What --corpus reads: the classification corpora in their download layouts (splits train, validation, test).
CLASSIFICATION_CORPORA = ("speech_commands", "fluent_commands", "voxceleb1", "iemocap", "folder")
# The corpora whose classes the task fixes, and where in the corpus each class's training data comes from.
FIXED_CLASS_SOURCES = {
    "speech_commands": "the 10 words are the folders of that name in --corpus_root, _unknown_ the other words' "
                       "folders and _silence_ the recordings in its _background_noise_ folder",
    "fluent_commands": "the slot values are those of data/train_data.csv",
    "voxceleb1": "the speakers are those of the split file; each needs a file on a line of code 1 (train)",
    "iemocap": "the emotions come from the EmoEvaluation files of the training sessions (all but --fold)",
}


class CorpusOptions(Protocol):
    """Where --corpus is and how it is split (the classification scripts' corpus options)."""

    corpus: str
    corpus_root: str
    speech_commands_test_root: str | None
    split_file: Path  # VoxCeleb1's identification split file
    fold: int  # IEMOCAP's held-out session


def corpus_utterances(data_args: CorpusOptions, split: str) -> tuple[list[Utterance], Skipped]:
    """The (id, path, label) utterances of one split of --corpus, and those the reader left out, by reason."""
    root = Path(data_args.corpus_root)
    if data_args.corpus == "speech_commands":
        test_root = Path(data_args.speech_commands_test_root) if data_args.speech_commands_test_root else None
        return speech_commands_utterances(root, split, test_root)
    if data_args.corpus == "fluent_commands":
        return fluent_commands_utterances(root, split), {}
    if data_args.corpus == "voxceleb1":
        return voxceleb1_utterances(root, split, data_args.split_file), {}
    if data_args.corpus == "iemocap":
        return iemocap_utterances(root, split, data_args.fold)
    return folder_utterances(require_dir(root / split, f"split {split!r}: folder"))


def check_every_class_trained(data_args: CorpusOptions, label_set: LabelSet,
                              train_labels: Sequence[str], where: str) -> None:
    """Stop a training run on a corpus with fixed classes when one of them has no usable training
    utterance: the model would never learn it, yet be scored on it."""
    absent = label_set.absent(train_labels) if data_args.corpus in FIXED_CLASS_SOURCES else []
    if absent:
        shown = f"{absent[:10]}{' and others' if len(absent) > 10 else ''}"
        raise ValueError(f"The training data ({where}) has no usable utterance of the class(es) {shown} ({len(absent)} "
                         f"of {label_set.num_labels}): a model never trained on them would still be scored on them. "
                         f"In this corpus {FIXED_CLASS_SOURCES[data_args.corpus]}. Restore the missing part of the "
                         "corpus, or repair the files named in the warnings above.")


def corpus_label_set(data_args: CorpusOptions, train_labels: Sequence[str] | None) -> LabelSet:
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
