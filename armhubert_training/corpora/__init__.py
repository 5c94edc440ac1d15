"""Corpus readers: one module per corpus, each turning a corpus into an *index* (one row per utterance,
no audio decoded; see `index`) and the utterances it left out, by reason (`audio.SKIP_REASONS`).

    librispeech.py       LibriSpeech (distillation; SUPERB ASR and PR)
    snips.py             Audio SNIPS (SUPERB SF)
    speech_commands.py   Speech Commands v0.01 (SUPERB KS)
    fluent_commands.py   Fluent Speech Commands (SUPERB IC)
    voxceleb1.py         VoxCeleb1 identification split (SUPERB SID)
    voxceleb1_verification.py  VoxCeleb1 dev/wav and a trial list over test/wav (SUPERB ASV)
    iemocap.py           IEMOCAP (SUPERB ER)
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
from typing import TYPE_CHECKING

from .fluent_commands import fluent_commands_label_set, fluent_commands_utterances
from .folder import folder_utterances
from .iemocap import IEMOCAP_CLASSES, iemocap_utterances
from .index import Utterance, require_dir
from .labels import LabelSet
from .speech_commands import SPEECH_COMMANDS_CLASSES, speech_commands_utterances
from .voxceleb1 import voxceleb1_label_set, voxceleb1_utterances

if TYPE_CHECKING:
    from ..arguments import ClassificationCorpusArguments

# What --corpus reads: the classification corpora in their download layouts (splits train, validation, test).
CLASSIFICATION_CORPORA = ("speech_commands", "fluent_commands", "voxceleb1", "iemocap", "folder")


def corpus_utterances(data_args: ClassificationCorpusArguments, split: str) -> list[Utterance]:
    """The (id, path, label) utterances of one split of --corpus."""
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
    return folder_utterances(require_dir(root / split, f"split {split!r}: folder"))


def corpus_label_set(data_args: ClassificationCorpusArguments, train_labels: Sequence[str] | None) -> LabelSet:
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
