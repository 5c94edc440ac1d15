"""Speech recognition on a student: vocabulary and labels, local WER/CER metrics, ArmHubertForSuperbCTC,
run_asr_ctc.py (fine-tuning, evaluation files, errors) and the pipeline of the models it writes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import evaluate
import jiwer
import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCTC, Wav2Vec2Processor

from conftest import LIBRISPEECH, REPO, bundled_waveforms, logged_losses, pad_batch, tiny_config, transcripts
import run_asr_ctc
from armhubert_training.arguments import AsrDataArguments, AsrModelArguments
from armhubert_training.asr_trainer import read_predictions
from armhubert_training.asr_vocabulary import (
    CharacterTargets,
    CtcCollator,
    build_vocabulary,
    create_tokenizer,
    normalize_transcript,
)
from armhubert_training.student_source import resolve_source, student_feature_extractor
from modeling_armhubert import ArmHubertForSuperbCTC, ArmHubertModel

CORPUS = LIBRISPEECH.parent
LINEAR_DEMO = REPO / "configs" / "demo" / "asr-linear.yaml"
SUPERB_DEMO = REPO / "configs" / "demo" / "asr-superb.yaml"
# Short utterances and few steps keep each run to seconds on two CPU cores.
QUICK = ["--librispeech_root", str(CORPUS), "--max_duration_seconds", "3", "--per_device_train_batch_size", "4",
         "--per_device_eval_batch_size", "4", "--max_eval_samples", "3", "--max_predict_samples", "4",
         "--logging_steps", "1", "--save_strategy", "no", "--dataloader_num_workers", "0",
         "--dataloader_pin_memory", "false"]


def audio_path(utterance_id: str, split: str = "test-clean") -> Path:
    speaker, chapter, _ = utterance_id.split("-")
    return LIBRISPEECH / split / speaker / chapter / f"{utterance_id}.flac"


@pytest.fixture(scope="module")
def linear_run(student_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("runs") / "linear"
    run_asr_ctc.main([str(LINEAR_DEMO), "--model_name_or_path", str(student_dir), "--output_dir", str(output),
                      *QUICK, "--max_steps", "30", "--learning_rate", "2e-3", "--warmup_steps", "0"])
    return output


@pytest.fixture(scope="module")
def superb_run(student_dir, tmp_path_factory) -> Path:
    """The SUPERB demo (SpecAugment on) for 16 steps, dev WER every 8 steps, the best checkpoint kept.
    The tiny student's features have 48 channels, so channel bands are scaled down from SUPERB's 50 to 4."""
    output = tmp_path_factory.mktemp("runs") / "superb"
    run_asr_ctc.main([str(SUPERB_DEMO), "--model_name_or_path", str(student_dir), "--output_dir", str(output),
                      *QUICK, "--max_steps", "16", "--learning_rate", "3e-3", "--superb_projection_dim", "32",
                      "--superb_lstm_hidden_size", "24", "--config_overrides", '{"superb_freq_mask_width_limit": 4}',
                      "--eval_strategy", "steps", "--eval_steps", "8", "--save_strategy", "steps", "--save_steps", "8",
                      "--load_best_model_at_end", "true", "--metric_for_best_model", "wer"])
    return output


@pytest.fixture(scope="module")
def predict_only_run(student_dir, tmp_path_factory) -> Path:
    """--do_eval and --do_predict alone, on a fine-tuned model whose head is still (almost) random: its
    transcripts are long random strings, which makes comparing them meaningful (trained toy models
    say little but blanks)."""
    runs = tmp_path_factory.mktemp("runs")
    run_asr_ctc.main(["--model_name_or_path", str(student_dir), "--output_dir", str(runs / "untrained"),
                      "--do_train", "--max_steps", "1", "--learning_rate", "1e-9", "--report_to", "none", *QUICK])
    output = runs / "predict-only"
    run_asr_ctc.main(["--model_name_or_path", str(runs / "untrained"), "--output_dir", str(output), "--do_eval",
                      "--do_predict", "--report_to", "none", *QUICK])
    assert not (output / "model.safetensors").exists()  # evaluation writes results, not another model
    return output


# ----------------------------------------------------------------------------------------------
# Vocabulary, tokenizer, labels
# ----------------------------------------------------------------------------------------------


def test_vocabulary_and_tokenizer_round_trip_on_bundled_transcripts(tmp_path):
    train = [normalize_transcript(text) for text in transcripts("train-clean-100").values()]
    vocab = build_vocabulary(train)
    characters = sorted(set("".join(train)) - {" "})
    assert list(vocab) == ["<pad>", "<unk>", "|", *characters] and characters[0] == "'"
    assert list(vocab.values()) == list(range(len(vocab)))

    processor = Wav2Vec2Processor(feature_extractor=student_feature_extractor(None, None),
                                  tokenizer=create_tokenizer(vocab, tmp_path / "tok"))
    processor.save_pretrained(tmp_path / "processor")
    tokenizer = Wav2Vec2Processor.from_pretrained(tmp_path / "processor").tokenizer
    assert tokenizer.get_vocab() == vocab
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)
    assert tokenizer.bos_token is None and tokenizer.eos_token is None
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        for text in map(normalize_transcript, transcripts(split).values()):
            ids = tokenizer(text).input_ids
            assert ids == [vocab.get("|" if char == " " else char, 1) for char in text]
            if split == "train-clean-100":
                assert tokenizer.decode(ids, group_tokens=False) == text


def test_vocab_file_is_checked_and_used(tmp_path):
    vocab = build_vocabulary(["A B'C"])
    (tmp_path / "good.json").write_text(json.dumps(vocab))
    args = AsrDataArguments(librispeech_root=str(CORPUS), vocab_file=str(tmp_path / "good.json"))
    tokenizer = run_asr_ctc.make_tokenizer(args, None, str(tmp_path / "out"), CharacterTargets())
    assert tokenizer.get_vocab() == vocab and json.loads((tmp_path / "out" / "vocab.json").read_text()) == vocab
    (tmp_path / "bad.json").write_text(json.dumps({"A": 0, "B": 1}))
    with pytest.raises(ValueError, match=r"lacks the tokens \['<pad>', '<unk>', '\|'\]"):
        run_asr_ctc.make_tokenizer(replace(args, vocab_file=str(tmp_path / "bad.json")), None, str(tmp_path / "x"),
                                   CharacterTargets())
    for content in ("{'<pad>': 0}", '["<pad>", "<unk>"]'):  # Python's quotes; a list of tokens
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(ValueError, match=r"bad\.json .*map each token to its id|bad\.json must map each token"):
            run_asr_ctc.make_tokenizer(replace(args, vocab_file=str(tmp_path / "bad.json")), None,
                                       str(tmp_path / "x"), CharacterTargets())


def test_transcript_normalisation():
    assert normalize_transcript("  it's\tA  well-known,  fact! ", chars_to_ignore=",!-") == "IT'S A WELLKNOWN FACT"
    assert normalize_transcript("") == ""


def test_characters_outside_the_vocabulary_become_unk_and_are_counted_and_logged(caplog, tmp_path):
    vocab = build_vocabulary(["THE WORK"])  # <pad> <unk> | E H K O R T W
    tokenizer = create_tokenizer(vocab, tmp_path)
    collator = CtcCollator(tokenizer, encoder=CharacterTargets(chars_to_ignore="!"))
    items = [{"input_values": np.zeros(1200, np.float32), "text": "thé work 42!", "id": "utt-a"},
             None,
             {"input_values": np.zeros(800, np.float32), "text": "the  work", "id": "utt-b"}]
    with caplog.at_level(logging.WARNING, logger="armhubert_training.asr_vocabulary"):
        batch = collator(items)
    unk, bar = vocab["<unk>"], vocab["|"]
    expected_a = [vocab["T"], vocab["H"], unk, bar, vocab["W"], vocab["O"], vocab["R"], vocab["K"], bar, unk, unk]
    expected_b = [vocab[c] if c != " " else bar for c in "THE WORK"]
    assert batch["labels"].tolist() == [expected_a, expected_b + [-100] * 3]
    assert batch["text"] == ["THÉ WORK 42", "THE WORK"] and batch["id"] == ["utt-a", "utt-b"]
    assert batch["num_unknown_chars"] == 3 and batch["num_skipped"] == 1
    assert batch["input_lengths"] == [1200, 800] and batch["label_lengths"] == [11, 8]
    assert batch["input_values"].shape == (2, 1200) and batch["attention_mask"].sum().item() == 2000
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "utt-a" in messages[0] and "'É'" in messages[0] and "'4'" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="armhubert_training.asr_vocabulary"):
        again = collator(items[:1])
    assert again["num_unknown_chars"] == 3 and not caplog.records  # counted every time, logged once


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def test_local_metric_modules_load_offline_and_match_hand_counts():
    references = ["THE CAT SAT", "ON THE MAT"]
    hypotheses = ["THE CAT SAT DOWN", "ON MAT"]  # words: 1 insertion + 1 deletion of 6; chars: 5 + 4 of 21
    wer = evaluate.load(str(REPO / "metrics" / "wer"), keep_in_memory=True)
    cer = evaluate.load(str(REPO / "metrics" / "cer"), keep_in_memory=True)
    assert wer.compute(predictions=hypotheses, references=references) == pytest.approx(2 / 6)
    assert cer.compute(predictions=hypotheses, references=references) == pytest.approx(9 / 21)
    assert wer.compute(predictions=["", "X"], references=["A B", "A"]) == pytest.approx(1.0)


def word_edits(hypothesis: list[str], reference: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions, insertions, deletions all cost 1)."""
    row = list(range(len(reference) + 1))
    for i, word in enumerate(hypothesis, 1):
        previous, row[0] = row[0], i
        for j, ref_word in enumerate(reference, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != ref_word))
    return row[-1]


def test_wer_is_corpus_level_as_superb_computes_it():
    """SUPERB's WER: the word edits of all utterances summed, over the reference words summed (words split
    on whitespace), not the mean of per-utterance rates; empty hypotheses and references count too."""
    references = ["THE CAT SAT ON THE MAT", "A DOG", "HELLO WORLD AGAIN", "", "ONE"]
    hypotheses = ["THE CAT SAT ON MAT", " A  DOG BARKED ", "", "UH", "ONE"]
    edits = sum(word_edits(h.split(), r.split()) for h, r in zip(hypotheses, references))
    words = sum(len(r.split()) for r in references)
    assert (edits, words) == (6, 12)
    wer = evaluate.load(str(REPO / "metrics" / "wer"), keep_in_memory=True)
    assert wer.compute(predictions=hypotheses, references=references) == pytest.approx(edits / words, abs=1e-12)
    # The mean of per-utterance rates would differ (1/6, 1/2, 1, -, 0).
    assert not np.isclose(np.mean([1 / 6, 1 / 2, 1, 0]), edits / words)


# ----------------------------------------------------------------------------------------------
# ArmHubertForSuperbCTC
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (dict(superb_features="last"), "superb_features"),
    (dict(superb_lstm_layers=-1), "superb_lstm_layers"),
    (dict(superb_projection_dim=0), "superb_projection_dim"),
    (dict(superb_lstm_dropout=1.5), "superb_lstm_dropout"),
])
def test_superb_config_values_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**bad)


def superb_config(**overrides):
    return tiny_config(vocab_size=12, superb_projection_dim=16, superb_lstm_hidden_size=8, **overrides)


def test_superb_features_choice():
    projected = ArmHubertForSuperbCTC(superb_config())
    assert projected.featurizer.layer_weights.shape == (4,) and projected.projector.in_features == 48
    hidden = ArmHubertForSuperbCTC(superb_config(superb_features="hidden_states", projection_dim=0))
    assert hidden.featurizer.layer_weights.shape == (5,) and hidden.projector.in_features == 64
    with pytest.raises(ValueError, match="hidden_states"):
        ArmHubertForSuperbCTC(superb_config(projection_dim=0))


def test_superb_student_is_frozen_and_stays_in_eval_mode_while_training(tmp_path):
    torch.manual_seed(0)
    ArmHubertModel(tiny_config()).save_pretrained(tmp_path / "student")
    model = ArmHubertForSuperbCTC.from_pretrained(tmp_path / "student", config=superb_config(superb_lstm_dropout=0.0))
    student_before = {k: v.clone() for k, v in model.armhubert.state_dict().items()}
    head_before = model.lm_head.weight.clone()
    model.train()
    assert not any(module.training for module in model.armhubert.modules())
    assert model.lstm_layers[0].training
    values, mask = pad_batch(bundled_waveforms(count=2))
    labels = torch.tensor([[3, 4, 5, 6], [7, 8, -100, -100]])
    # Even an optimiser over every parameter (from_pretrained marks them all trainable) leaves the student alone.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        loss = model(values, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in model.armhubert.parameters())
    for key, value in model.armhubert.state_dict().items():
        assert torch.equal(value, student_before[key]), key
    assert not torch.equal(model.lm_head.weight, head_before)
    # Train mode without head dropout is deterministic: the student adds no dropout or masking.
    with torch.no_grad():
        torch.testing.assert_close(model(values, attention_mask=mask).logits, model(values, attention_mask=mask).logits,
                                   rtol=0, atol=0)


def test_superb_padded_batch_equals_each_item_alone_and_auto_map(tmp_path):
    torch.manual_seed(0)
    model = ArmHubertForSuperbCTC(superb_config()).eval()
    waveforms = bundled_waveforms(count=3)
    values, mask = pad_batch(waveforms)
    with torch.no_grad():
        batch = model(values, attention_mask=mask).logits
        for i, waveform in enumerate(waveforms):
            alone = model(waveform[None]).logits[0]
            torch.testing.assert_close(batch[i, : alone.shape[0]], alone, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCTC"] == "modeling_armhubert.ArmHubertForSuperbCTC"
    assert auto_map["AutoModel"] == "modeling_armhubert.ArmHubertModel"
    assert isinstance(AutoModelForCTC.from_pretrained(tmp_path), ArmHubertForSuperbCTC)  # in-process classes


# ----------------------------------------------------------------------------------------------
# run_asr_ctc.py
# ----------------------------------------------------------------------------------------------


def test_linear_fine_tuning_lowers_the_ctc_loss(linear_run, student_dir):
    losses = logged_losses(linear_run)
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    config = json.loads((linear_run / "config.json").read_text())
    vocab = json.loads((linear_run / "vocab.json").read_text())
    assert config["architectures"] == ["ArmHubertForCTC"] and config["vocab_size"] == len(vocab)
    assert (config["pad_token_id"], config["layer_grad_scale"], config["projection_dim"]) == (0, False, 0)
    assert config["mask_time_prob"] == 0.05 and config["ctc_loss_reduction"] == "mean"
    # The conv feature encoder was frozen, the Transformer layers were trained.
    student = load_file(student_dir / "model.safetensors")
    tuned = load_file(linear_run / "model.safetensors")
    assert all(torch.equal(tuned[f"armhubert.{k}"], v) for k, v in student.items() if k.startswith("feature_extractor"))
    assert not torch.equal(tuned["armhubert.encoder.layers.0.attention.q_proj.weight"],
                           student["encoder.layers.0.attention.q_proj.weight"])
    for name in ("vocab.json", "tokenizer_config.json", "processor_config.json", "asr_pipeline.py",
                 "modeling_armhubert.py", "configuration_armhubert.py"):
        assert (linear_run / name).is_file(), name
    card = (linear_run / "README.md").read_text()
    assert "pipeline_tag: automatic-speech-recognition" in card and "| dev-clean |" in card
    assert "the whole student fine-tuned (conv encoder frozen)" in card
    # The card says so only when it was: --freeze_feature_encoder false trains the conv encoder too.
    from armhubert_training.model_card import _conv_encoder_frozen
    from conftest import tiny_config
    from modeling_armhubert import ArmHubertForCTC

    model = ArmHubertForCTC(tiny_config(projection_dim=0, vocab_size=8))
    assert not _conv_encoder_frozen(model)
    model.freeze_feature_encoder()
    assert _conv_encoder_frozen(model)


def test_superb_run_keeps_the_student_weights(superb_run, student_dir):
    student = load_file(student_dir / "model.safetensors")
    tuned = load_file(superb_run / "model.safetensors")
    assert {k for k in tuned if k.startswith("armhubert.")} == {f"armhubert.{k}" for k in student}
    for key, value in student.items():
        assert torch.equal(tuned[f"armhubert.{key}"], value), key
    assert tuned["featurizer.layer_weights"].abs().min() > 0  # trained from zeros
    config = json.loads((superb_run / "config.json").read_text())
    assert config["architectures"] == ["ArmHubertForSuperbCTC"] and config["superb_features"] == "projected"


def test_superb_run_with_spec_augment_lowers_the_loss_and_keeps_the_lowest_dev_wer(superb_run):
    run = superb_run
    config = json.loads((run / "config.json").read_text())
    assert config["superb_spec_augment"] is True and config["superb_freq_mask_width_limit"] == 4
    losses = logged_losses(run)
    assert len(losses) == 16 and np.mean(losses[-4:]) < 0.75 * np.mean(losses[:4]), losses  # measured: 0.61
    # Selection as SUPERB's: the checkpoint of the lowest dev WER (the first one, on a tie).
    state = json.loads((run / "trainer_state.json").read_text())
    evaluations = [(entry["step"], entry["eval_wer"]) for entry in state["log_history"] if "eval_wer" in entry]
    assert [step for step, _ in evaluations][:2] == [8, 16]
    best_step, best_wer = min(evaluations, key=lambda row: row[1])
    assert state["best_metric"] == best_wer and state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")


@pytest.mark.parametrize("run_name", ["linear_run", "superb_run", "predict_only_run"])
@pytest.mark.parametrize("name, split, count", [("eval", "dev-clean", 3), ("predict_test-clean", "test-clean", 4)])
def test_summaries_match_a_direct_computation_on_the_written_hypotheses(request, run_name, name, split, count):
    run = request.getfixturevalue(run_name)
    rows = read_predictions(run / f"{name}_predictions.tsv")
    summary = json.loads((run / f"{name}_results.json").read_text())
    expected = transcripts(split)
    assert len(rows) == count == summary[f"{name}_utterances"]
    assert len({row["id"] for row in rows}) == count
    for row in rows:
        assert row["reference"] == expected[row["id"]]
    references, hypotheses = [row["reference"] for row in rows], [row["hypothesis"] for row in rows]
    assert summary[f"{name}_wer"] == pytest.approx(jiwer.process_words(references, hypotheses).wer, abs=1e-12)
    assert summary[f"{name}_cer"] == pytest.approx(jiwer.process_characters(references, hypotheses).cer, abs=1e-12)
    seconds = sum(soundfile.info(audio_path(row["id"], split)).duration for row in rows)
    assert summary[f"{name}_audio_seconds"] == pytest.approx(seconds)
    assert summary[f"{name}_rtf"] == pytest.approx(summary[f"{name}_decode_seconds"] / seconds)
    assert 0 < summary[f"{name}_rtf"] < 10 and summary[f"{name}_loss"] > 0
    model_dir = run.parent / "untrained" if run_name == "predict_only_run" else run
    vocab = json.loads((model_dir / "vocab.json").read_text())
    assert summary[f"{name}_unknown_characters"] == sum(char not in vocab for text in references
                                                         for char in text.replace(" ", ""))


PIPELINE_SCRIPT = r"""
import json, sys
import soundfile
from transformers import pipeline
model_dirs, files, result_file = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
results = {}
for model_dir in model_dirs:
    asr = pipeline("automatic-speech-recognition", model=model_dir, trust_remote_code=True)
    results[model_dir] = {"class": type(asr).__module__ + "." + type(asr).__name__, "model": type(asr.model).__name__,
                          "file": [asr(path)["text"] for path in files],
                          "array": [asr(soundfile.read(path, dtype="float32")[0])["text"] for path in files]}
assert "modeling_armhubert" not in sys.modules and "asr_pipeline" not in sys.modules, "nothing of the repo's"
json.dump(results, open(result_file, "w"))
"""


def test_pipeline_transcribes_files_and_arrays_like_do_predict(linear_run, superb_run, predict_only_run, tmp_path):
    runs = {linear_run: (linear_run, "ArmHubertForCTC"), superb_run: (superb_run, "ArmHubertForSuperbCTC"),
            predict_only_run.parent / "untrained": (predict_only_run, "ArmHubertForCTC")}
    rows = read_predictions(linear_run / "predict_test-clean_predictions.tsv")
    files = [str(audio_path(row["id"])) for row in rows]
    # A new process outside the repo, as a user would: the model directory brings all the code.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, ",".join(map(str, runs)), ",".join(files),
                    str(tmp_path / "out.json")], cwd=tmp_path, env=env, check=True, timeout=300)
    results = json.loads((tmp_path / "out.json").read_text())
    for model_dir, (predictions_dir, model_class) in runs.items():
        result = results[str(model_dir)]
        assert result["class"].startswith("transformers_modules.")
        assert result["class"].endswith("asr_pipeline.ArmHubertSpeechRecognitionPipeline")
        assert result["model"] == model_class
        predicted = {row["id"]: row["hypothesis"]
                     for row in read_predictions(predictions_dir / "predict_test-clean_predictions.tsv")}
        expected = [predicted[row["id"]] for row in rows]
        assert result["file"] == expected and result["array"] == expected, model_dir.name
    untrained = results[str(predict_only_run.parent / "untrained")]["file"]
    assert min(len(text.split()) for text in untrained) >= 3, untrained  # the comparison above is not trivial


def test_authors_checkpoint_is_converted_and_keeps_its_heads_for_superb(tmp_path):
    checkpoint = REPO / "tests" / "fixtures" / "original" / "tiny-armhubert.ckpt"
    args = AsrModelArguments(model_name_or_path=str(checkpoint), head="superb")
    source, config = resolve_source(args, str(tmp_path))
    assert Path(source) == tmp_path / "converted-student" and (Path(source) / "model.safetensors").is_file()
    tokenizer = create_tokenizer(build_vocabulary(["A B"]), tmp_path / "tok")
    superb = run_asr_ctc.head_config(args, config, "superb", tokenizer)
    assert superb.superb_features == "projected" and superb.projection_dim == config.projection_dim > 0
    linear = run_asr_ctc.head_config(args, config, "linear", tokenizer)
    assert (linear.projection_dim, linear.layer_grad_scale, linear.vocab_size) == (0, False, len(tokenizer))


@pytest.mark.parametrize("recipe, schedule, warmup", [("asr-librispeech.yaml", "constant", 0),
                                                      ("asr-librispeech-paper.yaml", "linear", 1400)])
def test_superb_librispeech_recipes_are_superbs_asr_setting(recipe, schedule, warmup):
    model, data, training = run_asr_ctc.parse_args([
        str(REPO / "configs" / "superb" / recipe), "--model_name_or_path", "armhubert-hf",
        "--librispeech_root", "/data", "--report_to", "none"])
    assert (model.head, model.superb_features, model.superb_projection_dim, model.superb_lstm_hidden_size,
            model.superb_lstm_layers, model.superb_lstm_dropout) == ("superb", "auto", 1024, 1024, 2, 0.2)
    assert model.superb_spec_augment is True
    assert (model.ctc_loss_reduction, model.ctc_zero_infinity) == ("mean", True)
    assert (data.train_splits, data.eval_splits, data.predict_splits) == (["train-clean-100"], ["dev-clean"],
                                                                          ["test-clean"])
    assert data.max_duration_seconds is None and not data.crop_to_max_duration and data.chars_to_ignore == ""
    assert (training.learning_rate, training.weight_decay, training.warmup_steps, training.max_grad_norm) == (
        1e-4, 0.0, warmup, 1.0)
    assert (training.adam_beta1, training.adam_beta2, training.adam_epsilon) == (0.9, 0.999, 1e-8)
    assert getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type) == schedule
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 16
    assert training.max_steps == 200_000 and training.eval_steps == training.save_steps == 2000
    assert getattr(training.eval_strategy, "value", training.eval_strategy) == "steps"
    assert training.load_best_model_at_end and training.metric_for_best_model.endswith("wer")
    assert training.greater_is_better is False
    assert (training.do_train, training.do_eval, training.do_predict) == (True, True, True)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, error, message", [
    (["--do_predict", "--predict_splits", "test-other"], FileNotFoundError, r"'test-other' not found.*test-clean"),
    (["--do_train", "--do_eval", "--eval_splits", "dev-other"], FileNotFoundError, r"'dev-other' not found.*dev-clean"),
    (["--do_train", "--text_column", ""], ValueError, "need transcripts"),
    (["--do_predict", "--max_predict_samples", "1"], ValueError, "student without a CTC head"),
])
def test_clear_errors_on_the_librispeech_folder(student_dir, tmp_path, extra, error, message):
    with pytest.raises(error, match=message):
        run_asr_ctc.main(["--model_name_or_path", str(student_dir), "--librispeech_root", str(CORPUS),
                          "--output_dir", str(tmp_path), "--report_to", "none", *extra])


@pytest.mark.parametrize("old", [
    ["--crop_to_max_duration", "false"],  # CTC never crops: a crop would no longer match its transcript
    ["--student_overrides", "{}"],  # the distillation script's former name of --config_overrides
    ["--student_preset", "armhubert"],  # the former name of --random_student_preset: distillation's option now
])
def test_options_that_are_gone_are_refused(old):
    with pytest.raises(ValueError, match=r"not used by the HfArgumentParser: \[" + repr(old[0])):
        run_asr_ctc.parse_args(["--random_student_preset", "armhubert", "--librispeech_root", str(CORPUS),
                                "--report_to", "none", *old])
    _, data, _ = run_asr_ctc.parse_args(["--random_student_preset", "armhubert", "--librispeech_root", str(CORPUS),
                                         "--max_duration_seconds", "3", "--report_to", "none"])
    assert data.crop_to_max_duration is False


@pytest.mark.parametrize("extra, message", [
    (["--text_column", "transcript"], r"no text column 'transcript'.*'sentence'.*--text_column"),
    (["--text_column", "sentence", "--do_predict", "--predict_splits", "test"], r"no split 'test'.*'validation'"),
])
def test_clear_errors_on_a_datasets_dataset(student_dir, hub_folder, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_asr_ctc.main(["--model_name_or_path", str(student_dir), "--dataset_name", str(hub_folder[0]),
                          "--output_dir", str(tmp_path), "--report_to", "none", "--do_train", *extra])


def test_a_datasets_dataset_trains_and_is_scored(student_dir, hub_folder, tmp_path):
    folder, originals = hub_folder
    metrics = run_asr_ctc.main([
        "--model_name_or_path", str(student_dir), "--dataset_name", str(folder), "--text_column", "sentence",
        "--output_dir", str(tmp_path), "--report_to", "none", "--do_train", "--max_steps", "2",
        "--max_train_samples", "4", "--do_predict", "--predict_splits", "validation[:2]",
        "--per_device_train_batch_size", "2", "--dataloader_pin_memory", "false"])
    rows = read_predictions(tmp_path / "predict_validation_2_predictions.tsv")
    assert [row["reference"] for row in rows] == [originals[row["id"]]["text"] for row in rows] and len(rows) == 2
    assert metrics["predict_validation_2_utterances"] == 2 and "predict_validation_2_wer" in metrics


def damaged_corpus(tmp_path) -> dict[str, list[Path]]:
    """The bundled splits copied to tmp_path/LibriSpeech; dev-clean and test-clean each get a FLAC cut
    short (its header intact) and a float WAV holding NaN, test-clean also a file that is not audio.
    -> {split: the damaged files}."""
    damaged = {}
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        target = tmp_path / "LibriSpeech" / split
        shutil.copytree(LIBRISPEECH / split, target)
        if split == "train-clean-100":
            continue
        flacs = sorted(target.glob("*/*/*.flac"))
        flacs[0].write_bytes(flacs[0].read_bytes()[: flacs[0].stat().st_size // 3])
        samples = np.full(16_000, 0.1, np.float32)
        samples[5_000] = np.nan
        soundfile.write(flacs[1], samples, 16_000, format="WAV", subtype="FLOAT")
        damaged[split] = flacs[:2]
        if split == "test-clean":
            flacs[2].write_bytes(b"not audio" * 100)
            damaged[split].append(flacs[2])
    return damaged


def test_corrupt_eval_and_test_files_are_skipped_and_counted(student_dir, tmp_path):
    damaged = damaged_corpus(tmp_path)
    output = tmp_path / "out"
    metrics = run_asr_ctc.main([
        str(LINEAR_DEMO), "--model_name_or_path", str(student_dir), "--output_dir", str(output),
        "--librispeech_root", str(tmp_path), "--max_duration_seconds", "3", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--logging_steps", "1",
        "--dataloader_pin_memory", "false"])
    for name, split, expected in [("eval", "dev-clean", dict(undecodable=2, unreadable=0)),
                                  ("predict_test-clean", "test-clean", dict(undecodable=2, unreadable=1))]:
        counts = {reason: metrics[f"{name}_skipped_files_{reason}"] for reason in expected}
        assert counts == expected, name
        assert metrics[f"{name}_skipped_files"] == sum(expected.values())
        assert metrics[f"{name}_skipped_files_too_short"] == metrics[f"{name}_skipped_files_transcript_unreadable"] == 0
        rows = read_predictions(output / f"{name}_predictions.tsv")
        scored = {row["id"] for row in rows}
        assert scored == set(transcripts(split)) - {path.stem for path in damaged[split]}
        assert metrics[f"{name}_utterances"] == len(rows) == 10 - len(damaged[split])
        assert json.loads((output / f"{name}_results.json").read_text())[f"{name}_skipped_files"] == len(damaged[split])
    assert metrics["train_skipped_files"] == 0 and (output / "model.safetensors").is_file()


@pytest.mark.parametrize("empty, message", [
    ("train-clean-100", r"No usable utterance in the training data.*'train-clean-100'.*--train_splits.*holds no "
                        r"utterances"),
    ("test-clean", r"No usable utterance in the prediction data.*'test-clean'.*10 missing, empty or not audio"),
])
def test_empty_split_is_refused_at_start_up(student_dir, tmp_path, empty, message):
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        target = tmp_path / "LibriSpeech" / split
        if split == empty and split.startswith("train"):
            target.mkdir(parents=True)  # the folder is there, its utterances are not
            continue
        shutil.copytree(LIBRISPEECH / split, target)
        if split == empty:
            for flac in target.glob("*/*/*.flac"):
                flac.write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        run_asr_ctc.main([str(LINEAR_DEMO), "--model_name_or_path", str(student_dir), "--output_dir",
                          str(tmp_path / "out"), "--librispeech_root", str(tmp_path), "--max_steps", "2"])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_fine_tuned_model_refuses_the_other_head(linear_run, tmp_path):
    with pytest.raises(ValueError, match="'linear' head, but --head superb"):
        run_asr_ctc.main(["--model_name_or_path", str(linear_run), "--head", "superb", "--librispeech_root",
                          str(CORPUS), "--output_dir", str(tmp_path), "--do_predict", "--max_predict_samples", "1",
                          "--report_to", "none"])


def test_pipeline_file_decoding_names_empty_and_undecodable_files_and_resamples_arrays(tmp_path, monkeypatch):
    """What the pipelines' decoding does before Transformers' own: a clear error for an empty file, and for
    one libsndfile cannot read when ffmpeg (the pipeline's fallback) is missing; arrays at another rate
    resampled with librosa, as files are (the pipeline's own resampling needs torchaudio)."""
    import librosa

    from armhubert_training import asr_pipeline

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.wav is empty"):
        asr_pipeline.decode_audio_file(str(empty), 16000)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio" * 100)
    monkeypatch.setattr(asr_pipeline.shutil, "which", lambda program: None)
    with pytest.raises(ValueError, match=r"garbage\.wav could not be decoded.*ffmpeg.*not installed"):
        asr_pipeline.decode_audio_file(str(garbage), 16000)
    monkeypatch.setattr(asr_pipeline.shutil, "which", lambda program: f"/usr/bin/{program}")
    assert asr_pipeline.decode_audio_file(str(garbage), 16000) is None  # ffmpeg's turn

    waveform = np.sin(np.arange(8000, dtype=np.float32) / 7)
    resampled = asr_pipeline.decode_audio_file({"raw": waveform, "sampling_rate": 8000}, 16000)
    assert resampled["sampling_rate"] == 16000
    np.testing.assert_allclose(resampled["raw"], librosa.resample(waveform, orig_sr=8000, target_sr=16000), atol=1e-6)
    assert asr_pipeline.decode_audio_file({"array": waveform, "sampling_rate": 16000}, 16000) is None
