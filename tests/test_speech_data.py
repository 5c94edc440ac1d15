"""Tests for the data pipeline (audio, corpora, speech_datasets, collators): decoding, corpus indexing,
filtering/cropping, hub datasets, batching."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import shutil
from pathlib import Path

import datasets
import librosa
import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch
from transformers import HfArgumentParser

from armhubert_training.arguments import DistillationDataArguments
from armhubert_training.audio import SAMPLING_RATE, AudioError, load_audio, skip_metrics
from armhubert_training.collators import AudioCollator
from armhubert_training.corpora.hub import hub_dataset
from armhubert_training.corpora.librispeech import librispeech_dataset
from armhubert_training.speech_datasets import SpeechDataset, StreamingSpeechDataset, build_dataset
from configuration_armhubert import RECEPTIVE_FIELD_SAMPLES

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "tiny-librispeech"
SPLITS = ["train-clean-100", "dev-clean", "test-clean"]


def transcripts(split_dir: Path) -> dict[str, str]:
    """id -> text, read straight from the *.trans.txt files."""
    lines = {}
    for path in sorted(split_dir.glob("*/*/*.trans.txt")):
        for line in path.read_text().splitlines():
            utt_id, text = line.split(" ", 1)
            lines[utt_id] = text
    return lines


def column(dataset: datasets.Dataset, name: str) -> list:
    """A column as a list (in datasets 5, `dataset[name]` is a lazy `Column`, not a list)."""
    return list(dataset[name])


def full_decode(path: str | Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLING_RATE and audio.ndim == 1
    return audio


@pytest.fixture(autouse=True)
def quiet_datasets(tmp_path_factory, monkeypatch):
    """Keep `datasets` cache files of these tests out of the user's cache, and skip the
    5 s pause datasets 5 takes whenever a shuffled stream finishes its shards."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-cache"))
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


# --------------------------------------------------------------------------- #
# Indexing the bundled corpus
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("split", SPLITS)
def test_index_matches_transcripts_and_audio(split):
    index = librispeech_dataset(CORPUS, [split])
    expected = transcripts(CORPUS / "LibriSpeech" / split)
    assert len(expected) >= 10
    assert len(index) == len(expected)
    assert index.column_names == ["id", "path", "duration", "text", "speaker_id"]
    assert dict(zip(column(index, "id"), column(index, "text"))) == expected
    for row in index:
        assert Path(row["path"]).name == f"{row['id']}.flac"
        assert row["speaker_id"] == int(row["id"].split("-")[0])
        assert row["duration"] == pytest.approx(len(full_decode(row["path"])) / SAMPLING_RATE, abs=1e-9)


def test_index_accepts_librispeech_folder_and_several_splits():
    both = librispeech_dataset(CORPUS / "LibriSpeech", ["dev-clean", "test-clean"])
    dev, test = (librispeech_dataset(CORPUS, [s]) for s in ("dev-clean", "test-clean"))
    assert column(both, "id") == column(dev, "id") + column(test, "id")


def test_missing_split_names_path_and_found_splits():
    with pytest.raises(FileNotFoundError) as info:
        librispeech_dataset(CORPUS, ["train-clean-360"])
    message = str(info.value)
    assert str(CORPUS / "LibriSpeech" / "train-clean-360") in message
    for split in SPLITS:
        assert split in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        librispeech_dataset(CORPUS / "nowhere", ["dev-clean"])


# --------------------------------------------------------------------------- #
# load_audio
# --------------------------------------------------------------------------- #


@pytest.fixture
def stereo_44k(tmp_path) -> tuple[Path, np.ndarray]:
    """A 0.7 s stereo 44.1 kHz float WAV whose channels differ; -> (path, samples (frames, 2))."""
    rate = 44_100
    t = np.arange(int(0.7 * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.3 * np.sin(2 * np.pi * 1_250 * t) + 0.1
    samples = np.stack([left, right], axis=1).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, samples, rate, subtype="FLOAT")  # float: read back bit-exactly
    return path, samples


def test_load_audio_downmixes_and_resamples_like_librosa(stereo_44k):
    path, samples = stereo_44k
    audio = load_audio(path)
    expected = librosa.resample(samples.mean(axis=1), orig_sr=44_100, target_sr=SAMPLING_RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == math.ceil(len(samples) * SAMPLING_RATE / 44_100)
    np.testing.assert_allclose(audio, expected, atol=1e-5)
    # really the mean: far from either channel alone
    assert np.abs(audio - librosa.resample(samples[:, 0], orig_sr=44_100, target_sr=SAMPLING_RATE)).max() > 0.1


def test_load_audio_same_array_from_every_source_kind(stereo_44k):
    path, samples = stereo_44k
    from_path = load_audio(str(path))
    data = path.read_bytes()
    for source in (path, data, bytearray(data), {"path": None, "bytes": data},
                   {"path": str(path), "bytes": None}, {"path": "only-a-name-in-an-archive.wav", "bytes": data}):
        np.testing.assert_array_equal(load_audio(source), from_path)
    # decoded `datasets` arrays are (channels, samples)
    np.testing.assert_allclose(load_audio({"array": samples.T, "sampling_rate": 44_100}), from_path, atol=1e-6)
    mono = full_decode(next((CORPUS / "LibriSpeech" / "dev-clean").glob("*/*/*.flac")))
    np.testing.assert_array_equal(load_audio({"array": mono, "sampling_rate": SAMPLING_RATE}), mono)


def test_load_audio_errors_name_the_file_and_problem(tmp_path):
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SAMPLING_RATE)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2] * 200, np.float32), SAMPLING_RATE, subtype="FLOAT")
    cases = [(garbage, "cannot decode"), (empty, "empty"), (nan, "NaN"), (tmp_path / "missing.flac", "no such")]
    for path, problem in cases:
        with pytest.raises(AudioError, match=problem) as info:
            load_audio(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(garbage.read_bytes())
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio({"array": np.zeros(10)})
    with pytest.raises(AudioError, match="no audio"):  # an empty cell of a dataset's audio column
        load_audio(None)


def test_a_header_announcing_more_audio_than_memory_holds_is_an_audio_error(tmp_path, monkeypatch):
    """A FLAC whose header claims 2**36 - 1 frames (a corrupt header): libsndfile allocates that length
    before reading. Wherever the allocation fails, the file is one bad file, not the end of the run."""
    flac = tmp_path / "corrupt.flac"
    sf.write(flac, np.full(1600, 0.1, np.float32), SAMPLING_RATE, format="FLAC")
    data = bytearray(flac.read_bytes())
    # STREAMINFO follows "fLaC" and its 4-byte block header; its bytes 10-17 end in the 36-bit frame count.
    fields = int.from_bytes(data[18:26], "big") | (2**36 - 1)
    data[18:26] = fields.to_bytes(8, "big")
    flac.write_bytes(bytes(data))
    assert sf.info(flac).frames == 2**36 - 1
    import armhubert_training.audio as audio

    def read_that_cannot_allocate(*args, **kwargs):
        raise MemoryError("Unable to allocate 256. GiB")

    monkeypatch.setattr(audio.sf, "read", read_that_cannot_allocate)
    for source in (flac, flac.read_bytes()):
        with pytest.raises(AudioError, match="header announces more audio than memory holds"):
            load_audio(source)


# --------------------------------------------------------------------------- #
# Broken files: skipped when indexing, None when decoding, dropped by the collator
# --------------------------------------------------------------------------- #


@pytest.fixture
def broken_corpus(tmp_path) -> tuple[Path, list[str]]:
    """dev-clean copied to tmp with one garbage .flac and one 0-frame file; -> (root, broken ids)."""
    shutil.copytree(CORPUS / "LibriSpeech" / "dev-clean", tmp_path / "LibriSpeech" / "dev-clean")
    flacs = sorted((tmp_path / "LibriSpeech" / "dev-clean").glob("*/*/*.flac"))
    flacs[2].write_bytes(np.random.default_rng(1).bytes(3000))
    # libsndfile cannot write a 0-frame FLAC; a 0-frame WAV under the .flac name
    # is the readable-but-empty file (soundfile detects the format from the header).
    sf.write(flacs[5], np.zeros(0, np.int16), SAMPLING_RATE, format="WAV")
    assert sf.info(flacs[5]).frames == 0
    return tmp_path, [flacs[2].stem, flacs[5].stem]


def test_index_skips_and_counts_broken_files(broken_corpus, caplog):
    root, broken = broken_corpus
    with caplog.at_level(logging.WARNING, logger="armhubert_training"):
        index = librispeech_dataset(root, ["dev-clean"], num_workers=4)
    assert len(index) == 8
    assert not set(broken) & set(column(index, "id"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Skipped 2 of 10" in warnings[0]
    assert all(f"{utt}.flac" in warnings[0] for utt in broken)


def test_file_corrupted_after_indexing_gives_none_and_is_counted(broken_corpus, caplog):
    root, _ = broken_corpus
    dataset = build_dataset(DistillationDataArguments(librispeech_root=str(root)), "eval")
    assert isinstance(dataset, SpeechDataset) and len(dataset) == 8
    victim = dataset.index[3]
    Path(victim["path"]).write_bytes(b"\x00garbage" * 500)
    with caplog.at_level(logging.WARNING, logger="armhubert_training"):
        assert dataset[3] is None
        assert dataset[3] is None
    logged = [r.getMessage() for r in caplog.records if victim["id"] in r.getMessage()]
    assert len(logged) == 1 and "cannot decode" in logged[0]  # once per file
    assert dataset.failed_ids == {victim["id"]}

    batch = AudioCollator()([dataset[2], dataset[3], dataset[4]])
    assert batch["num_skipped"] == 1
    assert batch["input_values"].shape[0] == 2
    assert batch["text"] == [dataset.index[2]["text"], dataset.index[4]["text"]]
    np.testing.assert_array_equal(batch["input_values"][0, : dataset.lengths[2]].numpy(),
                                  full_decode(dataset.index[2]["path"]))


def test_file_truncated_after_indexing_gives_none(broken_corpus):
    """A truncated FLAC keeps a valid header (full length): only decoding can notice."""
    root, _ = broken_corpus
    dataset = build_dataset(DistillationDataArguments(librispeech_root=str(root)), "eval")
    path = Path(dataset.index[0]["path"])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert sf.info(path).frames == dataset.lengths[0]
    assert dataset[0] is None and dataset[1] is not None
    # replaced by a valid file below the receptive field: also None, not a crash later in the model
    sf.write(dataset.index[1]["path"], np.zeros(100, np.float32), SAMPLING_RATE, format="FLAC")
    assert dataset[1] is None and dataset.failed_ids == {dataset.index[0]["id"], dataset.index[1]["id"]}


def test_dataloader_with_workers_counts_skipped_items(broken_corpus):
    root, _ = broken_corpus
    dataset = build_dataset(DistillationDataArguments(librispeech_root=str(root)), "eval")
    Path(dataset.index[5]["path"]).write_bytes(b"broken")
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=AudioCollator())
    batches = list(loader)
    assert sum(b["num_skipped"] for b in batches) == 1
    assert sum(b["input_values"].shape[0] for b in batches) == len(dataset) - 1
    assert [t for b in batches for t in b["text"]] == [t for i, t in enumerate(column(dataset.index, "text")) if i != 5]


def test_index_time_skips_are_recorded_and_counted_by_reason(broken_corpus, hub_folder, tmp_path):
    root, broken = broken_corpus
    dataset = build_dataset(DistillationDataArguments(librispeech_root=str(root), eval_splits=["dev-clean"]), "eval")
    assert len(dataset) == 8
    assert dataset.skipped["unreadable"] == broken
    assert not dataset.skipped["too_short"] and not dataset.skipped["transcript_unreadable"]
    # One more file that fails only when decoded, as the collator reports it.
    assert skip_metrics(dataset, undecodable=1) == {
        "skipped_files": 3, "skipped_files_unreadable": 2, "skipped_files_undecodable": 1,
        "skipped_files_too_short": 0, "skipped_files_transcript_unreadable": 0, "skipped_files_no_targets": 0}
    assert skip_metrics(None, undecodable=2)["skipped_files"] == 2  # a dataset without an index

    # The same for a map-style `datasets` dataset.
    folder, originals = hub_folder
    table = pa.table({"audio": [{"bytes": b"not audio" * 100, "path": "bad.flac"},
                                {"bytes": Path(originals["107-5712-0000"]["path"]).read_bytes(), "path": "good.flac"}],
                      "text": ["X", "Y"]})
    (tmp_path / "hub" / "data").mkdir(parents=True)
    datasets.Dataset(table).cast_column("audio", datasets.Audio()).to_parquet(
        str(tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet"))
    hub = build_dataset(DistillationDataArguments(dataset_name=str(tmp_path / "hub")), "eval")
    assert column(hub.index, "id") == ["good.flac"] and hub.skipped["unreadable"] == ["bad.flac"]
    assert skip_metrics(hub)["skipped_files_unreadable"] == 1


def test_non_utf8_transcript_line_skips_only_its_utterance_named_and_counted(tmp_path, caplog):
    shutil.copytree(CORPUS / "LibriSpeech" / "train-clean-100", tmp_path / "LibriSpeech" / "train-clean-100")
    chapters = sorted((tmp_path / "LibriSpeech" / "train-clean-100").glob("*/*"))
    assert len(chapters) == 3
    bad = next(chapters[1].glob("*.trans.txt"))
    lines = bad.read_text().splitlines(keepends=True)
    victims = {2: lines[2].split()[0], 7: lines[7].split()[0]}  # 0-based line -> its utterance
    for number in victims:  # a lone latin-1 byte (0xC9, 0xCF) on each of two lines; the other lines stay UTF-8
        lines[number] = lines[number].replace(" ", " CAF\u00c9 NA\u00cfVE ", 1)
    bad.write_bytes(b"".join(line.encode("latin-1") for line in lines))
    with caplog.at_level(logging.WARNING, logger="armhubert_training"):
        dataset = build_dataset(DistillationDataArguments(librispeech_root=str(tmp_path)), "train")
    full = librispeech_dataset(CORPUS, ["train-clean-100"])
    lost = sorted(victims.values())
    assert column(dataset.index, "id") == [utt for utt in column(full, "id") if utt not in lost]
    kept = [row for row in full if row["id"] not in lost]
    assert column(dataset.index, "text") == [row["text"] for row in kept]
    assert dataset.skipped["transcript_unreadable"] == lost
    assert skip_metrics(dataset)["skipped_files"] == skip_metrics(dataset)["skipped_files_transcript_unreadable"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "UTF-8" in warnings[0] and "2 of 30" in warnings[0], warnings
    assert all(f"{utt} ({bad}:{number + 1})" in warnings[0] for number, utt in victims.items()), warnings[0]


def test_audio_shorter_than_the_receptive_field_is_named_and_counted(tmp_path, caplog):
    shutil.copytree(CORPUS / "LibriSpeech" / "dev-clean", tmp_path / "LibriSpeech" / "dev-clean")
    flacs = sorted((tmp_path / "LibriSpeech" / "dev-clean").glob("*/*/*.flac"))
    sf.write(flacs[4], np.full(300, 0.1, np.float32), SAMPLING_RATE, format="FLAC")
    durations = sorted(sf.info(f).duration for f in flacs)  # [0] is the short one
    # A chosen --min_duration_seconds that drops two more: a filter, not a skipped file.
    args = DistillationDataArguments(librispeech_root=str(tmp_path), min_duration_seconds=durations[3])
    with caplog.at_level(logging.WARNING, logger="armhubert_training"):
        dataset = build_dataset(args, "eval")
    assert len(dataset) == 7 and dataset.skipped["too_short"] == [flacs[4].stem]
    assert skip_metrics(dataset) == {
        "skipped_files": 1, "skipped_files_unreadable": 0, "skipped_files_undecodable": 0,
        "skipped_files_too_short": 1, "skipped_files_transcript_unreadable": 0, "skipped_files_no_targets": 0}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and flacs[4].stem in warnings[0] and "receptive field" in warnings[0]

    # Streaming: met when read, yielded as None (counted by the collator) and named.
    table = pa.table({"audio": [{"bytes": flacs[4].read_bytes(), "path": "short.flac"},
                                {"bytes": flacs[0].read_bytes(), "path": "good.flac"}], "text": ["X", "Y"]})
    (tmp_path / "hub" / "data").mkdir(parents=True)
    datasets.Dataset(table).cast_column("audio", datasets.Audio()).to_parquet(
        str(tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="armhubert_training"):
        streamed = list(build_dataset(DistillationDataArguments(dataset_name=str(tmp_path / "hub"), streaming=True),
                                      "eval"))
    assert streamed[0] is None and streamed[1]["id"] == "good.flac"
    assert AudioCollator()(streamed)["num_skipped"] == 1
    assert any("short.flac" in r.getMessage() and "receptive field" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage, split, expected", [
    ("garbage", "eval", r"evaluation data, LibriSpeech .*'dev-clean'.*--eval_splits.*10 missing, empty or not audio"),
    ("no_transcripts", "eval", r"evaluation data, LibriSpeech .*'dev-clean'.*holds no utterances"),
    ("too_long", "train", r"training data, LibriSpeech .*'train-clean-100'.*--train_splits.*30 outside the "
                          r"duration limits \(--min_duration_seconds 0.025, --max_duration_seconds 0.5\)"),
])
def test_empty_split_stops_at_start_up_naming_split_and_reason(tmp_path, damage, split, expected):
    corpus = tmp_path / "LibriSpeech"
    shutil.copytree(CORPUS / "LibriSpeech" / "train-clean-100", corpus / "train-clean-100")
    shutil.copytree(CORPUS / "LibriSpeech" / "dev-clean", corpus / "dev-clean")
    if damage == "garbage":
        for flac in corpus.glob("dev-clean/*/*/*.flac"):
            flac.write_bytes(b"not audio" * 50)
    elif damage == "no_transcripts":
        for transcript in corpus.glob("dev-clean/*/*/*.trans.txt"):
            transcript.unlink()
    args = DistillationDataArguments(librispeech_root=str(tmp_path), max_duration_seconds=0.5,
                                     crop_to_max_duration=False)
    with pytest.raises(ValueError, match=expected):
        build_dataset(args, split)


# --------------------------------------------------------------------------- #
# Collator
# --------------------------------------------------------------------------- #


def test_collator_pads_values_and_mask_exactly():
    items = [
        {"input_values": np.array([1, 2, 3], np.float32), "text": "A", "id": "a"},
        {"input_values": np.array([4, 5, 6, 7, 8], np.float32), "text": "B", "id": "b"},
        None,
        {"input_values": np.array([9], np.float32), "text": "C", "id": "c"},
    ]
    batch = AudioCollator()(items)
    assert batch["input_values"].dtype == torch.float32 and batch["attention_mask"].dtype == torch.long
    torch.testing.assert_close(batch["input_values"],
                               torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0]], dtype=torch.float32))
    torch.testing.assert_close(batch["attention_mask"],
                               torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]))
    assert batch["text"] == ["A", "B", "C"]
    # Python values, which the Trainer leaves on the host: the lengths and the count are read there.
    assert batch["input_lengths"] == [3, 5, 1] and batch["num_skipped"] == 1
    assert batch["item_positions"] == [0, 1, 3]  # where the kept items were: the evaluation gather needs it

    no_text = AudioCollator()([{"input_values": np.ones(2, np.float32)}])
    assert set(no_text) == {"input_values", "attention_mask", "input_lengths", "item_positions", "num_skipped"}


def test_collator_all_none_gives_recognisable_empty_batch():
    batch = AudioCollator()([None, None])
    assert batch["input_values"].shape == (0, 0) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].shape == (0, 0) and batch["attention_mask"].dtype == torch.long
    assert batch["input_lengths"] == [] and batch["item_positions"] == [] and batch["num_skipped"] == 2


# --------------------------------------------------------------------------- #
# Duration filter and crop
# --------------------------------------------------------------------------- #


def test_min_duration_filter_drops_short_utterances():
    full = librispeech_dataset(CORPUS, ["train-clean-100"])
    samples = [round(d * SAMPLING_RATE) for d in column(full, "duration")]
    threshold = sorted(samples)[len(samples) // 2]  # keeps the longer half
    args = DistillationDataArguments(librispeech_root=str(CORPUS), min_duration_seconds=threshold / SAMPLING_RATE)
    dataset = build_dataset(args, "train")
    kept = [utt for utt, n in zip(column(full, "id"), samples) if n >= threshold]
    assert column(dataset.index, "id") == kept and len(kept) < len(full)
    assert dataset.lengths == [n for n in samples if n >= threshold]
    assert len(dataset[0]["input_values"]) == dataset.lengths[0]


def test_min_duration_below_receptive_field_is_rejected():
    with pytest.raises(ValueError, match="400 samples"):
        DistillationDataArguments(librispeech_root=str(CORPUS), min_duration_seconds=0.01)


def find_window(full: np.ndarray, crop: np.ndarray) -> int:
    """Start of `crop` inside `full` (asserts it is a contiguous window)."""
    for start in np.flatnonzero(full[: len(full) - len(crop) + 1] == crop[0]):
        if np.array_equal(full[start:start + len(crop)], crop):
            return int(start)
    raise AssertionError("crop is not a window of the audio")


def test_max_duration_crops_to_deterministic_random_windows():
    args = DistillationDataArguments(librispeech_root=str(CORPUS), max_duration_seconds=1.0)
    dataset = build_dataset(args, "eval", seed=3)
    full = [full_decode(path) for path in column(dataset.index, "path")]
    assert all(len(audio) > SAMPLING_RATE for audio in full)  # every item gets cropped
    assert dataset.lengths == [SAMPLING_RATE] * len(full)

    starts = []
    again = build_dataset(args, "eval", seed=3)  # another process or worker reading the same epoch
    for position, audio in enumerate(full):
        crop = dataset[position]["input_values"]
        assert len(crop) == SAMPLING_RATE
        starts.append(find_window(audio, crop))
        np.testing.assert_array_equal(again[position]["input_values"], crop)  # same (seed, item, epoch)
    assert len(set(starts)) > 1  # not always from the start

    dataset.set_epoch(1)
    assert [find_window(a, dataset[i]["input_values"]) for i, a in enumerate(full)] != starts
    reseeded = build_dataset(args, "eval", seed=4)
    assert [find_window(a, reseeded[i]["input_values"]) for i, a in enumerate(full)] != starts


def test_max_duration_without_crop_drops_long_utterances():
    args = DistillationDataArguments(librispeech_root=str(CORPUS), max_duration_seconds=4.0, crop_to_max_duration=False)
    dataset = build_dataset(args, "train")
    full = librispeech_dataset(CORPUS, ["train-clean-100"])
    expected = [utt for utt, d in zip(column(full, "id"), column(full, "duration"))
                if round(d * SAMPLING_RATE) <= 4 * SAMPLING_RATE]
    assert 0 < len(expected) < len(full)
    assert column(dataset.index, "id") == expected
    assert all(len(dataset[i]["input_values"]) <= 4 * SAMPLING_RATE for i in range(len(dataset)))


def test_max_samples_takes_the_first_utterances():
    dataset = build_dataset(DistillationDataArguments(librispeech_root=str(CORPUS), max_train_samples=4), "train")
    assert column(dataset.index, "id") == column(librispeech_dataset(CORPUS, ["train-clean-100"]), "id")[:4]


# --------------------------------------------------------------------------- #
# `datasets` (hub) path, tested on local datasets
# --------------------------------------------------------------------------- #


def test_hub_dataset_gives_undecoded_audio_that_decodes_like_the_files(hub_folder):
    folder, originals = hub_folder
    dataset = hub_dataset(str(folder), split="validation", text_column="sentence")
    assert dataset.features["audio"] == datasets.Audio(decode=False)
    assert len(dataset) == 10
    for row in dataset:
        assert set(row["audio"]) == {"bytes", "path"}
        np.testing.assert_array_equal(load_audio(row["audio"]), full_decode(originals[row["id"]]["path"]))
        assert row["sentence"] == originals[row["id"]]["text"]


def test_hub_build_dataset_items_match_files(hub_folder):
    folder, originals = hub_folder
    args = DistillationDataArguments(dataset_name=str(folder), text_column="sentence")
    dataset = build_dataset(args, "eval")
    assert isinstance(dataset, SpeechDataset) and len(dataset) == 10
    for position in range(len(dataset)):
        item = dataset[position]
        expected = full_decode(originals[item["id"]]["path"])
        np.testing.assert_array_equal(item["input_values"], expected)
        assert item["text"] == originals[item["id"]]["text"]
        assert dataset.lengths[position] == len(expected)


def test_split_options_take_librispeech_folders_or_datasets_split_expressions(hub_folder):
    folder, originals = hub_folder
    both = build_dataset(DistillationDataArguments(librispeech_root=str(CORPUS),
                                                   train_splits=["train-clean-100", "dev-clean"]),
                         "train")
    assert column(both.index, "id") == (column(librispeech_dataset(CORPUS, ["train-clean-100"]), "id")
                                        + column(librispeech_dataset(CORPUS, ["dev-clean"]), "id"))
    # With --dataset_name the list is one split expression: "train[:3]+validation[-2:]".
    args = DistillationDataArguments(dataset_name=str(folder), text_column="sentence",
                         train_splits=["train[:3]", "validation[-2:]"])
    mixed = build_dataset(args, "train")
    train, validation = (column(hub_dataset(str(folder), split=split, text_column="sentence"), "id")
                         for split in ("train", "validation"))
    assert column(mixed.index, "id") == train[:3] + validation[-2:]
    # Each source has its own default split names.
    hub_defaults = DistillationDataArguments(dataset_name=str(folder))
    librispeech_defaults = DistillationDataArguments(librispeech_root=str(CORPUS))
    assert (hub_defaults.train_splits, hub_defaults.eval_splits) == (["train"], ["validation"])
    assert (librispeech_defaults.train_splits, librispeech_defaults.eval_splits) == (["train-clean-100"],
                                                                                     ["dev-clean"])
    with pytest.raises(ValueError, match="--eval_splits needs at least one split name"):
        DistillationDataArguments(dataset_name=str(folder), eval_splits=["train", ""])


def test_hub_missing_split_or_column_errors_list_what_exists(hub_folder):
    folder, _ = hub_folder
    for streaming in (False, True):
        with pytest.raises(ValueError, match="no split 'test'") as info:
            hub_dataset(str(folder), split="test", text_column="sentence", streaming=streaming)
        assert "'train'" in str(info.value) and "'validation'" in str(info.value)
    with pytest.raises(ValueError, match="no audio column 'speech'") as info:
        hub_dataset(str(folder), split="train", audio_column="speech", text_column="sentence")
    assert "'audio'" in str(info.value) and "'sentence'" in str(info.value)
    with pytest.raises(ValueError, match="no text column 'text'.*--text_column"):
        hub_dataset(str(folder), split="train")  # default text column "text" is absent
    for streaming in (False, True):
        with pytest.raises(ValueError, match="no text column 'transcript'"):
            hub_dataset(str(folder), split="train", text_column="transcript", streaming=streaming)
    assert len(hub_dataset(str(folder), split="train", text_column=None)) == 30  # audio-only is fine


def test_hub_streaming_iterates_the_same_items(hub_folder):
    folder, _ = hub_folder
    map_style = build_dataset(DistillationDataArguments(dataset_name=str(folder), text_column="sentence"), "eval")
    streaming = build_dataset(
        DistillationDataArguments(dataset_name=str(folder), text_column="sentence", streaming=True), "eval")
    assert isinstance(streaming, StreamingSpeechDataset)
    streamed = list(streaming)
    assert [item["id"] for item in streamed] == column(map_style.index, "id")
    for position, item in enumerate(streamed):
        np.testing.assert_array_equal(item["input_values"], map_style[position]["input_values"])
        assert item["text"] == map_style[position]["text"]

    # training streams are shuffled, but hold the same utterances; max_train_samples caps them
    train_args = DistillationDataArguments(dataset_name=str(folder), text_column="sentence", streaming=True)
    shuffled = [item["id"] for item in build_dataset(train_args, "train", seed=0)]
    in_order = column(hub_dataset(str(folder), split="train", text_column="sentence"), "id")
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order
    capped = DistillationDataArguments(dataset_name=str(folder), text_column="sentence", streaming=True,
                                       max_train_samples=3)
    assert sorted(item["id"] for item in build_dataset(capped, "train")) == sorted(in_order[:3])


def test_streaming_crop_and_broken_rows(hub_folder, tmp_path):
    folder, originals = hub_folder
    args = DistillationDataArguments(dataset_name=str(folder), text_column="sentence", streaming=True,
                                     max_duration_seconds=1.0)
    for item in build_dataset(args, "eval"):
        find_window(full_decode(originals[item["id"]]["path"]), item["input_values"])
        assert len(item["input_values"]) == SAMPLING_RATE

    # duration limits drop the same utterances as the map-style (header-based) filter
    durations = sorted(column(librispeech_dataset(CORPUS, ["dev-clean"]), "duration"))
    limits = dict(min_duration_seconds=durations[2], max_duration_seconds=durations[-3], crop_to_max_duration=False)
    map_style = build_dataset(DistillationDataArguments(dataset_name=str(folder), text_column="sentence", **limits),
                              "eval")
    streaming = build_dataset(
        DistillationDataArguments(dataset_name=str(folder), text_column="sentence", streaming=True, **limits), "eval")
    assert len(map_style) == len(durations) - 4  # two shortest, two longest
    assert [item["id"] for item in streaming] == column(map_style.index, "id")

    # a row whose bytes are garbage is yielded as None (map-style drops it while indexing)
    table = pa.table({"audio": [{"bytes": b"not audio" * 100, "path": "bad.flac"},
                                {"bytes": Path(originals["107-5712-0000"]["path"]).read_bytes(), "path": "good.flac"}],
                      "text": ["X", "Y"]})
    (tmp_path / "broken" / "data").mkdir(parents=True)
    datasets.Dataset(table).cast_column("audio", datasets.Audio()).to_parquet(
        str(tmp_path / "broken" / "data" / "validation-00000-of-00001.parquet"))
    streamed = list(build_dataset(DistillationDataArguments(dataset_name=str(tmp_path / "broken"), streaming=True),
                                  "eval"))
    assert streamed[0] is None and streamed[1]["id"] == "good.flac"
    assert AudioCollator()(streamed)["num_skipped"] == 1
    map_style = build_dataset(DistillationDataArguments(dataset_name=str(tmp_path / "broken")), "eval")
    assert column(map_style.index, "id") == ["good.flac"]


def test_hub_csv_of_paths_via_load_kwargs(tmp_path):
    index = librispeech_dataset(CORPUS, ["test-clean"])
    csv = tmp_path / "test.csv"
    csv.write_text("file,text\n" + "".join(f"{p},{t}\n" for p, t in zip(column(index, "path"), column(index, "text"))))
    dataset = hub_dataset("csv", split="test", audio_column="file", data_files={"test": str(csv)})
    assert len(dataset) == len(index)
    for row, path in zip(dataset, column(index, "path")):
        np.testing.assert_array_equal(load_audio(row["file"]), full_decode(path))


@pytest.mark.skipif(importlib.util.find_spec("torchcodec") is not None, reason="only without torchcodec")
def test_audiofolder_without_torchcodec_explains_itself(tmp_path):
    folder = tmp_path / "af" / "train"
    folder.mkdir(parents=True)
    shutil.copy(next((CORPUS / "LibriSpeech" / "test-clean").glob("*/*/*.flac")), folder)
    with pytest.raises(RuntimeError, match="torchcodec"):
        hub_dataset(str(tmp_path / "af"), split="train", text_column=None)


# --------------------------------------------------------------------------- #
# DistillationDataArguments
# --------------------------------------------------------------------------- #


def test_data_arguments_parse_and_validate():
    (args,) = HfArgumentParser(DistillationDataArguments).parse_args_into_dataclasses(
        ["--librispeech_root", "/corpus", "--train_splits", "train-clean-100", "train-clean-360",
         "--max_duration_seconds", "15.6"])
    assert args.train_splits == ["train-clean-100", "train-clean-360"] and args.eval_splits == ["dev-clean"]
    assert args.max_audio_samples == 249_600 and args.min_audio_samples == 400
    for field in dataclasses.fields(DistillationDataArguments):
        assert len(field.metadata.get("help", "")) > 20, field.name

    with pytest.raises(ValueError, match="exactly one"):
        DistillationDataArguments()
    with pytest.raises(ValueError, match="exactly one"):
        DistillationDataArguments(librispeech_root="/corpus", dataset_name="librispeech_asr")
    with pytest.raises(ValueError, match="streaming"):
        DistillationDataArguments(librispeech_root="/corpus", streaming=True)
    with pytest.raises(ValueError, match="max_duration_seconds"):
        DistillationDataArguments(librispeech_root="/corpus", max_duration_seconds=0.01)
    with pytest.raises(ValueError, match="max_train_samples"):
        DistillationDataArguments(librispeech_root="/corpus", max_train_samples=0)
    with pytest.raises(ValueError, match="'train' or 'eval'"):
        build_dataset(DistillationDataArguments(librispeech_root=str(CORPUS)), "validation")


def test_module_constants():
    assert SAMPLING_RATE == 16_000
    assert RECEPTIVE_FIELD_SAMPLES / SAMPLING_RATE == DistillationDataArguments.min_duration_seconds


def test_a_folder_that_cannot_be_listed_is_named_and_the_rest_indexed(tmp_path, monkeypatch, caplog):
    """A chapter folder without read permission (simulated: these tests may run as root, who reads
    everything): a glob would silently leave its utterances out."""
    import os

    from armhubert_training.corpora.librispeech import librispeech_index

    shutil.copytree(CORPUS / "LibriSpeech" / "dev-clean", tmp_path / "LibriSpeech" / "dev-clean")
    chapters = sorted((tmp_path / "LibriSpeech" / "dev-clean").glob("*/*"))
    locked = chapters[0]
    scandir = os.scandir

    def scandir_without_permission(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_without_permission)
    caplog.set_level("WARNING")
    index, _ = librispeech_index(tmp_path, ["dev-clean"])
    kept = {Path(path).parent for path in column(index, "path")}
    assert locked not in kept and kept == set(chapters[1:])
    assert f"Skipped folder {locked}: it cannot be listed (Permission denied)" in caplog.text


def test_files_under_follows_links_once_and_stops_at_the_depth_asked(tmp_path):
    """A link back up the tree (a loop) ends; a linked folder is read once; only `depth` folders down."""
    from armhubert_training.corpora.index import files_under

    for relative in ("a/b/x.wav", "a/b/c/y.wav", "a/b/c/notes.txt", "a/.hidden/z.wav", "w.wav"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    (tmp_path / "a" / "b" / "c" / "up").symlink_to(tmp_path / "a")  # a loop

    def found(**options) -> list[str]:
        return [p.relative_to(tmp_path).as_posix()
                for p in files_under(tmp_path, lambda name: name.endswith(".wav"), **options)]

    assert found() == ["a/.hidden/z.wav", "a/b/c/y.wav", "a/b/x.wav", "w.wav"]
    assert found(skip_hidden=True) == ["a/b/c/y.wav", "a/b/x.wav", "w.wav"]
    assert found(depth=2) == ["a/.hidden/z.wav", "a/b/x.wav"] and found(depth=0) == ["w.wav"]
    (tmp_path / "again").symlink_to(tmp_path / "a" / "b")  # the same real folder under two names
    names = [Path(path).name for path in found()]
    assert sorted(names) == ["w.wav", "x.wav", "y.wav", "z.wav"]
