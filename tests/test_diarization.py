"""SUPERB speaker diarization: the head and its loss, the LibriMix reader, the DER scorer, and a run of
run_diarization.py on Libri2Mix-style mixtures written from the bundled audio."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from transformers import AutoModelForAudioFrameClassification

import run_diarization
from armhubert_training.arguments import DiarizationDataArguments
from armhubert_training.audio import skip_metrics
from armhubert_training.corpora.librimix import librimix_recordings, read_rttm
from armhubert_training.diarization_scoring import FrameErrors, diarization_error_rate
from armhubert_training.speech_datasets import build_diarization_datasets
from conftest import REPO, logged_losses, pad_batch, tiny_config
from modeling_armhubert import ArmHubertForSuperbDiarization, permutation_invariant_bce
from tools.make_tiny_librimix import TEST, make_tiny_librimix, write_split

DSCORE = REPO / "tests" / "fixtures" / "dscore"
RATE, SHIFT = 16_000, 320


# ----------------------------------------------------------------------------------------------
# An independent DER: 1 ms frames, speakers mapped by the Hungarian assignment on overlap
# ----------------------------------------------------------------------------------------------


def reference_der(reference: dict, hypothesis: dict) -> float:
    """(missed + false alarm + confusion) / reference speech over all recordings, from RTTM turns."""
    errors = speech = 0
    for recording in set(reference) | set(hypothesis):
        ref, hyp = reference.get(recording, []), hypothesis.get(recording, [])
        end = max(round(turn.end * 1000) for turn in ref + hyp)

        def grid(turns):
            speakers = sorted({turn.speaker for turn in turns})
            active = np.zeros((end, max(len(speakers), 1)), dtype=bool)
            for turn in turns:
                active[round(turn.start * 1000):round(turn.end * 1000), speakers.index(turn.speaker)] = True
            return active

        ref_grid, hyp_grid = grid(ref), grid(hyp)
        overlap = ref_grid.T.astype(int) @ hyp_grid.astype(int)  # (ref speakers, hyp speakers) in ms
        rows, cols = linear_sum_assignment(-overlap)
        n_ref, n_sys = ref_grid.sum(1), hyp_grid.sum(1)
        errors += int(np.maximum(n_ref, n_sys).sum()) - int(overlap[rows, cols].sum())
        speech += int(n_ref.sum())
    return errors / speech


def test_der_scorer_reproduces_dscores_reference_test():
    reference, hypothesis = read_rttm(DSCORE / "ref.rttm"), read_rttm(DSCORE / "sys.rttm")
    assert 100 * diarization_error_rate(reference, hypothesis, ["FILE1"]) == pytest.approx(26.3931, abs=5e-4)
    assert 100 * reference_der(reference, hypothesis) == pytest.approx(26.3931, abs=5e-4)


def test_frame_errors_follow_s3prls_worked_example():
    labels = torch.tensor([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0], [0, 1]], dtype=torch.float)
    decisions = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float)
    errors = FrameErrors()
    errors.add(decisions * 2 - 1, labels)  # logits: positive where decided active
    assert (errors.missed, errors.false_alarm, errors.confusion, errors.speech) == (1, 2, 0, 6)
    assert errors.metrics() == {"accuracy": 0.75, "frame_der": 0.5}


# ----------------------------------------------------------------------------------------------
# The head
# ----------------------------------------------------------------------------------------------


def bce(logit: float, label: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_permutation_invariant_bce_equals_a_hand_computed_value():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0], [9.0, 9.0]],
                           [[-3.0, 1.0], [7.0, 7.0], [7.0, 7.0]]])  # item 2 has one real frame
    labels = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [5.0, 5.0]],
                           [[1.0, 0.0], [5.0, 5.0], [5.0, 5.0]]])  # 5 = padding, never read
    lengths = torch.tensor([2, 1])

    def summed(item, order, frames):
        return sum((bce(logits[item, t, 0].item(), labels[item, t, order[0]].item())
                    + bce(logits[item, t, 1].item(), labels[item, t, order[1]].item())) / 2 for t in range(frames))

    first = min(summed(0, (0, 1), 2), summed(0, (1, 0), 2))
    second = min(summed(1, (0, 1), 1), summed(1, (1, 0), 1))
    loss, orders = permutation_invariant_bce(logits, labels, lengths)
    assert loss.item() == pytest.approx((first + second) / 3, rel=1e-6)
    # Item 1 fits swapped speakers (speaker 0 is silent, the logits say speaker 1 is), item 2 too.
    assert orders.tolist() == [[1, 0], [1, 0]]


def test_a_padded_batch_gives_each_item_its_single_output():
    torch.manual_seed(0)
    model = ArmHubertForSuperbDiarization(tiny_config(superb_features="hidden_states", projection_dim=0,
                                                      diarization_lstm_hidden_size=16)).eval()
    waveforms = [torch.randn(n) for n in (16_000, 9_917, 4_100)]
    values, mask = pad_batch(waveforms)
    labels = torch.randint(0, 2, (3, 16_000 // SHIFT, 2)).float()
    with torch.no_grad():
        batch = model(values, attention_mask=mask, labels=labels)
        for row, waveform in enumerate(waveforms):
            frames = len(waveform) // SHIFT
            alone = model(waveform[None], labels=labels[row:row + 1, :frames])
            torch.testing.assert_close(batch.logits[row, :frames], alone.logits[0], atol=1e-5, rtol=1e-5)
    assert batch.logits.shape == (3, 50, 2)
    assert [p for p in model.armhubert.parameters() if p.requires_grad] == []


# ----------------------------------------------------------------------------------------------
# Libri2Mix-style corpus from the bundled audio (tools/make_tiny_librimix.py: known turns)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def librimix(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("librimix")
    make_tiny_librimix(root)
    return root


def test_reader_gives_the_written_speakers_frames_and_chunks(librimix):
    recordings, skipped = librimix_recordings(librimix, "test", SHIFT, 2)
    assert skipped == {"unreadable": []}
    first = recordings[0]
    assert first.id == "107-5712-0000_110-2889-0000" and first.speakers == ["107", "110"]
    assert first.frames == int(2.6 * RATE / SHIFT) == 130
    labels = first.labels(SHIFT, 0, first.frames, 2)
    assert labels[:, 0].tolist() == [1.0] * 80 + [0.0] * 50  # 0.0-1.6 s
    assert labels[:, 1].tolist() == [0.0] * 50 + [1.0] * 80  # 1.0-2.6 s
    data = build_diarization_datasets(DiarizationDataArguments(librimix_root=str(librimix), chunk_frames=60),
                                      SHIFT, 2, do_train=False, do_eval=False, do_predict=True, split_key=str)
    dataset = data.predict["test"]
    # 130 frames -> chunks of 60, 60, 10; the second recording (2.3 s = 115 frames) -> 60, 55.
    assert [(r, s, e) for r, s, e in dataset.chunks][:3] == [(first.id, 0, 60), (first.id, 60, 120),
                                                             (first.id, 120, 130)]
    item = dataset[1]
    assert item["input_values"].shape == (60 * SHIFT,) and item["labels"].shape == (60, 2)
    np.testing.assert_array_equal(item["labels"], labels[60:120])


@pytest.fixture(scope="module")
def sd_run(librimix, student_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("runs") / "sd"
    run_diarization.main([
        str(REPO / "configs" / "superb" / "sd.yaml"), "--model_name_or_path", str(student_dir),
        "--output_dir", str(output), "--librimix_root", str(librimix), "--chunk_frames", "60",
        "--superb_features", "hidden_states", "--diarization_lstm_hidden_size", "32", "--learning_rate", "1e-2",
        "--max_steps", "30", "--gradient_accumulation_steps", "1", "--per_device_train_batch_size", "4",
        "--eval_steps", "15", "--save_steps", "15", "--logging_steps", "1", "--dataloader_num_workers", "0",
        "--dataloader_pin_memory", "false", "--seed", "0"])
    return output


def test_training_lowers_the_loss_and_selects_by_frame_accuracy(sd_run):
    losses = logged_losses(sd_run)
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    state = json.loads((sd_run / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_accuracy" in entry]
    assert len(evaluations) >= 2 and state["best_metric"] == max(entry["eval_accuracy"] for entry in evaluations)


def test_results_der_equals_a_recomputation_from_the_written_rttms(sd_run, librimix):
    results = json.loads((sd_run / "predict_test_results.json").read_text())
    reference = read_rttm(librimix / "test" / "rttm")
    table = {}
    for median in (1, 11):
        for threshold in (0.3, 0.4, 0.5, 0.6, 0.7):
            name = f"threshold_{threshold:g}_median_{median}"
            hypothesis = read_rttm(sd_run / "predict_test_rttm" / f"{name}.rttm")
            table[name] = results[f"predict_test_der_{name}"]
            assert table[name] == pytest.approx(reference_der(reference, hypothesis), abs=1e-9), name
    assert results["predict_test_der"] == min(table.values())
    best = f"threshold_{results['predict_test_der_threshold']:g}_median_{results['predict_test_der_median']}"
    assert table[best] == results["predict_test_der"]
    assert results["predict_test_recordings"] == 2 and results["predict_test_skipped_files"] == 0
    # The model card reports the same DER and frame accuracy as the results file.
    card = (sd_run / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| predict_test |"))
    assert row.split(" | ")[1:3] == [f"{results['predict_test_accuracy']:.4f}",
                                     f"{100 * results['predict_test_der']:.2f} %"]
    assert "AutoModelForAudioFrameClassification" in card


def test_the_trained_model_loads_by_its_auto_class_and_scores_the_same(sd_run, librimix, tmp_path):
    assert json.loads((sd_run / "config.json").read_text())["auto_map"]["AutoModelForAudioFrameClassification"] == (
        "modeling_armhubert.ArmHubertForSuperbDiarization")
    assert isinstance(AutoModelForAudioFrameClassification.from_pretrained(sd_run), ArmHubertForSuperbDiarization)
    metrics = run_diarization.main(["--model_name_or_path", str(sd_run), "--librimix_root", str(librimix),
                                    "--chunk_frames", "60", "--do_predict", "--output_dir", str(tmp_path),
                                    "--dataloader_num_workers", "0", "--dataloader_pin_memory", "false", "--report_to", "none"])
    saved = json.loads((sd_run / "predict_test_results.json").read_text())
    assert metrics["predict_test_der"] == saved["predict_test_der"]
    assert metrics["predict_test_accuracy"] == saved["predict_test_accuracy"]
    # One chunk per recording: s3prl's frame DER (logit > 0) is the RTTM DER at threshold 0.5 without a filter.
    whole = run_diarization.main(["--model_name_or_path", str(sd_run), "--librimix_root", str(librimix),
                                  "--do_predict", "--output_dir", str(tmp_path / "whole"),
                                  "--dataloader_num_workers", "0", "--dataloader_pin_memory", "false", "--report_to", "none"])
    assert whole["predict_test_chunks"] == whole["predict_test_recordings"] == 2
    assert whole["predict_test_frame_der"] == pytest.approx(whole["predict_test_der_threshold_0.5_median_1"], abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def corrupt(librimix: Path, tmp_path: Path, name: str, line: str) -> Path:
    """A copy of the test split with `line` appended to its file `name`."""
    root = tmp_path / "corpus"
    (root / "test").mkdir(parents=True)
    for file in (librimix / "test").iterdir():
        (root / "test" / file.name).write_bytes(file.read_bytes())
    with open(root / "test" / name, "a") as handle:
        handle.write(line + "\n")
    return root


@pytest.mark.parametrize("name, line, error, message", [
    ("wav.scp", "ghost /nowhere/ghost.wav", FileNotFoundError, r"wav.scp line 3: /nowhere/ghost.wav does not exist"),
    ("segments", "seg 107-5712-0000_110-2889-0000 0.5", ValueError, r"segments line 5 is"),
    ("segments", "seg 107-5712-0000_110-2889-0000 0.5 x", ValueError, r"segments line 5: 'x' is not a time"),
    ("rttm", "SPEAKER rec 1 0.5", ValueError, r"rttm line 5 is"),
])
def test_a_malformed_line_stops_at_start_up_naming_file_and_line(librimix, tmp_path, name, line, error, message):
    root = corrupt(librimix, tmp_path, name, line)
    with pytest.raises(error, match=message):
        librimix_recordings(root, "test", SHIFT, 2)


def test_a_recording_with_more_speakers_than_outputs_is_an_error_naming_it(tmp_path):
    write_split(tmp_path / "test", TEST[:1], extra=("101-7311-0003", 0.2))
    with pytest.raises(ValueError, match=r"Recording 107-5712-0000_110-2889-0000 .* has 3 speakers"):
        librimix_recordings(tmp_path, "test", SHIFT, 2)


def test_unreadable_audio_is_skipped_and_counted_and_an_empty_split_stops(tmp_path):
    write_split(tmp_path / "test", TEST)
    (tmp_path / "test" / "107-5712-0000_110-2889-0000.wav").write_bytes(b"not audio")
    args = DiarizationDataArguments(librimix_root=str(tmp_path))
    data = build_diarization_datasets(args, SHIFT, 2, do_train=False, do_eval=False, do_predict=True, split_key=str)
    dataset = data.predict["test"]
    assert list(dataset.recordings) == ["110-2889-0001_107-5712-0001"]
    assert skip_metrics(dataset)["skipped_files_unreadable"] == 1
    (tmp_path / "test" / "110-2889-0001_107-5712-0001.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"No usable recording in LibriMix test .*2 recordings are unreadable"):
        build_diarization_datasets(args, SHIFT, 2, do_train=False, do_eval=False, do_predict=True, split_key=str)
