"""Phoneme recognition and slot filling: lexicons, slot-tag targets, SUPERB's slot metrics, the head
without BiLSTM, <eos> targets, and run_asr_ctc.py on a tiny lexicon and a tiny Audio SNIPS folder."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import evaluate
import numpy as np
import pytest
import soundfile
import torch
from rapidfuzz.distance import Levenshtein
from transformers import pipeline

from conftest import LIBRISPEECH, REPO, logged_losses, tiny_config, transcripts
import run_asr_ctc
from armhubert_training.asr_pipeline import eos_as_blank
from armhubert_training.asr_trainer import read_predictions
from armhubert_training.asr_vocabulary import (
    PHONES,
    CharacterTargets,
    CtcCollator,
    PhonemeTargets,
    SlotTargets,
    TargetError,
    build_vocabulary,
    create_tokenizer,
    read_lexicon,
)
from armhubert_training.corpora.snips import SNIPS_SPEAKERS
from modeling_armhubert import ArmHubertForSuperbCTC

SLOT_METRIC = REPO / "metrics" / "slot_filling"
QUICK = ["--max_duration_seconds", "3", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
         "--max_eval_samples", "3", "--max_predict_samples", "4", "--logging_steps", "1", "--save_strategy", "no",
         "--eval_strategy", "no", "--dataloader_num_workers", "0", "--dataloader_pin_memory", "false",
         "--report_to", "none", "--superb_features", "auto", "--seed", "0"]


@contextlib.contextmanager
def one_torch_thread():
    """Models this small spend their time synchronising threads, badly so on a busy CPU (a tiny BiLSTM
    step: seconds with two threads, a fraction of a second with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def slot_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    return evaluate.load(str(SLOT_METRIC), keep_in_memory=True).compute(predictions=predictions, references=references)


# ----------------------------------------------------------------------------------------------
# SUPERB's slot metrics
# ----------------------------------------------------------------------------------------------


def test_slot_metrics_on_superbs_worked_example():
    references = ["PLAY B-artist FRANK SINATRA E-artist ON B-service SPOTIFY E-service",
                  "ADD B-music_item SONG E-music_item TO B-playlist ROAD TRIP E-playlist",
                  "WHAT IS THE WEATHER"]
    hypotheses = ["PLAY B-artist FRANK SINATRO E-artist ON SPOTIFY",
                  "ADD B-music_item SONG E-music_item TO B-playlist ROAD TRAP E-playlist B-playlist ROAD E-playlist "
                  "B-artist X E-artist",
                  "WHAT IS THE WEATHER"]
    result = slot_metrics(hypotheses, references)
    assert result["slot_type_f1"] == pytest.approx((2 / 3 + 0.8 + 1) / 3) and round(result["slot_type_f1"], 3) == 0.822
    assert result["slot_value_cer"] == pytest.approx(9 / 33)


@pytest.mark.parametrize("hypothesis, reference, f1, edits, length", [
    # correct slot
    ("PLAY B-artist ABBA E-artist", "PLAY B-artist ABBA E-artist", 1.0, 0, 4),
    # right type, wrong value: one substitution
    ("TO B-city PERIS E-city", "TO B-city PARIS E-city", 1.0, 1, 5),
    # missing slot: P = 1, R = 1/2; the missing value is paired with "" (5 deletions)
    ("B-city PARIS E-city NOW", "B-city PARIS E-city B-date TODAY E-date", 2 / 3, 5, 10),
    # extra slot: P = 1/2, R = 1; the extra value costs nothing
    ("B-city PARIS E-city B-date NOW E-date", "B-city PARIS E-city NOW", 2 / 3, 0, 5),
    # tags where the reference has none, and none where it has one: F1 0
    ("B-city ROME E-city", "GO HOME", 0.0, 0, 0),
    ("GO HOME", "GO B-city ROME E-city", 0.0, 4, 4),
    # several values of one type: each reference value takes its closest hypothesis value
    ("B-city ROME E-city AND B-city PARMA E-city", "B-city PARIS E-city AND B-city ROMA E-city", 1.0, 2 + 1, 9),
])
def test_slot_metrics_on_hand_computed_cases(hypothesis, reference, f1, edits, length):
    result = slot_metrics([hypothesis], [reference])
    assert result["slot_type_f1"] == pytest.approx(f1)
    if length:
        assert result["slot_value_cer"] == pytest.approx(edits / length)
    else:
        assert np.isnan(result["slot_value_cer"])


def test_slot_value_cer_is_corpus_level_and_f1_a_mean_over_utterances():
    hypotheses = ["PLAY B-artist ABBA E-artist", "TO B-city PERIS E-city", "B-city PARIS E-city NOW",
                  "B-city PARIS E-city B-date NOW E-date"]
    references = ["PLAY B-artist ABBA E-artist", "TO B-city PARIS E-city", "B-city PARIS E-city B-date TODAY E-date",
                  "B-city PARIS E-city NOW"]
    result = slot_metrics(hypotheses, references)
    assert result["slot_type_f1"] == pytest.approx((1 + 1 + 2 / 3 + 2 / 3) / 4)
    assert result["slot_value_cer"] == pytest.approx((0 + 1 + 5 + 0) / (4 + 5 + 10 + 5))


# ----------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------


def test_slot_targets_follow_superbs_encoding(tmp_path):
    encoder = SlotTargets(["artist", "playlist", "service"])
    line = ("BOS ADD ABBA & CO , TO MY ROCK LIST EOS\t"
            "O O artist artist artist O O playlist playlist playlist AddToPlaylist")
    target = encoder.encode(line)
    assert target.reference == "ADD B-artist ABBA AND CO E-artist TO B-playlist MY ROCK LIST E-playlist"
    expected = [*"ADD", "|", "B-artist ", *"ABBA", "|", *"AND", "|", *"CO", " E-artist", "|", *"TO", "|",
                "B-playlist ", *"MY", "|", *"ROCK", "|", *"LIST", " E-playlist"]
    assert target.tokens == expected
    # Two runs of different slots next to each other, and a slot at the start.
    target = encoder.encode("BOS ABBA SPOTIFY EOS\tO artist service PlayMusic")
    assert target.tokens == ["B-artist ", *"ABBA", " E-artist", "|", "B-service ", *"SPOTIFY", " E-service"]
    with pytest.raises(TargetError, match="city"):
        encoder.encode("BOS PARIS EOS\tO city GetWeather")
    with pytest.raises(TargetError, match="one label per word"):
        encoder.encode("BOS PARIS NOW EOS\tO O GetWeather")
    vocab = build_vocabulary([line], encoder, append_eos=True)
    assert list(vocab)[:4] == ["<pad>", "<unk>", "<eos>", "|"]
    assert list(vocab)[-6:] == ["B-artist ", " E-artist", "B-playlist ", " E-playlist", "B-service ", " E-service"]
    # <eos> right after the last word (no closing "|", unlike speech recognition), as SUPERB's slot targets.
    tokenizer = create_tokenizer(vocab, tmp_path)
    item = {"input_values": np.zeros(800, np.float32), "text": "BOS ABBA SPOTIFY EOS\tO artist service PlayMusic"}
    labels = CtcCollator(tokenizer, encoder=encoder)([item])["labels"][0].tolist()
    assert labels[-2:] == [vocab[" E-service"], vocab["<eos>"]]


def test_lexicon_first_pronunciation_wins_across_files(tmp_path):
    (tmp_path / "a.txt").write_text("HELLO HH AH0 L OW1\nHELLO HH EH0 L OW1\n\nWORLD W ER1 L D\n")
    (tmp_path / "b.txt").write_text("WORLD W AO1 R L D\nCAT\tK AE1 T\n")
    lexicon = read_lexicon([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert lexicon == {"HELLO": ["HH", "AH0", "L", "OW1"], "WORLD": ["W", "ER1", "L", "D"], "CAT": ["K", "AE1", "T"]}
    (tmp_path / "bad.txt").write_text("DOG D AO G\n")  # AO without its stress digit
    with pytest.raises(ValueError, match=r"bad.txt:1: .*\['AO'\]"):
        read_lexicon([tmp_path / "bad.txt"])
    assert len(PHONES) == 71 and len(set(PHONES)) == 71 and PHONES[:3] == ("SIL", "SPN", "AA0")

    encoder = PhonemeTargets(lexicon)
    assert encoder.encode("hello  cat") == ("HH AH0 L OW1 K AE1 T", ["HH", "AH0", "L", "OW1", "K", "AE1", "T"])
    assert encoder.has_targets("HELLO WORLD") and not encoder.has_targets("HELLO DOG DOG MOUSE")
    assert encoder.missing_words == Counter({"DOG": 2, "MOUSE": 1})
    with pytest.raises(TargetError, match="DOG"):
        encoder.encode("DOG")


def test_lexicon_not_utf8_stops_naming_its_file_and_line(tmp_path):
    lexicon = tmp_path / "latin1.txt"
    words = "CAT K AE1 T\nCAFE K AE0 F EY1\nCAF\u00c9 K AE0 F EY1\nNA\u00cfVE N AY0 IY1 V\n"
    lexicon.write_bytes(words.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{lexicon}:3: not UTF-8 text .*0xc9.*UTF-8") as error:
        read_lexicon([tmp_path / "latin1.txt"])
    assert not isinstance(error.value, UnicodeDecodeError)  # a message for the user, not the codec's
    # The same words saved as UTF-8 are read.
    lexicon.write_text("CAF\u00c9 K AE0 F EY1\nNA\u00cfVE N AY0 IY1 V\n", encoding="utf-8")
    assert read_lexicon([lexicon]) == {"CAF\u00c9": ["K", "AE0", "F", "EY1"], "NA\u00cfVE": ["N", "AY0", "IY1", "V"]}


def test_eos_ends_every_label_and_decodes_like_the_blank(tmp_path):
    vocab = build_vocabulary(["THE CAT"], append_eos=True)
    tokenizer = create_tokenizer(vocab, tmp_path)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, vocab["<eos>"])
    items = [{"input_values": np.zeros(800, np.float32), "text": "the cat", "id": "a"},
             {"input_values": np.zeros(800, np.float32), "text": "cat", "id": "b"}]
    labels = CtcCollator(tokenizer, encoder=CharacterTargets())(items)["labels"].tolist()
    eos, bar = vocab["<eos>"], vocab["|"]
    # As s3prl's speech recognition targets: "T H E | C A T |" then the end of sentence.
    assert labels == [[*(vocab[c] for c in "THE"), bar, *(vocab[c] for c in "CAT"), bar, eos],
                      [*(vocab[c] for c in "CAT"), bar, eos, -100, -100, -100, -100]]
    assert tokenizer.decode(labels[1][:4]) == "CAT"  # the closing "|" decodes to no trailing space
    # Frame-wise best tokens: "C A <eos> A T <eos>" reads "CAAT" (SUPERB: collapse repeats, drop blank and eos).
    frames = torch.tensor([vocab["C"], vocab["A"], eos, vocab["A"], vocab["T"], eos, eos])
    assert tokenizer.decode(eos_as_blank(frames, tokenizer).tolist()) == "CAAT"


def test_superb_head_without_bilstm_is_superbs_phoneme_head():
    config = tiny_config(vocab_size=74, superb_projection_dim=256, superb_lstm_layers=0, superb_features="projected")
    model = ArmHubertForSuperbCTC(config).eval()
    trained = {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
    layers = len(model.featurizer.layer_weights)
    assert trained == {"featurizer.layer_weights": (layers,), "projector.weight": (256, 48), "projector.bias": (256,),
                       "lm_head.weight": (74, 256), "lm_head.bias": (74,)}
    waveform = torch.randn(1, 8000)
    with torch.no_grad():
        logits = model(waveform).logits
        outputs = model.armhubert(waveform, output_hidden_states=True, return_dict=True)
        expected = model.lm_head(model.projector(model.featurizer(outputs)))
    torch.testing.assert_close(logits, expected)


# ----------------------------------------------------------------------------------------------
# Phoneme recognition on the bundled audio with a lexicon written here
# ----------------------------------------------------------------------------------------------


def pronunciation(word: str) -> list[str]:
    """A made-up but fixed pronunciation: one phone per letter (the first three), from SUPERB's inventory."""
    return [PHONES[2 + (ord(char) * 7) % 69] for char in word if char.isalpha()][:3] or ["SPN"]


def rare_word(split: str) -> tuple[str, int, int]:
    """(a word of `split` found in only one utterance of it and in no other split; its utterances, its count)."""
    elsewhere = {w for s in ("train-clean-100", "dev-clean", "test-clean") if s != split
                 for text in transcripts(s).values() for w in text.split()}
    counts = Counter(w for text in transcripts(split).values() for w in set(text.split()))
    word = min(w for w, n in counts.items() if n == 1 and w not in elsewhere)
    return word, 1, sum(text.split().count(word) for text in transcripts(split).values())


@pytest.fixture(scope="module")
def phoneme_run(student_dir, tmp_path_factory) -> tuple[Path, dict[str, list[str]], dict[str, tuple]]:
    folder = tmp_path_factory.mktemp("pr")
    words = {w for split in ("train-clean-100", "dev-clean", "test-clean") for text in transcripts(split).values()
             for w in text.split()}
    missing = {"train": rare_word("train-clean-100"), "eval": rare_word("dev-clean")}
    lexicon = {w: pronunciation(w) for w in sorted(words - {word for word, _, _ in missing.values()})}
    (folder / "lexicon.txt").write_text("".join(f"{w} {' '.join(p)}\n" for w, p in lexicon.items()))
    output = folder / "run"
    with one_torch_thread():
        run_asr_ctc.main([str(REPO / "configs" / "superb" / "pr-librispeech.yaml"), "--model_name_or_path",
                          str(student_dir), "--output_dir", str(output), "--librispeech_root", str(LIBRISPEECH.parent),
                          "--lexicon", str(folder / "lexicon.txt"), *QUICK, "--max_steps", "16",
                          "--gradient_accumulation_steps", "1", "--superb_projection_dim", "32",
                          "--load_best_model_at_end", "false"])
    return output, lexicon, missing


def test_phoneme_recognition_scores_per_and_counts_words_missing_from_the_lexicon(phoneme_run):
    run, lexicon, missing = phoneme_run
    config = json.loads((run / "config.json").read_text())
    vocab = json.loads((run / "vocab.json").read_text())
    assert sorted(vocab, key=vocab.get) == ["<pad>", "<unk>", "<eos>", *PHONES] and config["vocab_size"] == 74
    assert config["superb_lstm_layers"] == 0 and config["superb_projection_dim"] == 32

    train = json.loads((run / "train_results.json").read_text())
    word, utterances, occurrences = missing["train"]
    assert train["train_out_of_lexicon_words"] == occurrences and train["train_skipped_files_no_targets"] == utterances
    losses = logged_losses(run)  # 7 short utterances: one epoch = 2 batches
    assert len(losses) == 16 and np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses

    for name, split, count in [("eval", "dev-clean", 3), ("predict_test-clean", "test-clean", 4)]:
        summary = json.loads((run / f"{name}_results.json").read_text())
        rows = read_predictions(run / f"{name}_predictions.tsv")
        assert len(rows) == count == summary[f"{name}_utterances"]
        texts = transcripts(split)
        for row in rows:
            assert row["reference"] == " ".join(p for w in texts[row["id"]].split() for p in lexicon[w])
            assert set(row["hypothesis"].split()) <= set(PHONES)
        edits = sum(Levenshtein.distance(row["hypothesis"].split(), row["reference"].split()) for row in rows)
        assert summary[f"{name}_per"] == pytest.approx(edits / sum(len(row["reference"].split()) for row in rows))
        assert f"{name}_wer" not in summary
    evaluation = json.loads((run / "eval_results.json").read_text())
    word, utterances, occurrences = missing["eval"]
    assert evaluation["eval_out_of_lexicon_words"] == occurrences
    assert evaluation["eval_skipped_files_no_targets"] == utterances
    assert "| PER |" in (run / "README.md").read_text()
    with pytest.raises(ValueError, match="vocabulary of phonemes.*--targets phonemes --lexicon"):
        run_asr_ctc.main(["--model_name_or_path", str(run), "--librispeech_root", str(LIBRISPEECH.parent),
                          "--do_eval", "--output_dir", str(run.parent / "no-lexicon"), "--report_to", "none"])


def test_pipeline_of_a_phoneme_model_returns_the_phones(phoneme_run, tmp_path):
    run, _, _ = phoneme_run
    # A trained toy model says little but blanks: give the saved model an output layer that emits many
    # phones and <eos>, so that the comparison means something.
    model_dir = tmp_path / "model"
    shutil.copytree(run, model_dir)
    model = ArmHubertForSuperbCTC.from_pretrained(model_dir).eval()
    vocab = json.loads((model_dir / "vocab.json").read_text())
    path = sorted((LIBRISPEECH / "test-clean").rglob("*.flac"))[0]
    waveform = torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None]
    torch.manual_seed(0)
    with torch.no_grad():
        features = model.projector(model.featurizer(model.armhubert(waveform, output_hidden_states=True)))
        model.lm_head.weight.normal_(0.0, 30.0)  # centred on this utterance: its frames' small differences decide
        model.lm_head.bias.copy_(-model.lm_head.weight @ features[0].mean(0))
        best = model(waveform).logits.argmax(-1)[0].tolist()
    model.save_pretrained(model_dir)
    names = {index: token for token, index in vocab.items()}
    recognizer = pipeline("automatic-speech-recognition", model=str(model_dir), trust_remote_code=True)
    # SUPERB's decoding: collapse repeats, then drop the blank and <eos>.
    collapsed = [index for n, index in enumerate(best) if n == 0 or index != best[n - 1]]
    expected = " ".join(names[i] for i in collapsed if i not in (vocab["<pad>"], vocab["<eos>"]))
    assert vocab["<eos>"] in collapsed and len(expected.split()) >= 5
    assert recognizer(str(path))["text"] == expected


# ----------------------------------------------------------------------------------------------
# Slot filling on a tiny Audio SNIPS folder made of the bundled audio
# ----------------------------------------------------------------------------------------------


def snips_line(text: str) -> tuple[str, str]:
    """(all.iob.snips.txt line after the id, the reference SUPERB decodes): words 2-3 an artist, word 5 a city."""
    words = text.split()
    labels = ["O"] * len(words)
    labels[1:3] = ["artist"] * len(labels[1:3])
    if len(words) > 4:
        labels[4] = "city"
    line = f"BOS {' '.join(words)} EOS\tO {' '.join(labels)} PlayMusic"
    tagged = [f"B-artist {' '.join(words[1:3])} E-artist"] if len(words) > 1 else []
    reference = " ".join([words[0], *tagged, *words[3:4], *([f"B-city {words[4]} E-city"] if len(words) > 4 else []),
                          *words[5:]])
    return line, reference


@pytest.fixture(scope="module")
def snips_run(student_dir, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("snips")
    corpus = root / "SNIPS"
    lines, references = [], {}
    for split, source in (("train", "train-clean-100"), ("valid", "dev-clean"), ("test", "test-clean")):
        (corpus / split).mkdir(parents=True)
        voices = SNIPS_SPEAKERS[split]
        for n, (utterance_id, text) in enumerate(transcripts(source).items()):
            speaker, chapter, _ = utterance_id.split("-")
            audio, rate = soundfile.read(LIBRISPEECH / source / speaker / chapter / f"{utterance_id}.flac")
            snips_id = f"{voices[n % len(voices)]}-snips-{split}-{n}"
            soundfile.write(corpus / split / f"{snips_id}.wav", audio, rate)
            line, references[snips_id] = snips_line(text)
            lines.append(f"{snips_id} {line}")
    # A voice of another split and a file without a transcript line: neither is used for training.
    shutil.copy(corpus / "train" / "Ivy-snips-train-0.wav", corpus / "train" / "Brian-snips-train-0.wav")
    lines.append(f"Brian-snips-train-0 {snips_line('IGNORED WORDS')[0]}")
    shutil.copy(corpus / "train" / "Ivy-snips-train-0.wav", corpus / "train" / "Joey-snips-train-99.wav")
    (corpus / "all.iob.snips.txt").write_text("\n".join(lines) + "\n")
    (corpus / "slots.txt").write_text("O\nartist\ncity")
    output = root / "run"
    with one_torch_thread():
        run_asr_ctc.main([str(REPO / "configs" / "superb" / "sf.yaml"), "--model_name_or_path", str(student_dir),
                          "--output_dir", str(output), "--snips_root", str(root), *QUICK, "--max_steps", "10",
                          "--learning_rate", "5e-3", "--superb_projection_dim", "32", "--superb_lstm_hidden_size",
                          "24", "--load_best_model_at_end", "false"])
    return output, references


def test_slot_filling_on_a_tiny_snips_folder(snips_run):
    run, references = snips_run
    vocab = json.loads((run / "vocab.json").read_text())
    tokens = sorted(vocab, key=vocab.get)
    assert tokens[:4] == ["<pad>", "<unk>", "<eos>", "|"]
    assert tokens[-4:] == ["B-artist ", " E-artist", "B-city ", " E-city"]
    train = json.loads((run / "train_results.json").read_text())
    assert train["train_skipped_files_no_targets"] == 1  # Joey-snips-train-99 has no line; Brian is not a train voice
    losses = logged_losses(run)  # 7 short utterances: one epoch = 2 batches
    assert len(losses) == 10 and np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), losses

    for name, voices in [("eval", SNIPS_SPEAKERS["valid"]), ("predict_test", SNIPS_SPEAKERS["test"])]:
        summary = json.loads((run / f"{name}_results.json").read_text())
        rows = read_predictions(run / f"{name}_predictions.tsv")
        assert len(rows) == summary[f"{name}_utterances"] > 0
        for row in rows:
            assert row["id"].split("-")[0] in voices and row["reference"] == references[row["id"]]
        expected = slot_metrics([row["hypothesis"] for row in rows], [row["reference"] for row in rows])
        assert summary[f"{name}_slot_type_f1"] == pytest.approx(expected["slot_type_f1"])
        assert summary[f"{name}_slot_value_cer"] == pytest.approx(expected["slot_value_cer"])


def test_slot_lines_that_cannot_be_encoded_are_named_and_counted(tmp_path, caplog):
    corpus = tmp_path / "SNIPS"
    (corpus / "train").mkdir(parents=True)
    texts = list(transcripts("train-clean-100").items())[:6]
    lines = []
    for n, (utterance_id, text) in enumerate(texts):
        speaker, chapter, _ = utterance_id.split("-")
        shutil.copy(LIBRISPEECH / "train-clean-100" / speaker / chapter / f"{utterance_id}.flac",
                    corpus / "train" / f"Ivy-snips-train-{n}.wav")  # libsndfile reads by content, not name
        lines.append(f"Ivy-snips-train-{n} {snips_line(text)[0]}")
    # One label too few for the words of line 1; a slot outside slots.txt on line 4.
    sentence, labels = lines[1].split("\t")
    lines[1] = f"{sentence}\t{labels.replace('O artist', 'artist', 1)}"
    lines[4] = lines[4].replace("artist", "album")
    (corpus / "all.iob.snips.txt").write_text("\n".join(lines) + "\n")
    (corpus / "slots.txt").write_text("O\nartist\ncity\n")
    _, data, training = run_asr_ctc.parse_args([
        str(REPO / "configs" / "superb" / "sf.yaml"), "--model_name_or_path", "unused", "--snips_root", str(tmp_path),
        "--output_dir", str(tmp_path / "run"), "--do_eval", "false", "--eval_strategy", "no", "--do_predict", "false",
        "--load_best_model_at_end", "false"])
    with caplog.at_level(logging.WARNING, logger="armhubert_training"):
        train = run_asr_ctc.build_datasets(data, training, run_asr_ctc.make_encoder(data, "slots"))["train"]
    refused = ["Ivy-snips-train-1", "Ivy-snips-train-4"]
    assert train.skipped["no_targets"] == refused and len(train) == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    named = [message for message in warnings if all(utterance in message for utterance in refused)]
    assert len(named) == 1 and "2 of 6" in named[0] and "slots.txt" in named[0], warnings
    # A transcript file in another encoding stops the run at start-up, named, with what to do.
    (corpus / "all.iob.snips.txt").write_bytes("\n".join(lines).replace("Ivy-snips-train-0", "Ivy-snips-train-0 Ç")
                                              .encode("latin-1"))
    with pytest.raises(ValueError, match=r"all\.iob\.snips\.txt is not UTF-8 text.*re-save the file as UTF-8"):
        run_asr_ctc.build_datasets(data, training, run_asr_ctc.make_encoder(data, "slots"))


def test_pr_and_sf_recipes_parse_and_ask_for_their_data():
    pr, sf = str(REPO / "configs" / "superb" / "pr-librispeech.yaml"), str(REPO / "configs" / "superb" / "sf.yaml")
    common = ["--model_name_or_path", "armhubert-hf", "--report_to", "none"]
    model, data, training = run_asr_ctc.parse_args([pr, *common, "--librispeech_root", "/data", "--lexicon", "a", "b"])
    assert (data.targets, data.lexicon, data.append_eos, model.superb_lstm_layers) == ("phonemes", ["a", "b"], True, 0)
    assert training.metric_for_best_model.endswith("per") and training.greater_is_better is False
    model, data, training = run_asr_ctc.parse_args([sf, *common, "--snips_root", "/data"])
    assert (data.targets, data.train_splits, data.eval_splits, data.predict_splits) == (
        "slots", ["train"], ["valid"], ["test"])
    assert training.metric_for_best_model.endswith("slot_type_f1") and training.greater_is_better is True
    with pytest.raises(ValueError, match="needs --lexicon"):
        run_asr_ctc.parse_args([pr, *common, "--librispeech_root", "/data"])
    with pytest.raises(ValueError, match="needs --snips_root"):
        run_asr_ctc.parse_args([sf, *common, "--snips_root", "", "--librispeech_root", "/data"])
