"""Speaker verification (SUPERB's ASV): the x-vector head, SUPERB's input effects, the VoxCeleb1 reader, the
EER and run_speaker_verification.py on a tiny VoxCeleb1 written from the bundled audio."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import bundled_waveforms, logged_losses, pad_batch, tiny_config

from armhubert_training.corpora.voxceleb1_verification import held_out_trials, read_trials, training_utterances
from armhubert_training.input_effects import InputEffects, apply_gain_db, remove_silence
from armhubert_training.verification_trainer import equal_error_rate, read_trial_scores, verify
from modeling_armhubert import AMSoftmaxLoss, ArmHubertForXVector
from tools.make_demo_voxceleb1 import TRIALS, make_demo_voxceleb1

SMALL_HEAD = dict(tdnn_dim=[32, 32, 32, 32, 64], xvector_output_dim=32)


# ---------------------------------------------------------------------------------------------
# EER
# ---------------------------------------------------------------------------------------------


def eer_from_roc_corners(labels, scores) -> float:
    """An independent EER: the ROC corners (one per distinct score, ties together), then the exact crossing
    of the straight segments between them with FAR = 1 - TAR."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    positives, negatives = labels.sum(), (1 - labels).sum()
    corners = [(0.0, 0.0)]
    for threshold in sorted(set(scores.tolist()), reverse=True):
        accepted = scores >= threshold
        corners.append(((accepted & (labels == 0)).sum() / negatives, (accepted & (labels == 1)).sum() / positives))
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        # On the segment, y = y0 + (x - x0) * slope; solve y = 1 - x.
        if x1 == x0:
            if y0 <= 1 - x0 <= y1:
                return x0
            continue
        slope = (y1 - y0) / (x1 - x0)
        x = (1 - y0 + slope * x0) / (1 + slope)
        if x0 <= x <= x1:
            return x
    raise AssertionError("no crossing")


def test_eer_equals_the_worked_example_and_an_independent_computation():
    eer, threshold = equal_error_rate([1, 1, 0, 1, 0, 0], [0.9, 0.8, 0.5, 0.5, 0.2, 0.1])
    assert eer == pytest.approx(1 / 6) and threshold == pytest.approx(0.65)
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 200)
        scores = np.round(rng.normal(labels * 0.8, 1.0), 2)  # rounded: ties as well
        assert equal_error_rate(labels, scores)[0] == pytest.approx(eer_from_roc_corners(labels, scores), abs=1e-9)


# ---------------------------------------------------------------------------------------------
# The head
# ---------------------------------------------------------------------------------------------


def test_am_softmax_equals_hand_computed_values():
    loss = AMSoftmaxLoss(2, 2, scale=30.0, margin=0.4)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # columns point along x and y
    x = torch.tensor([[5.0, 0.0], [1.0, 1.0]])
    # Item 1: cosines (1, 0), speaker 0: logits 30 * (1 - 0.4) = 18 and 0.
    # Item 2: cosines (1/sqrt2, 1/sqrt2), speaker 1: logits 30 / sqrt2 and 30 * (1/sqrt2 - 0.4).
    first = math.log(1 + math.exp(-18))
    second = math.log(1 + math.exp(30 / math.sqrt(2) - 30 * (1 / math.sqrt(2) - 0.4)))
    with torch.no_grad():
        value = float(loss(x, torch.tensor([0, 1])))
    assert value == pytest.approx((first + second) / 2, rel=1e-5)


def test_padded_batch_gives_each_item_its_single_output():
    torch.manual_seed(0)
    model = ArmHubertForXVector(tiny_config(num_labels=3, **SMALL_HEAD)).eval()
    waveforms = bundled_waveforms(count=3)
    values, mask = pad_batch(waveforms)
    with torch.no_grad():
        batch = model(values, attention_mask=mask)
        for i, waveform in enumerate(waveforms):
            alone = model(waveform[None])
            assert torch.allclose(batch.embeddings[i], alone.embeddings[0], atol=1e-5)
            assert torch.allclose(batch.logits[i], alone.logits[0], atol=1e-5)
    assert batch.embeddings.min() >= 0  # SUPERB's ReLU, which Transformers' x-vector head omits
    # SUPERB's head: 5 TDNN layers taking 14 frames, a 2 x 64 statistics vector.
    assert model.frames_lost == 14 and model.feature_extractor.in_features == 128


# ---------------------------------------------------------------------------------------------
# Input effects
# ---------------------------------------------------------------------------------------------


def sox_silence_reference(x: np.ndarray) -> np.ndarray:
    """sox 14.4's `silence 1 0.1 0.1% -1 0.1 0.1%` flow on mono 16 kHz 32-bit samples, sample by sample."""
    window, duration, kept, held = 320, 1600, [], []
    squares, position, total, trimming = [0.0] * window, 0, 0.0, True

    def above(sample):
        rms = math.floor(math.sqrt(max(total - squares[position] + sample * sample, 0.0) / window))
        return rms / (2 ** 31 - 1) >= 0.001

    for value in x.astype(np.float64):
        sample = value * 2 ** 31
        loud = above(sample)
        total += sample * sample - squares[position]
        squares[position] = sample * sample
        position = (position + 1) % window
        if trimming:
            held = held + [value] if loud else []
            if len(held) >= duration:
                kept += held
                held, trimming = [], False
        elif loud:
            kept += held + [value]
            held = []
        else:
            held.append(value)
            if len(held) >= duration:  # the silence is dropped; look for the start again, window cleared
                held, trimming, squares, position, total = [], True, [0.0] * window, 0, 0.0
    return np.asarray(kept + ([] if trimming else held), dtype=np.float32)


def test_silence_removal_equals_a_hand_computed_case_and_soxs_flow():
    tone = np.where(np.arange(4800) % 2 == 0, 0.5, -0.5).astype(np.float32)  # 0.3 s, every sample loud
    x = np.concatenate([np.zeros(800), tone, np.zeros(3200), tone, np.zeros(800)]).astype(np.float32)
    # The window is loud from a tone's first sample to 319 samples after it. Kept: the first tone and the 319
    # loud-window samples after it; the 3,200-sample pause reaches 0.1 s (1,600 samples) below the
    # threshold and is dropped with the leading silence; the second tone and the final 800 samples
    # (the window then below for 481 samples only, fewer than 1,600) are kept.
    expected = np.concatenate([x[800:5919], x[8800:]])
    assert np.array_equal(remove_silence(x), expected)
    assert len(remove_silence(np.zeros(16000, dtype=np.float32))) == 0
    rng = np.random.default_rng(0)
    speech = bundled_waveforms(count=1)[0].numpy()[:24000]
    bursts = speech * np.repeat(rng.random(24) > 0.5, 1000)  # speech with silent gaps of 1,000 samples and more
    for signal in (speech, bursts.astype(np.float32)):
        assert np.array_equal(remove_silence(signal), sox_silence_reference(signal))
    assert len(remove_silence(bursts.astype(np.float32))) < 24000 - 4000  # pauses of 3,000 and 4,000 samples went


def test_gain_and_effects_recorded_in_a_config():
    x = bundled_waveforms(count=1)[0].numpy()
    assert np.allclose(apply_gain_db(x, -3.0), x * 10 ** (-3 / 20), rtol=1e-6)
    effects = InputEffects(-3.0, True)
    assert InputEffects.from_config(tiny_config(**effects.config_fields())) == effects
    assert np.array_equal(effects(x), remove_silence(apply_gain_db(x, -3.0)))
    assert (str(effects), str(InputEffects(-3.0)), str(InputEffects())) == (
        "a -3 dB gain, silence removal", "a -3 dB gain", "none")


# ---------------------------------------------------------------------------------------------
# The corpus reader
# ---------------------------------------------------------------------------------------------

def write_voxceleb1(root: Path) -> Path:
    """The demo's tiny VoxCeleb1 (3 training speakers, 2 test speakers, 6 trials) plus an unreadable file in
    each folder and a trial naming the unreadable test file."""
    make_demo_voxceleb1(root, seconds=2.0)
    (root / "dev/wav/id104/yt/broken.wav").write_bytes(b"not audio")
    (root / "test/wav/id110/yt/broken.wav").write_bytes(b"not audio")
    with open(root / "veri_test.txt", "a") as trials:
        trials.write("0 id107/yt/0003.wav id110/yt/broken.wav\n")
    return root


def test_reader_stops_on_a_bad_trial_list_or_an_empty_split(tmp_path):
    root = write_voxceleb1(tmp_path / "vox")
    folder = root / "test/wav"
    assert len(read_trials(root / "veri_test.txt", folder)) == 7
    bad = tmp_path / "bad.txt"
    bad.write_text(TRIALS[0] + "\n1 id107/yt/0000.wav\n")
    with pytest.raises(ValueError, match=r"bad.txt line 2 .*expected"):
        read_trials(bad, folder)
    bad.write_text(TRIALS[0] + "\n0 id107/yt/0000.wav id110/yt/9999.wav\n")
    with pytest.raises(FileNotFoundError, match=r"bad.txt line 2 names id110/yt/9999.wav"):
        read_trials(bad, folder)
    (tmp_path / "empty/dev/wav").mkdir(parents=True)
    with pytest.raises(ValueError, match="training split is empty"):
        training_utterances(tmp_path / "empty")
    utterances = training_utterances(root)
    remaining, trials = held_out_trials(utterances, speakers=2, trials=10, seed=0)
    held = {u[2] for u in utterances} - {u[2] for u in remaining}
    speaker = {u[0]: u[2] for u in utterances}
    assert len(held) == 2 and len(trials) == 10 and sum(t.target for t in trials) == 5
    for trial in trials:
        assert {speaker[trial.first], speaker[trial.second]} <= held
        assert (speaker[trial.first] == speaker[trial.second]) == trial.target


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------


def test_training_run_writes_trial_scores_and_the_eer_they_give(tmp_path, student_dir, offline_hf):
    import run_speaker_verification

    root = write_voxceleb1(tmp_path / "vox")
    out = tmp_path / "run"
    metrics = run_speaker_verification.main([
        "configs/superb/asv.yaml", "--model_name_or_path", str(student_dir), "--voxceleb1_root", str(root),
        "--output_dir", str(out), "--config_overrides", json.dumps(SMALL_HEAD), "--max_steps", "8",
        "--save_steps", "4", "--per_device_train_batch_size", "18", "--gradient_accumulation_steps", "1",
        "--learning_rate", "1e-3", "--min_duration_seconds", "1", "--max_duration_seconds", "2",
        "--logging_steps", "1", "--dataloader_num_workers", "0", "--per_device_eval_batch_size", "4"])
    # One batch holds every training file, uncropped (2 s at most): each step sees the same batch, so the
    # loss falls at every step.
    losses = logged_losses(out)
    assert len(losses) == 8 and all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert metrics["train_skipped_files_unreadable"] == 1
    results = json.loads((out / "predict_test_results.json").read_text())
    rows = read_trial_scores(out / "predict_test_trial_scores.tsv")
    assert results["predict_test_trials"] == len(rows) == 6 and results["predict_test_trials_skipped"] == 1
    assert results["predict_test_skipped_files_unreadable"] == 1
    labels, scores = [int(r["label"]) for r in rows], [float(r["score"]) for r in rows]
    assert results["predict_test_eer"] == pytest.approx(eer_from_roc_corners(labels, scores), abs=1e-9)
    eers = json.loads((out / "checkpoint_eers.json").read_text())
    assert set(eers) == {"checkpoint-4", "checkpoint-8"}
    assert results["predict_test_eer"] == min(eers.values())
    # The saved model is the selected one and records SUPERB's effects; one call scores a trial as the run did.
    card = (out / "README.md").read_text()
    assert "| test |" in card and "lowest test EER" in card
    assert "Input effects applied to every file: a -3 dB gain, silence removal." in card
    model = ArmHubertForXVector.from_pretrained(out)
    assert InputEffects.from_config(model.config) == InputEffects(-3.0, True)
    first, second = rows[0]["first"], rows[0]["second"]
    score = verify(model, root / "test/wav" / first, root / "test/wav" / second)
    assert score == pytest.approx(float(rows[0]["score"]), abs=1e-5)


def test_training_on_from_a_trained_model_refuses_speakers_it_has_no_class_for(tmp_path):
    import run_speaker_verification
    from armhubert_training.corpora.labels import LabelSet

    root = write_voxceleb1(tmp_path / "vox")
    model_args, data_args, training_args = run_speaker_verification.parse_args([
        "configs/superb/asv.yaml", "--voxceleb1_root", str(root), "--output_dir", str(tmp_path / "run"),
        "--random_student_preset", "armhubert", "--do_predict", "false", "--min_duration_seconds", "1", "--preprocessing_num_workers", "1"])
    speakers = sorted({speaker for _, _, speaker in training_utterances(root)})
    trained_on = LabelSet.single(speakers[:-1])  # a model trained before the last speaker was added
    with pytest.raises(ValueError, match=rf"outside the label set: '{speakers[-1]}'"):
        run_speaker_verification.build_datasets(data_args, training_args, InputEffects(), trained_on)
    _, _, _, kept = run_speaker_verification.build_datasets(data_args, training_args, InputEffects(),
                                                            LabelSet.single(speakers))
    assert kept == LabelSet.single(speakers)


def test_classification_pipeline_applies_the_gain_its_model_records():
    from armhubert_training.audio import raw_waveform_feature_extractor
    from armhubert_training.classification_pipeline import ArmHubertAudioClassificationPipeline
    from modeling_armhubert import ArmHubertForSequenceClassification

    config = tiny_config(num_labels=2, classifier_mode="superb", superb_features="hidden_states", input_gain_db=-3.0)
    classify = ArmHubertAudioClassificationPipeline(model=ArmHubertForSequenceClassification(config).eval(),
                                                    feature_extractor=raw_waveform_feature_extractor())
    waveform = bundled_waveforms(count=1)[0].numpy()
    processed = classify.preprocess(waveform)
    assert np.allclose(processed["input_values"][0].numpy(), waveform * 10 ** (-3 / 20), rtol=1e-6)
