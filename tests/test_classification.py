"""Audio classification: the corpus readers on tiny corpora written in each original layout,
run_audio_classification.py (training, results against the written predictions, intent classification's
all-three-slots accuracy, errors) and the pipeline of the models it writes."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import soundfile
import torch
import transformers
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments

from conftest import LIBRISPEECH, REPO, bundled_waveforms, pad_batch, tiny_config
import run_audio_classification
from armhubert_training.arguments import ClassificationDataArguments
from armhubert_training.audio import skip_metrics
from armhubert_training.classification_trainer import ClassificationTrainer, accuracies, read_predictions
from armhubert_training.collators import ClassificationCollator
from armhubert_training.corpora.folder import folder_utterances
from armhubert_training.corpora.iemocap import IEMOCAP_CLASSES
from armhubert_training.corpora.labels import LabelSet
from armhubert_training.corpora.speech_commands import (SPEECH_COMMANDS_CLASSES, SPEECH_COMMANDS_WORDS,
                                                        speech_commands_hash_split)
from armhubert_training.speech_datasets import build_classification_datasets
from armhubert_training.speech_trainer import setup_script_logging
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertForSequenceClassification

RATE = 16_000
# Speaker parts of Speech Commands file names whose hash puts them in each part of the list-less split.
SPEAKERS = {"train": ["00000001", "00000003"], "validation": ["00000000", "00000007"], "test": ["00000002"]}
# The words of the Speech Commands folders whose speakers fall in each split: every class needs training
# data; validation and the left-out test part keep 2 targets and 1 other word, to stay small.
SC_WORDS = {"train": (*SPEECH_COMMANDS_WORDS, "bed"), "validation": ("yes", "no", "bed"), "test": ("yes", "no", "bed")}
QUICK = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "3", "--logging_steps", "1",
         "--save_strategy", "no", "--dataloader_num_workers", "0", "--dataloader_pin_memory", "false",
         "--report_to", "none", "--classifier_proj_size", "32", "--seed", "0"]


class Clips:
    """Distinct short clips cut from the bundled audio, written as 16 kHz wav files."""

    def __init__(self):
        files = sorted((LIBRISPEECH / "train-clean-100").rglob("*.flac"))
        self.sources = [soundfile.read(f, dtype="float32")[0] for f in files]
        self.count = 0

    def write(self, path: Path, seconds: float = 0.6) -> Path:
        source, length = self.sources[self.count % len(self.sources)], round(seconds * RATE)
        # Later rounds start 0.5 s further into each source, wrapping round so that no clip comes out empty.
        start = (self.count // len(self.sources)) * RATE // 2 % max(len(source) - length, 1)
        self.count += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, source[start:start + length], RATE, subtype="PCM_16")
        return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Tiny corpora in the four original layouts (and a class-folder one), from the bundled audio."""
    root, clips = tmp_path_factory.mktemp("corpora"), Clips()
    # Speech Commands v0.01: word folders (the 10 targets and 1 other word), background noise, a test archive.
    sc = root / "speech_commands"
    for split, speakers in SPEAKERS.items():
        for word in SC_WORDS[split]:
            for speaker in speakers:
                clips.write(sc / word / f"{speaker}_nohash_0.wav", 1.0)
    clips.write(sc / "_background_noise_" / "white_noise.wav", 2.5)
    (sc / "_background_noise_" / "README.md").write_text("not audio")
    for label in ("yes", "no", "_unknown_", "_silence_"):
        for i in range(2):
            clips.write(root / "speech_commands_test" / label / f"{i:08x}_nohash_0.wav", 1.0)
    # Fluent Speech Commands: data/*.csv (with the original's leading index column) and wavs/speakers/.
    fsc = root / "fluent"
    intents = {"train": [("activate", "lights", "kitchen"), ("deactivate", "lights", "none"),
                         ("increase", "heat", "washroom"), ("activate", "music", "none"),
                         ("decrease", "volume", "none"), ("bring", "shoes", "none")],
               "validation": [("activate", "lights", "none"), ("increase", "heat", "kitchen")],
               "test": [("deactivate", "music", "none"), ("bring", "shoes", "none"), ("activate", "lights", "kitchen")]}
    (fsc / "data").mkdir(parents=True)
    for split, name in (("train", "train_data.csv"), ("validation", "valid_data.csv"), ("test", "test_data.csv")):
        with open(fsc / "data" / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "path", "speakerId", "transcription", "action", "object", "location"])
            for i, (action, obj, location) in enumerate(intents[split]):
                relative = f"wavs/speakers/spk{i % 2}/{split}-{i}.wav"
                clips.write(fsc / relative, 0.5 + 0.1 * i)
                writer.writerow([i, relative, f"spk{i % 2}", "...", action, obj, location])
    # VoxCeleb1: the dev and test archives side by side, and the identification split file.
    vox = root / "voxceleb1"
    lines = []
    for code, archive, speaker, video, count in [("1", "dev", "id10001", "aaa", 3), ("1", "dev", "id10002", "bbb", 3),
                                                 ("2", "dev", "id10001", "ccc", 1), ("2", "dev", "id10002", "ddd", 1),
                                                 ("1", "test", "id10003", "ggg", 1), ("3", "test", "id10003", "eee", 1),
                                                 ("3", "test", "id10001", "fff", 1)]:
        for n in range(1, count + 1):
            clips.write(vox / archive / "wav" / speaker / video / f"{n:05d}.wav", 0.7)
            lines.append(f"{code} {speaker}/{video}/{n:05d}.wav")
    lines.append("1 id10002/zzz/00001.wav")  # listed but not on disk: skipped and counted
    (vox / "iden_split.txt").write_text("\n".join(lines) + "\n")
    # IEMOCAP: per session, EmoEvaluation label files and sentences/wav/<dialog>/<utterance>.wav.
    iemocap = root / "IEMOCAP_full_release"
    emotions = ["neu", "exc", "ang", "sad", "hap", "fru", "xxx"]
    for session in range(1, 6):
        dialog = f"Ses0{session}F_impro01"
        rows = []
        for i, emotion in enumerate(emotions):
            name = f"{dialog}_F{i:03d}"
            clips.write(iemocap / f"Session{session}" / "sentences" / "wav" / dialog / f"{name}.wav", 0.5)
            rows.append(f"[{i}.0 - {i}.5]\t{name}\t{emotion}\t[2.5, 2.5, 2.5]")
        text = "% header\n\n" + "\n".join(f"{row}\nC-E1:\tNeutral;\t()" for row in rows) + "\n"
        (iemocap / f"Session{session}" / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (iemocap / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(text)
    return {"speech_commands": sc, "speech_commands_test": root / "speech_commands_test", "fluent": fsc,
            "voxceleb1": vox, "iemocap": iemocap}


def data_args(**values) -> ClassificationDataArguments:
    return ClassificationDataArguments(**values)


def labels_by_id(dataset) -> dict[str, str]:
    return dict(zip(dataset.index["id"], dataset.labels))


# ----------------------------------------------------------------------------------------------
# ArmHubertForSequenceClassification
# ----------------------------------------------------------------------------------------------

SLOTS = dict(num_labels=9, classifier_slot_names=["action", "object", "location"], classifier_slot_sizes=[3, 4, 2])
MODES = {
    "superb": dict(classifier_mode="superb", classifier_proj_size=32),
    "fine-tune": dict(classifier_mode="fine_tune", classifier_proj_size=32, projection_dim=0),
    "fine-tune-weighted": dict(classifier_mode="fine_tune", use_weighted_layer_sum=True, classifier_proj_size=32,
                               superb_features="hidden_states", mask_time_prob=0.3, hidden_dropout=0.0),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_padded_batch_equals_each_item_alone(mode):
    torch.manual_seed(0)
    model = ArmHubertForSequenceClassification(tiny_config(**SLOTS, **MODES[mode])).eval()
    waveforms = bundled_waveforms(count=3)
    values, mask = pad_batch(waveforms)
    with torch.no_grad():
        batch = model(values, attention_mask=mask).logits
        for i, waveform in enumerate(waveforms):
            torch.testing.assert_close(batch[i], model(waveform[None]).logits[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_trainable_parameter_gets_a_gradient_and_the_loss_sums_the_slots(mode):
    torch.manual_seed(0)
    model = ArmHubertForSequenceClassification(tiny_config(**SLOTS, **MODES[mode])).train()
    values, mask = pad_batch(bundled_waveforms(count=2))
    labels = torch.tensor([[2, 0, 1], [0, 3, 0]])
    output = model(values, attention_mask=mask, labels=labels)
    output.loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert [name for name, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0] == []
    logits = output.logits.detach()
    expected = sum(torch.nn.functional.cross_entropy(logits[:, a:b], labels[:, i])
                   for i, (a, b) in enumerate([(0, 3), (3, 7), (7, 9)]))
    torch.testing.assert_close(output.loss.detach(), expected)
    torch.testing.assert_close(model.predict_slots(logits), torch.stack(
        [logits[:, 0:3].argmax(-1), logits[:, 3:7].argmax(-1), logits[:, 7:9].argmax(-1)], -1))
    frozen = mode == "superb"
    assert all(not p.requires_grad for p in model.armhubert.parameters()) == frozen
    assert any(m.training for m in model.armhubert.modules()) != frozen  # SUPERB's student stays in eval mode
    assert (model.featurizer is None) == (mode == "fine-tune")


@pytest.mark.parametrize("bad, message", [
    (dict(num_labels=5, classifier_slot_names=["a", "b"], classifier_slot_sizes=[2, 2]), "sum to num_labels"),
    (dict(num_labels=4, classifier_slot_names=["a"], classifier_slot_sizes=[2, 2]), "one per entry"),
    (dict(num_labels=4, classifier_slot_names=["a", "b"]), "go together"),
    (dict(classifier_mode="frozen"), "classifier_mode must be one of"),
    (dict(classifier_proj_size=0), "classifier_proj_size must be a positive"),
])
def test_classifier_config_values_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        ArmHubertConfig(**bad)


# ----------------------------------------------------------------------------------------------
# Corpus readers
# ----------------------------------------------------------------------------------------------


def test_speech_commands_hash_split_classes_silence_and_balanced_sampling(corpora):
    args = data_args(corpus="speech_commands", corpus_root=str(corpora["speech_commands"]),
                     speech_commands_test_root=str(corpora["speech_commands_test"]))
    data = build_classification_datasets(args, True, True, True, seed=0)
    assert data.label_set == LabelSet.single(SPEECH_COMMANDS_CLASSES)
    for split, dataset in (("train", data.train), ("validation", data.eval)):
        expected = {f"{word}/{speaker}_nohash_0": word if word != "bed" else "_unknown_"
                    for word in SC_WORDS[split] for speaker in SPEAKERS[split]}
        expected["_background_noise_/white_noise"] = "_silence_"  # in train and validation alike
        assert labels_by_id(dataset) == expected, split
        # Class-balanced: each item weighs N / count of its class.
        counts = {label: list(expected.values()).count(label) for label in expected.values()}
        assert dataset.sample_weights == [len(expected) / counts[label] for label in dataset.labels]
        position = dataset.labels.index("_silence_")
        first, again = dataset[position]["input_values"], dataset[position]["input_values"]
        assert first.shape == again.shape == (RATE,)  # a 1 s crop of the 2.5 s noise file
        assert not np.array_equal(first, again)  # drawn anew at each read, as SUPERB crops it
        dataset.set_epoch(0)  # an epoch's first read is the same in every process and worker
        assert np.array_equal(dataset[position]["input_values"], first)
    assert all(speech_commands_hash_split(f"{s}_nohash_0.wav") == "test" for s in SPEAKERS["test"])
    test = data.predict["test"]
    assert labels_by_id(test) == {f"{label}/{i:08x}_nohash_0": label for label in ("yes", "no", "_unknown_", "_silence_")
                                  for i in range(2)}
    assert test.sample_weights is None and test[0]["input_values"].shape == (RATE,)


def test_every_evaluation_draws_the_same_silence_crops(corpora, tmp_path):
    """Validation samples class-balanced, so its _silence_ items are read many times, each a new crop; the
    read counts restart with each evaluation, so that two evaluations (which select the checkpoint) see the
    same audio, with DataLoader workers or without."""
    args = data_args(corpus="speech_commands", corpus_root=str(corpora["speech_commands"]))
    data = build_classification_datasets(args, True, True, False, seed=0)
    model = ArmHubertForSequenceClassification(tiny_config(num_labels=data.label_set.num_labels))
    trainer = ClassificationTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to="none",
                                                                        dataloader_num_workers=0),
                                    data_collator=ClassificationCollator(data.label_set), label_set=data.label_set)
    position = data.eval.labels.index("_silence_")

    def evaluation_reads():
        trainer.get_eval_dataloader(data.eval)
        return [data.eval[position]["input_values"] for _ in range(3)]

    first, second = evaluation_reads(), evaluation_reads()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])


def test_fluent_commands_slots_in_order_of_first_appearance(corpora):
    data = build_classification_datasets(data_args(corpus="fluent_commands", corpus_root=str(corpora["fluent"])),
                                         True, True, True, seed=0)
    assert data.label_set.slots == (("action", ("activate", "deactivate", "increase", "decrease", "bring")),
                                    ("object", ("lights", "heat", "music", "volume", "shoes")),
                                    ("location", ("kitchen", "none", "washroom")))
    assert labels_by_id(data.eval) == {"validation-0": "activate|lights|none", "validation-1": "increase|heat|kitchen"}
    assert len(data.train) == 6 and len(data.predict["test"]) == 3
    fields = data.label_set.config_fields()
    assert fields["classifier_slot_sizes"] == [5, 5, 3] and fields["id2label"][5] == "object=lights"


def test_voxceleb1_split_file_speakers_and_missing_files(corpora):
    args = data_args(corpus="voxceleb1", corpus_root=str(corpora["voxceleb1"]), max_duration_seconds=0.5)
    data = build_classification_datasets(args, True, True, True, seed=0)
    assert data.label_set == LabelSet.single(["id10001", "id10002", "id10003"])
    assert sorted(labels_by_id(data.train)) == [f"id1000{s}/{v}/0000{n}" for s, v in ((1, "aaa"), (2, "bbb"))
                                                for n in (1, 2, 3)] + ["id10003/ggg/00001"]
    assert data.train.skipped["unreadable"] == ["id10002/zzz/00001"]
    assert labels_by_id(data.eval) == {"id10001/ccc/00001": "id10001", "id10002/ddd/00001": "id10002"}
    assert labels_by_id(data.predict["test"]) == {"id10003/eee/00001": "id10003", "id10001/fff/00001": "id10001"}
    # Training crops to --max_duration_seconds; evaluation keeps whole utterances.
    assert data.train[0]["input_values"].shape == (RATE // 2,)
    assert data.eval[0]["input_values"].shape == (round(0.7 * RATE),)


@pytest.mark.parametrize("fold", [1, 4])
def test_iemocap_four_classes_held_out_session_and_dev_split(corpora, fold):
    args = data_args(corpus="iemocap", corpus_root=str(corpora["iemocap"]), fold=fold)
    data = build_classification_datasets(args, True, True, True, seed=0)
    assert data.label_set == LabelSet.single(IEMOCAP_CLASSES)
    kept = {0: "neu", 1: "hap", 2: "ang", 3: "sad", 4: "hap"}  # exc -> hap; fru and xxx dropped
    test = labels_by_id(data.predict["test"])
    assert test == {f"Ses0{fold}F_impro01_F{i:03d}": label for i, label in kept.items()}
    train, dev = labels_by_id(data.train), labels_by_id(data.eval)
    others = {f"Ses0{s}F_impro01_F{i:03d}": label for s in range(1, 6) if s != fold for i, label in kept.items()}
    assert {**train, **dev} == others and not set(train) & set(dev)
    assert (len(train), len(dev)) == (16, 4)  # 80 % / 20 % of the other four sessions


def test_a_datasets_dataset_with_a_class_label_column(tmp_path, corpora):
    files = sorted(corpora["voxceleb1"].rglob("*.wav"))[:4]
    feature = datasets.ClassLabel(names=["down", "up"])
    for split in ("train", "test"):
        dataset = datasets.Dataset.from_dict({"audio": [str(f) for f in files], "intent": [0, 1, 1, 0]},
                                             features=datasets.Features({"audio": datasets.Value("string"),
                                                                         "intent": feature}))
        dataset.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    args = data_args(dataset_name=str(tmp_path), label_column="intent")
    data = build_classification_datasets(args, True, False, True, seed=0)
    assert data.label_set == LabelSet.single(["down", "up"])
    assert data.train.labels == ["down", "up", "up", "down"]
    with pytest.raises(ValueError, match="no label column 'label'.*--label_column"):
        build_classification_datasets(data_args(dataset_name=str(tmp_path)), True, False, False, seed=0)
    with pytest.raises(ValueError, match="no split 'validation'"):
        build_classification_datasets(args, False, True, False, seed=0)


def test_labels_outside_the_label_set_are_refused_before_training(corpora, tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "test" / "dog").mkdir(parents=True)
    source = next(corpora["voxceleb1"].rglob("*.wav"))
    for target in (tmp_path / "train" / "cat" / "a.wav", tmp_path / "test" / "dog" / "b.wav"):
        target.write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match=r"outside the label set: 'dog' \(1x\).*\['cat'\]"):
        build_classification_datasets(data_args(corpus="folder", corpus_root=str(tmp_path)), True, False, True, seed=0)
    with pytest.raises(FileNotFoundError, match="test_data.csv"):
        build_classification_datasets(data_args(corpus="fluent_commands", corpus_root=str(tmp_path)),
                                      True, False, False, seed=0)
    with pytest.raises(ValueError, match="--speech_commands_test_root"):
        build_classification_datasets(data_args(corpus="speech_commands", corpus_root=str(corpora["speech_commands"])),
                                      False, False, True, seed=0)


# ----------------------------------------------------------------------------------------------
# Damaged and odd corpora: a fault stops the run naming what to fix, or what is left out is named and counted
# ----------------------------------------------------------------------------------------------


def linked_copy(source: Path, target: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A folder of links to the entries of `source`, except those named in `leave_out`."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in leave_out:
            (target / entry.name).symlink_to(entry)
    return target


def test_a_class_of_the_task_with_no_training_data_stops_training_naming_it(corpora, tmp_path):
    # Speech Commands without _background_noise_: _silence_ would be scored on the test set but never trained.
    sc = linked_copy(corpora["speech_commands"], tmp_path / "sc", leave_out=("_background_noise_",))
    args = data_args(corpus="speech_commands", corpus_root=str(sc),
                     speech_commands_test_root=str(corpora["speech_commands_test"]))
    with pytest.raises(ValueError, match=r"no usable utterance of the class\(es\) \['_silence_'\].*_background_noise_"):
        build_classification_datasets(args, True, True, True, seed=0)
    assert len(build_classification_datasets(args, False, False, True, seed=0).predict["test"]) == 8  # scoring only
    # VoxCeleb1: a speaker of the split file whose one training file is missing.
    split_file = tmp_path / "iden_split.txt"
    split_file.write_text((corpora["voxceleb1"] / "iden_split.txt").read_text() + "1 id10004/yyy/00001.wav\n")
    args = data_args(corpus="voxceleb1", corpus_root=str(corpora["voxceleb1"]), voxceleb1_split_file=str(split_file))
    with pytest.raises(ValueError, match=r"no usable utterance of the class\(es\) \['id10004'\]"):
        build_classification_datasets(args, True, False, False, seed=0)


def test_iemocap_a_malformed_label_line_skips_its_utterance_named_and_counted(corpora, tmp_path, caplog):
    root = tmp_path / "IEMOCAP"
    shutil.copytree(corpora["iemocap"], root)
    broken = {}  # session -> "<label file>:<line>" of its malformed lines
    for session, span_only in ((1, False), (2, True)):
        labels = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"Ses0{session}F_impro01.txt"
        lines = labels.read_text().splitlines()
        number = next(i for i, line in enumerate(lines) if "_F000\t" in line)
        lines[number] = lines[number].rsplit("\t", 2)[0]  # the time span and the utterance, no emotion
        lines += ["[9.0 - 9.5]"] if span_only else []  # the time span alone
        labels.write_text("\n".join(lines) + "\n")
        broken[session] = [f"{labels.relative_to(root)}:{n}" for n in (number + 1, len(lines))[:1 + span_only]]
    with caplog.at_level(logging.WARNING):
        data = build_classification_datasets(data_args(corpus="iemocap", corpus_root=str(root), fold=1),
                                             True, True, True, seed=0)
    kept = {0: "neu", 1: "hap", 2: "ang", 3: "sad", 4: "hap"}
    others = {f"Ses0{s}F_impro01_F{i:03d}": label for s in range(2, 6) for i, label in kept.items()}
    del others["Ses02F_impro01_F000"]
    train, dev = labels_by_id(data.train), labels_by_id(data.eval)
    assert {**train, **dev} == others and not set(train) & set(dev)
    # Each malformed line is counted once, in the split its utterance fell into.
    assert sorted(data.train.skipped["no_targets"] + data.eval.skipped["no_targets"]) == sorted(broken[2])
    test = data.predict["test"]
    assert "Ses01F_impro01_F000" not in labels_by_id(test) and test.skipped["no_targets"] == broken[1]
    assert skip_metrics(test)["skipped_files_no_targets"] == 1
    assert all(location in caplog.text for location in broken[1] + broken[2])
    shutil.rmtree(root / "Session3" / "dialog" / "EmoEvaluation")  # a session without labels is refused
    with pytest.raises(FileNotFoundError, match="IEMOCAP label folder .*Session3"):
        build_classification_datasets(data_args(corpus="iemocap", corpus_root=str(root), fold=1),
                                      True, False, False, seed=0)


def test_folder_corpus_reads_nested_folders_and_names_files_outside_a_class_folder(corpora, tmp_path, caplog):
    audio = next(corpora["voxceleb1"].rglob("*.wav")).read_bytes()
    for relative in ("101/a.wav", "101/session2/a.wav", "101/session2/take3/c.wav", "102/d.wav", "loose.wav",
                     "102/._d.wav", "102/.cache/e.wav"):  # the last two: hidden, not part of the corpus
        (tmp_path / "train" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / relative).write_bytes(audio)
    with caplog.at_level(logging.WARNING):
        data = build_classification_datasets(data_args(corpus="folder", corpus_root=str(tmp_path)),
                                             True, False, False, seed=0)
    assert labels_by_id(data.train) == {"101/a": "101", "101/session2/a": "101", "101/session2/take3/c": "101",
                                        "102/d": "102"}
    assert data.train.skipped["no_targets"] == ["loose.wav"] and "loose.wav" in caplog.text
    assert skip_metrics(data.train)["skipped_files"] == 1


def test_corpus_warnings_reach_the_script_log_at_its_default_level(corpora, tmp_path, capsys):
    """The logging of the scripts (`setup_script_logging` with the default --log_level) in a process
    whose root logger has no handler yet: a corpus reader's warning is printed."""
    (tmp_path / "train" / "101").mkdir(parents=True)
    (tmp_path / "train" / "loose.wav").write_bytes(next(corpora["voxceleb1"].rglob("*.wav")).read_bytes())
    root, package = logging.getLogger(), logging.getLogger("armhubert_training")
    saved = root.handlers[:], package.level, transformers.utils.logging.get_verbosity()
    root.handlers.clear()
    try:
        setup_script_logging(TrainingArguments(str(tmp_path), report_to="none"), "run_audio_classification")
        folder_utterances(tmp_path / "train")
    finally:
        root.handlers[:] = saved[0]
        package.setLevel(saved[1])
        transformers.utils.logging.set_verbosity(saved[2])
    assert re.search(r"WARNING armhubert_training\.[\w.]+: Skipped 1 of 1 audio files .*: loose\.wav\n",
                     capsys.readouterr().out)


def test_fluent_commands_csv_with_a_bom_and_crlf_line_ends_reads_as_the_plain_one(corpora, tmp_path):
    root = tmp_path / "fluent"
    (root / "data").mkdir(parents=True)
    (root / "wavs").symlink_to(corpora["fluent"] / "wavs")
    for table in (corpora["fluent"] / "data").glob("*.csv"):  # as a spreadsheet tool saves it, without the index
        lines = [line.split(",", 1)[1] for line in table.read_text().splitlines()]
        (root / "data" / table.name).write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    assert (root / "data" / "train_data.csv").read_bytes().startswith(b"\xef\xbb\xbfpath,")
    plain, saved = (build_classification_datasets(data_args(corpus="fluent_commands", corpus_root=str(folder)),
                                                  True, True, True, seed=0) for folder in (corpora["fluent"], root))
    assert saved.label_set == plain.label_set
    for split in ("train", "eval"):
        assert labels_by_id(getattr(saved, split)) == labels_by_id(getattr(plain, split))
    assert labels_by_id(saved.predict["test"]) == labels_by_id(plain.predict["test"])


# ----------------------------------------------------------------------------------------------
# run_audio_classification.py
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ic_run(student_dir, corpora, tmp_path_factory) -> Path:
    """SUPERB's protocol on the tiny Fluent Speech Commands; also predicts its own training split."""
    output = tmp_path_factory.mktemp("runs") / "ic"
    run_audio_classification.main([
        str(REPO / "configs" / "superb" / "ic.yaml"), "--model_name_or_path", str(student_dir), "--output_dir", str(output),
        "--corpus_root", str(corpora["fluent"]), "--predict_splits", "test", "train", "--max_steps", "30",
        # A random student's distillation heads give near-zero features: its layers make the toy task learnable.
        "--superb_features", "hidden_states", "--learning_rate", "2e-2", "--eval_strategy", "no",
        "--load_best_model_at_end", "false", *QUICK])
    return output


@pytest.fixture(scope="module")
def ks_run(student_dir, corpora, tmp_path_factory) -> Path:
    """Full fine-tuning with a weighted layer sum on the tiny Speech Commands."""
    output = tmp_path_factory.mktemp("runs") / "ks"
    run_audio_classification.main([
        "--model_name_or_path", str(student_dir), "--output_dir", str(output), "--corpus", "speech_commands",
        "--corpus_root", str(corpora["speech_commands"]), "--speech_commands_test_root",
        str(corpora["speech_commands_test"]), "--classifier_mode", "fine_tune", "--use_weighted_layer_sum", "true",
        "--do_train", "--do_eval", "--do_predict", "--max_steps", "2", "--learning_rate", "1e-3", *QUICK])
    return output


def test_superb_training_lowers_the_loss_memorises_the_train_set_and_keeps_the_student(ic_run, student_dir):
    history = json.loads((ic_run / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), losses
    assert json.loads((ic_run / "predict_train_results.json").read_text())["predict_train_accuracy"] == 1.0
    student, tuned = load_file(student_dir / "model.safetensors"), load_file(ic_run / "model.safetensors")
    kept = {key for key in student if not key.startswith("projection_heads.")}  # unused heads are left out
    assert {key for key in tuned if key.startswith("armhubert.")} == {f"armhubert.{key}" for key in kept}
    assert all(torch.equal(tuned[f"armhubert.{key}"], student[key]) for key in kept)
    config = json.loads((ic_run / "config.json").read_text())
    assert config["architectures"] == ["ArmHubertForSequenceClassification"]
    assert (config["classifier_mode"], config["superb_features"], config["classifier_slot_sizes"]) == (
        "superb", "hidden_states", [5, 5, 3])
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_armhubert.ArmHubertForSequenceClassification"
    card = (ic_run / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card and "| test |" in card


@pytest.mark.parametrize("run_name, name", [("ic_run", "eval"), ("ic_run", "predict_test"), ("ks_run", "eval"),
                                            ("ks_run", "predict_test")])
def test_results_json_equals_accuracy_recomputed_from_the_predictions(request, run_name, name):
    run = request.getfixturevalue(run_name)
    rows = read_predictions(run / f"{name}_predictions.tsv")
    summary = json.loads((run / f"{name}_results.json").read_text())
    assert summary[f"{name}_utterances"] == len(rows) > 0
    assert summary[f"{name}_accuracy"] == sum(row["label"] == row["prediction"] for row in rows) / len(rows)
    if run_name == "ic_run":  # right only when all three slots are
        slots = [[r == p for r, p in zip(row["label"].split("|"), row["prediction"].split("|"))] for row in rows]
        assert summary[f"{name}_accuracy"] == sum(all(s) for s in slots) / len(rows)
        for i, slot in enumerate(("action", "object", "location")):
            assert summary[f"{name}_accuracy_{slot}"] == sum(s[i] for s in slots) / len(rows)


def test_intent_accuracy_counts_only_utterances_with_all_three_slots_right():
    label_set = LabelSet((("action", ("a", "b")), ("object", ("x", "y")), ("location", ("k", "n"))))
    rows = [("1", "a|x|k", "a|x|k"), ("2", "a|x|k", "a|x|n"), ("3", "b|y|n", "a|y|n"), ("4", "b|y|n", "b|y|n")]
    assert accuracies(rows, label_set) == {"accuracy": 0.5, "accuracy_action": 0.75, "accuracy_object": 1.0,
                                           "accuracy_location": 0.75}


def test_fine_tuning_trains_the_student_and_samples_speech_commands_balanced(ks_run, student_dir):
    config = json.loads((ks_run / "config.json").read_text())
    assert (config["classifier_mode"], config["use_weighted_layer_sum"], len(config["id2label"])) == ("fine_tune", True, 12)
    student, tuned = load_file(student_dir / "model.safetensors"), load_file(ks_run / "model.safetensors")
    key = "encoder.layers.0.attention.q_proj.weight"
    assert not torch.equal(tuned[f"armhubert.{key}"], student[key])
    # Validation is a class-balanced resample with replacement (as many draws as items).
    rows = read_predictions(ks_run / "eval_predictions.tsv")
    assert len(rows) == 7 and {row["id"] for row in rows} <= {
        f"{w}/{s}_nohash_0" for w in SC_WORDS["validation"] for s in SPEAKERS["validation"]} | {
        "_background_noise_/white_noise"}


PIPELINE_SCRIPT = r"""
import json, sys
import soundfile
from transformers import pipeline
runs, result_file = json.loads(sys.argv[1]), sys.argv[2]
results = {}
for model_dir, files in runs.items():
    classify = pipeline("audio-classification", model=model_dir, trust_remote_code=True)
    results[model_dir] = {"class": type(classify).__name__,
                          "file": [classify(path)[0]["label"] for path in files],
                          "array": [classify(soundfile.read(path, dtype="float32")[0])[0]["label"] for path in files]}
assert "modeling_armhubert" not in sys.modules and "classification_pipeline" not in sys.modules
json.dump(results, open(result_file, "w"))
"""


def test_pipeline_gives_the_labels_do_predict_wrote(ic_run, ks_run, corpora, tmp_path):
    files = {}
    expected = {}
    for run, folder, path_of in ((ic_run, corpora["fluent"], lambda row: corpora["fluent"] / "wavs" / "speakers"
                                  / f"spk{int(row['id'].split('-')[1]) % 2}" / f"{row['id']}.wav"),
                                 (ks_run, corpora["speech_commands_test"],
                                  lambda row: corpora["speech_commands_test"] / f"{row['id']}.wav")):
        rows = read_predictions(run / "predict_test_predictions.tsv")
        files[str(run)] = [str(path_of(row)) for row in rows]
        expected[str(run)] = [row["prediction"] for row in rows]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, json.dumps(files), str(tmp_path / "out.json")],
                   cwd=tmp_path, env=env, check=True, timeout=300)
    results = json.loads((tmp_path / "out.json").read_text())
    for run, labels in expected.items():
        assert results[run]["class"] == "ArmHubertAudioClassificationPipeline"
        assert results[run]["file"] == labels and results[run]["array"] == labels, run
    assert all(label.count("|") == 2 for label in expected[str(ic_run)])


def test_evaluation_only_run_reuses_the_models_classes_and_refuses_unknown_labels(ic_run, corpora, tmp_path):
    output = tmp_path / "again"
    metrics = run_audio_classification.main([
        "--model_name_or_path", str(ic_run), "--output_dir", str(output), "--corpus", "fluent_commands",
        "--corpus_root", str(corpora["fluent"]), "--do_predict", *QUICK])
    assert metrics["predict_test_accuracy"] == json.loads(
        (ic_run / "predict_test_results.json").read_text())["predict_test_accuracy"]
    assert read_predictions(output / "predict_test_predictions.tsv") == read_predictions(
        ic_run / "predict_test_predictions.tsv")
    with pytest.raises(ValueError, match="student without a classifier"):
        run_audio_classification.main(["--random_student_preset", "armhubert", "--output_dir", str(tmp_path / "x"),
                                       "--corpus", "fluent_commands", "--corpus_root", str(corpora["fluent"]),
                                       "--do_predict", *QUICK])


def test_trainer_evaluate_predict_and_callbacks_work_and_compute_metrics_is_refused(ic_run, corpora, tmp_path):
    """The Trainer's evaluation hooks on a task trainer: evaluate() (also over a dict of datasets),
    predict() returning the decoded labels, the callbacks (progress steps, on_evaluate, on_predict)."""
    model = ArmHubertForSequenceClassification.from_pretrained(ic_run)
    label_set = LabelSet.from_config(model.config)
    data = build_classification_datasets(
        data_args(corpus="fluent_commands", corpus_root=str(corpora["fluent"]), predict_splits=["test"]),
        do_train=False, do_eval=True, do_predict=True, seed=0, label_set=label_set)

    class Recorder(TrainerCallback):
        def __init__(self):
            self.steps, self.evaluated, self.predicted = 0, [], []

        def on_prediction_step(self, args, state, control, **kwargs):
            self.steps += 1

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.evaluated.append(metrics)

        def on_predict(self, args, state, control, metrics=None, **kwargs):
            self.predicted.append(metrics)

    recorder = Recorder()
    args = TrainingArguments(str(tmp_path), per_device_eval_batch_size=2, report_to="none",
                             dataloader_num_workers=0, dataloader_pin_memory=False)
    trainer = ClassificationTrainer(model=model, args=args, eval_dataset=data.eval,
                                    data_collator=ClassificationCollator(label_set), label_set=label_set,
                                    callbacks=[recorder])
    metrics = trainer.evaluate()
    assert recorder.evaluated == [metrics] and recorder.steps == -(-len(data.eval) // 2)
    assert metrics["eval_utterances"] == len(data.eval) and metrics["eval_runtime"] > 0

    test = data.predict["test"]
    output = trainer.predict(test)
    rows = read_predictions(tmp_path / "test_predictions.tsv")
    assert output.predictions == [row["prediction"] for row in rows]
    assert output.label_ids == [row["label"] for row in rows] and len(rows) == len(test)
    assert output.metrics["test_accuracy"] == pytest.approx(
        np.mean([p == r for p, r in zip(output.predictions, output.label_ids)]))
    assert recorder.predicted == [output.metrics] and recorder.steps == -(-len(data.eval) // 2) + -(-len(test) // 2)

    both = trainer.evaluate({"first": data.eval, "again": data.eval})
    assert both["eval_first_accuracy"] == both["eval_again_accuracy"] == metrics["eval_accuracy"]

    with pytest.raises(ValueError, match="compute_metrics"):
        ClassificationTrainer(model=model, args=args, data_collator=ClassificationCollator(label_set),
                              label_set=label_set, compute_metrics=lambda prediction: {})


def test_a_batch_without_a_readable_file_still_joins_the_gather_of_its_rows(ic_run, corpora, tmp_path, monkeypatch):
    """Under several processes every process gathers each batch's rows; one whose batch had no readable
    file must gather too (an empty list), or the processes' gathers pair the wrong batches."""
    model = ArmHubertForSequenceClassification.from_pretrained(ic_run)
    label_set = LabelSet.from_config(model.config)
    data = build_classification_datasets(
        data_args(corpus="fluent_commands", corpus_root=str(corpora["fluent"])),
        do_train=False, do_eval=True, do_predict=False, seed=0, label_set=label_set)

    class FirstFileFails(torch.utils.data.Dataset):
        def __len__(self):
            return len(data.eval)

        def __getitem__(self, index):
            return None if index == 0 else data.eval[index]

    args = TrainingArguments(str(tmp_path), per_device_eval_batch_size=1, report_to="none",
                             dataloader_num_workers=0, dataloader_pin_memory=False)
    trainer = ClassificationTrainer(model=model, args=args, data_collator=ClassificationCollator(label_set),
                                    label_set=label_set)
    gathered = []
    gather = trainer.gather_rows
    monkeypatch.setattr(trainer, "gather_rows", lambda rows: gathered.append(len(rows)) or gather(rows))
    metrics = trainer.evaluate(FirstFileFails())
    assert gathered == [0] + [1] * (len(data.eval) - 1)
    assert metrics["eval_utterances"] == len(data.eval) - 1 and metrics["eval_skipped_files_undecodable"] == 1


@pytest.mark.parametrize(("size", "failing"), [(size, failing) for size in (5, 7, 8) for failing in range(size)])
def test_two_processes_score_each_readable_item_once_when_a_file_fails(size, failing, monkeypatch):
    """accelerate evens out two processes' last batches by repeating the split's first items, and its
    gather_for_metrics cuts the gathered results at the number of real items: with a failed file among
    them, that cut keeps a repeat. The repeats are found by their positions in the batches instead and
    left out before scoring: every readable item once, and the failed file counted once. Here `size`
    items in batches of 2, sharded by accelerate's own loader."""
    from accelerate.data_loader import prepare_data_loader
    from accelerate.state import GradientState
    from torch.utils.data import DataLoader

    from armhubert_training import speech_trainer
    from armhubert_training.collators import AudioCollator
    from armhubert_training.speech_trainer import SplitScoringTrainer

    items = [None if index == failing else {"input_values": np.zeros(400, np.float32), "id": str(index)}
             for index in range(size)]

    def process(index):  # what `accelerator.prepare` makes of the evaluation loader on process `index` of 2
        loader = DataLoader(items, batch_size=2, collate_fn=AudioCollator())
        return prepare_data_loader(loader, num_processes=2, process_index=index, put_on_device=False)

    other_batches = list(process(1))
    gradient_state = GradientState()
    scored, failed, naive = [], 0, []
    for round_, batch in enumerate(process(0)):  # the gradient state follows process 0's loader
        batches = [batch, other_batches[round_]]
        sizes = [len(b["item_positions"]) + b["num_skipped"] for b in batches]
        monkeypatch.setattr(speech_trainer, "gather_object", lambda _: sizes)
        for rank, b in enumerate(batches):
            trainer = SimpleNamespace(accelerator=SimpleNamespace(
                num_processes=2, process_index=rank, gradient_state=gradient_state))
            repeated = SplitScoringTrainer.repeated_items(trainer, sizes[rank])
            kept = [row for row, position in enumerate(b["item_positions"]) if position not in repeated]
            scored += speech_trainer.select_items(b, kept).get("id", [])
            failed += len(set(range(sizes[rank])) - set(b["item_positions"]) - repeated)
        # What gather_for_metrics keeps: each process's results laid end to end, cut at the real items.
        cut = gradient_state.remainder if gradient_state.end_of_dataloader and gradient_state.remainder > 0 else None
        naive += [i for b in batches for i in b.get("id", [])][:cut]
    readable = sorted(str(index) for index in range(size) if index != failing)
    assert sorted(scored) == readable and failed == 1
    if size % 4 and failing >= size - size % 4:  # a real item of the last round failed: the cut keeps a repeat
        assert sorted(naive) != readable


def test_a_training_batch_without_a_readable_file_runs_the_model_with_a_zero_loss(ic_run, corpora, tmp_path):
    """The step still runs the model's forward and backward (under several processes, DDP's gradient
    all-reduce comes with them), on the first readable training utterance, and changes nothing."""
    model = ArmHubertForSequenceClassification.from_pretrained(ic_run)
    label_set = LabelSet.from_config(model.config)
    data = build_classification_datasets(data_args(corpus="fluent_commands", corpus_root=str(corpora["fluent"])),
                                         do_train=True, do_eval=False, do_predict=False, seed=0, label_set=label_set)
    collator = ClassificationCollator(label_set)
    args = TrainingArguments(str(tmp_path), report_to="none", dataloader_num_workers=0, dataloader_pin_memory=False)
    trainer = ClassificationTrainer(model=model, args=args, train_dataset=data.train, data_collator=collator,
                                    label_set=label_set)
    batch_sizes = []
    model.register_forward_hook(lambda module, inputs, kwargs, output: batch_sizes.append(
        kwargs["input_values"].shape[0]), with_kwargs=True)
    empty = collator([None, None])
    assert empty["num_skipped"] == 2 and trainer.is_empty(empty)
    loss = trainer.compute_loss(model, empty)
    loss.backward()
    assert batch_sizes == [1] and loss.item() == 0.0
    reached = [p.grad for p in model.parameters() if p.grad is not None]  # the head's (the student is frozen)
    assert reached and not any(g.any() for g in reached)
    assert trainer.skipped_files_metrics()["skipped_files_undecodable"] == 2
