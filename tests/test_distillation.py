"""run_distill.py end to end on the bundled audio with a tiny random teacher: the teacher's shared
pass, loss going down, a loadable student with a model card, skipped files, exact resuming and
two processes equal to one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
import yaml
from transformers import HubertConfig, HubertModel, TrainerCallback, WavLMConfig, WavLMModel

from conftest import LIBRISPEECH, REPO, TINY_STUDENT_OVERRIDES, pad_batch, bundled_waveforms, run_in_fresh_process
from armhubert_training import speech_datasets
from armhubert_training.collators import AudioCollator
from armhubert_training.teacher import FrozenTeacher, default_layer_map, load_teacher, looks_like_local_path
from run_distill import build_trainer, main

NO_DROPOUT = json.dumps({**json.loads(TINY_STUDENT_OVERRIDES), "hidden_dropout": 0.0, "attention_dropout": 0.0,
                         "activation_dropout": 0.0, "feat_proj_dropout": 0.0})


def distill_argv(teacher_dir, output_dir, *extra: str, overrides: str = TINY_STUDENT_OVERRIDES) -> list[str]:
    return [str(REPO / "configs" / "demo" / "distill.yaml"), "--teacher", str(teacher_dir), "--output_dir", str(output_dir),
            "--librispeech_root", str(LIBRISPEECH.parent), "--config_overrides", overrides,
            "--learning_rate", "2e-3", "--logging_steps", "1", "--dataloader_pin_memory", "false", *extra]


@pytest.mark.parametrize("config_class, model_class", [(HubertConfig, HubertModel), (WavLMConfig, WavLMModel)])
def test_teacher_positional_conv_from_spectra_equals_the_models_own(config_class, model_class):
    """Base-sized positional conv (768 channels, 128 taps, 16 groups) on a padded batch: the teacher's
    layer outputs with the conv from spectra equal those of the untouched model to fp32 rounding."""
    import copy

    torch.manual_seed(0)
    config = config_class(num_hidden_layers=2, conv_dim=(64,) * 7, mask_time_prob=0.05)
    model = model_class(config)
    direct = FrozenTeacher(copy.deepcopy(model), layers=[1, 2], positional_conv_from_spectra=False)
    spectral = FrozenTeacher(model, layers=[1, 2])
    assert type(spectral.model.encoder.pos_conv_embed.conv).__name__ == "SpectralPositionalConv"
    FrozenTeacher(model, layers=[1, 2])  # wrapping the same model again keeps its conv from spectra
    assert type(model.encoder.pos_conv_embed.conv.conv).__name__ == "ParametrizedConv1d"
    values, attention_mask = pad_batch(bundled_waveforms(count=3))
    frames = int(spectral.num_frames(values.shape[1]))
    mask = torch.rand(3, frames, generator=torch.Generator().manual_seed(0)) < 0.5
    real = model._get_feature_vector_attention_mask(frames, attention_mask).bool()  # padded frames carry nothing
    for got, want in zip(sum(spectral(values, attention_mask, mask), []), sum(direct(values, attention_mask, mask), [])):
        torch.testing.assert_close(got[real], want[real], rtol=0, atol=1e-5 * want[real].abs().max().item())


@pytest.mark.parametrize("apply_spec_augment", [True, False])
@pytest.mark.parametrize("config_class, model_class", [(HubertConfig, HubertModel), (WavLMConfig, WavLMModel)])
def test_shared_teacher_features_equal_two_full_passes(config_class, model_class, apply_spec_augment):
    """Also for a teacher saved with apply_spec_augment off, with which Transformers ignores a given mask."""
    torch.manual_seed(0)
    config = config_class(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          mask_time_prob=0.05, apply_spec_augment=apply_spec_augment)
    teacher = FrozenTeacher(model_class(config), layers=[1, 3])
    values, attention_mask = pad_batch(bundled_waveforms(count=3))
    frames = int(teacher.num_frames(values.shape[1]))
    mask = torch.rand(3, frames, generator=torch.Generator().manual_seed(0)) < 0.5
    shared = teacher(values, attention_mask, mask)
    teacher.share_features = False
    separate = teacher(values, attention_mask, mask)
    # The reference: the model's own forward, hidden_states[layer].
    reference = teacher.model(values, attention_mask=attention_mask, mask_time_indices=mask, output_hidden_states=True)
    for got, want in zip(shared[0] + shared[1], separate[0] + separate[1]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(shared[1][1], reference.hidden_states[3], rtol=0, atol=1e-6)
    assert (shared[0][1] - shared[1][1]).abs().max() > 1e-3  # the mask changed the teacher's output


def test_default_layer_map():
    assert default_layer_map(12, 12) == list(range(1, 13))
    assert default_layer_map(4, 12) == [3, 6, 9, 12]
    with pytest.raises(ValueError, match="teacher_layer_map"):
        default_layer_map(12, 4)


@pytest.mark.parametrize("path", ["/no/such/teacher", "./no-such-teacher", "~/no-such-teacher", "a/b/c"])
def test_missing_teacher_path_is_named(path):
    with pytest.raises(FileNotFoundError, match=f"Teacher path '{path}' does not exist"):
        load_teacher(path)
    assert not looks_like_local_path("facebook/hubert-base-ls960") and not looks_like_local_path("hubert")


def test_short_distillation_learns_and_saves_a_loadable_student(tmp_path, offline_hf, tiny_teacher_dir):
    output_dir = tmp_path / "student"
    metrics = main(distill_argv(tiny_teacher_dir, output_dir, "--max_steps", "30", "--save_steps", "15",
                                "--eval_steps", "30"))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses
    terms = [entry for entry in state["log_history"] if "mask_rec" in entry]
    assert terms and all(t["loss"] == pytest.approx(0.1 * (t["mask_hint"] + t["unmask_hint"]) + t["mask_rec"]
                                                    + t["unmask_rec"], rel=1e-3) for t in terms)
    assert np.isfinite(metrics["eval_loss"]) and metrics["skipped_files"] == 0

    card = (output_dir / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == "transformers" and "recycle-and-distill" in metadata["tags"]
    assert f"| eval_loss | {metrics['eval_loss']:.4f} |" in card
    assert json.loads((output_dir / "preprocessor_config.json").read_text())["do_normalize"] is False

    # The saved student, loaded in a fresh process from its own code, gives the saving model's outputs.
    from modeling_armhubert import ArmHubertModel

    student = ArmHubertModel.from_pretrained(output_dir).eval()
    values, attention_mask = pad_batch(bundled_waveforms("dev-clean", count=2))
    with torch.no_grad():
        expected = student(values, attention_mask=attention_mask, output_hidden_states=True)
    got = run_in_fresh_process(output_dir, "model", values, attention_mask, tmp_path)
    assert torch.equal(got["first"], expected.last_hidden_state)


def test_unreadable_and_empty_audio_is_skipped_and_counted(tmp_path, offline_hf, tiny_teacher_dir, caplog):
    corpus = tmp_path / "LibriSpeech"
    shutil.copytree(LIBRISPEECH / "train-clean-100", corpus / "train-clean-100")
    shutil.copytree(LIBRISPEECH / "dev-clean", corpus / "dev-clean")
    chapter = next((corpus / "train-clean-100").glob("*/*"))
    speaker, chapter_id = chapter.parent.name, chapter.name
    transcript = chapter / f"{speaker}-{chapter_id}.trans.txt"
    # Garbage bytes and an empty file fail already when indexing; a truncated FLAC keeps a valid
    # header and fails only when the training step decodes it.
    (chapter / f"{speaker}-{chapter_id}-9001.flac").write_bytes(os.urandom(3000))
    (chapter / f"{speaker}-{chapter_id}-9002.flac").write_bytes(b"")
    good = sorted(chapter.glob("*.flac"))[0].read_bytes()
    (chapter / f"{speaker}-{chapter_id}-9003.flac").write_bytes(good[: len(good) // 3])
    with transcript.open("a") as f:
        f.write("".join(f"{speaker}-{chapter_id}-900{i} SOME WORDS\n" for i in (1, 2, 3)))

    caplog.set_level("WARNING")
    metrics = main(distill_argv(tiny_teacher_dir, tmp_path / "out", "--librispeech_root", str(tmp_path),
                                "--num_train_epochs", "1", "--max_steps", "-1", "--save_strategy", "no",
                                "--eval_strategy", "no", "--do_eval", "false"))
    # 9001 and 9002 are left out when indexing, the truncated 9003 when a training step decodes it.
    assert (metrics["skipped_files"], metrics["skipped_files_unreadable"], metrics["skipped_files_undecodable"]) == (
        3, 2, 1)
    assert metrics["skipped_files_too_short"] == metrics["skipped_files_transcript_unreadable"] == 0
    assert np.isfinite(metrics["train_loss"])
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert [e["skipped_files"] for e in state["log_history"] if "loss" in e][-1] == 3
    assert "| skipped_files | 3 |" in (tmp_path / "out" / "README.md").read_text()
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "Skipped 2" in messages and "9001" in messages and "9002" in messages


def copy_corpus(tmp_path, *splits: str):
    """The bundled splits copied to tmp_path/LibriSpeech; -> {split: its .flac files, sorted}."""
    for split in splits:
        shutil.copytree(LIBRISPEECH / split, tmp_path / "LibriSpeech" / split)
    return {split: sorted((tmp_path / "LibriSpeech" / split).glob("*/*/*.flac")) for split in splits}


def truncate(flac) -> None:
    """Cut a FLAC short; its header still announces the full length, so only decoding notices."""
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 3])


def write_nan_wav(flac) -> None:
    """A float WAV (under the .flac name) with a readable header and a NaN inside."""
    samples = np.full(16_000, 0.1, np.float32)
    samples[8_000] = np.nan
    soundfile.write(flac, samples, 16_000, format="WAV", subtype="FLOAT")


def test_corrupt_eval_files_are_skipped_counted_and_the_student_saved(tmp_path, offline_hf, tiny_teacher_dir,
                                                                      monkeypatch):
    files = copy_corpus(tmp_path, "train-clean-100", "dev-clean")["dev-clean"]
    truncate(files[0])
    write_nan_wav(files[1])
    files[2].write_bytes(b"not audio" * 100)  # left out when indexing
    soundfile.write(files[3], np.full(300, 0.1, np.float32), 16_000, format="FLAC")  # below the receptive field
    # Count the decodes of each dev file: evaluation must not decode anything just to learn lengths.
    decodes = {}
    load_audio = speech_datasets.load_audio

    def counting_load_audio(source, *args, **kwargs):
        decodes[os.path.basename(source)] = decodes.get(os.path.basename(source), 0) + 1
        return load_audio(source, *args, **kwargs)

    monkeypatch.setattr(speech_datasets, "load_audio", counting_load_audio)
    output_dir = tmp_path / "out"
    metrics = main(distill_argv(tiny_teacher_dir, output_dir, "--librispeech_root", str(tmp_path),
                                "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2"))
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "checkpoint-2").is_dir()
    assert np.isfinite(metrics["eval_loss"])
    expected = {"eval_skipped_files": 4, "eval_skipped_files_unreadable": 1, "eval_skipped_files_undecodable": 2,
                "eval_skipped_files_too_short": 1, "eval_skipped_files_transcript_unreadable": 0}
    assert {key: metrics[key] for key in expected} == expected
    assert metrics["skipped_files"] == 0  # evaluation's files are not training's
    # Two evaluations (at step 2 and at the end): every indexed dev file decoded exactly twice.
    assert {name: n for name, n in decodes.items() if name.startswith("107-")} == {
        f.name: 2 for f in files if f not in (files[2], files[3])}
    state = json.loads((output_dir / "trainer_state.json").read_text())  # saved before the final evaluation
    assert [e["eval_skipped_files"] for e in state["log_history"] if "eval_loss" in e] == [4]
    card = (output_dir / "README.md").read_text()
    assert "| eval_skipped_files | 4 |" in card and "| eval_skipped_files_undecodable | 2 |" in card


@pytest.mark.parametrize("extra, message", [
    (["--min_duration_seconds", "1000"], r"No usable utterance in the training data.*'train-clean-100'.*30 outside"),
    ([], r"No usable utterance in the evaluation data.*'dev-clean'.*10 missing, empty or not audio"),
])
def test_empty_split_stops_the_run_before_training(tmp_path, offline_hf, tiny_teacher_dir, extra, message):
    for flac in copy_corpus(tmp_path, "train-clean-100", "dev-clean")["dev-clean"]:
        flac.write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        main(distill_argv(tiny_teacher_dir, tmp_path / "out", "--librispeech_root", str(tmp_path), "--max_steps", "2",
                          "--save_steps", "1", *extra))
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def _losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_precision_reaches_the_accelerator(tmp_path, offline_hf, tiny_teacher_dir, monkeypatch):
    """--precision bf16 runs the steps in bf16 autocast on the CPU too: same losses to about 1e-2, not
    to every digit; 'auto' on a CPU is fp32; an explicit --bf16 is honoured, a contradiction refused."""
    common = ["--max_steps", "3", "--save_strategy", "no", "--eval_strategy", "no", "--do_eval", "false"]
    losses = {}
    for precision, mixed_precision in (("bf16", "bf16"), ("auto", "no")):  # a bf16 run must not leak into the next
        trainer = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / precision, *common, "--precision", precision))
        assert trainer.accelerator.mixed_precision == mixed_precision
        trainer.train()
        losses[mixed_precision] = _losses(trainer)
    want, got = losses["no"], losses["bf16"]
    assert len(got) == 3 and np.all(np.isfinite(got))
    assert got != want
    np.testing.assert_allclose(got, want, rtol=5e-2)

    # Transformers itself asks for --use_cpu with --bf16 on a machine without a GPU.
    cpu_bf16 = [*common, "--bf16", "true", "--use_cpu", "true"]
    explicit = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "explicit", *cpu_bf16))
    assert explicit.accelerator.mixed_precision == "bf16"
    with pytest.raises(ValueError, match="contradicts --bf16"):
        build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "both", *cpu_bf16, "--precision", "no"))
    # `accelerate launch --mixed_precision bf16` sets this variable: honoured under auto, like --bf16.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    launched = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "launched", *common, "--use_cpu", "true"))
    assert launched.accelerator.mixed_precision == "bf16"
    with pytest.raises(ValueError, match="contradicts accelerate's --mixed_precision bf16"):
        build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "launched", *common, "--precision", "no"))


class StopAtStep(TrainerCallback):
    """Simulate a crash right after the checkpoint of `step` was written."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _final_weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, offline_hf, tiny_teacher_dir):
    common = ["--max_steps", "8", "--save_steps", "4", "--eval_strategy", "no", "--do_eval", "false"]
    uninterrupted = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "a", *common))
    uninterrupted.train()

    crashed = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "b", *common))
    crashed.add_callback(StopAtStep(4))
    crashed.train()
    assert crashed.state.global_step == 4 and (tmp_path / "b" / "checkpoint-4").is_dir()
    resumed = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "b", *common,
                                         "--resume_from_checkpoint", "last"))
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-4"))
    assert resumed.state.global_step == 8

    expected, got = _final_weights(uninterrupted), _final_weights(resumed)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    assert [e["loss"] for e in resumed.state.log_history if "loss" in e][-4:] == pytest.approx(
        [e["loss"] for e in uninterrupted.state.log_history if "loss" in e][-4:], rel=1e-5)


def test_resume_last_skips_checkpoints_a_crash_left_incomplete(tmp_path, offline_hf, tiny_teacher_dir, caplog):
    """A save killed half-way leaves a newer checkpoint folder that cannot be resumed from: "last" takes
    the newest complete one and names the ones it skipped."""
    from armhubert_training.speech_trainer import resolve_resume_checkpoint

    # No checkpoint rotation: which folders it would delete depends on their modification times.
    common = ["--save_steps", "2", "--save_total_limit", "10", "--eval_strategy", "no", "--do_eval", "false"]
    output_dir = tmp_path / "run"
    main(distill_argv(tiny_teacher_dir, output_dir, *common, "--max_steps", "2"))
    complete = output_dir / "checkpoint-2"
    (output_dir / "checkpoint-4").mkdir()  # killed right after creating the folder
    for step, broken in ((5, "trainer_state.json"), (6, "model.safetensors"), (7, "optimizer.pt"),
                         (8, "scheduler.pt")):
        shutil.copytree(complete, output_dir / f"checkpoint-{step}")
        if step in (6, 8):  # killed while writing the file (or its data never reached the disk)
            cut = output_dir / f"checkpoint-{step}" / broken
            cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
        else:
            (output_dir / f"checkpoint-{step}" / broken).unlink()
    # Weights as an older Transformers saved them, cut short.
    older = output_dir / "checkpoint-9"
    shutil.copytree(complete, older)
    (older / "model.safetensors").unlink()
    torch.save({"weight": torch.zeros(1000)}, older / "pytorch_model.bin")
    (older / "pytorch_model.bin").write_bytes((older / "pytorch_model.bin").read_bytes()[:2000])

    caplog.set_level("INFO")
    assert resolve_resume_checkpoint("last", str(output_dir)) == str(complete)
    skipped = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Resuming from"))
    for step, reason in ((4, "no trainer_state.json"), (5, "no trainer_state.json"),
                         (6, "model.safetensors is incomplete or corrupt"), (7, "no optimizer state"),
                         (8, "scheduler.pt is incomplete"), (9, "pytorch_model.bin is incomplete")):
        assert f"checkpoint-{step}: {reason}" in skipped, skipped

    main(distill_argv(tiny_teacher_dir, output_dir, *common, "--max_steps", "3", "--resume_from_checkpoint", "last"))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]  # steps 1-2 from checkpoint-2

    assert resolve_resume_checkpoint("last", str(output_dir)) == str(output_dir / "checkpoint-3")
    for step in (2, 3):
        shutil.rmtree(output_dir / f"checkpoint-{step}")
    with pytest.raises(ValueError, match=r"no complete checkpoint in .*checkpoint-7: no optimizer state"):
        resolve_resume_checkpoint("last", str(output_dir))


def test_skipped_files_survive_a_resume(tmp_path, offline_hf, tiny_teacher_dir):
    """8 training utterances, one of them truncated (met once per epoch of 2 steps), and one garbage
    file left out when indexing. A run stopped at step 2 and resumed reports what an uninterrupted
    run reports."""
    files = copy_corpus(tmp_path, "train-clean-100")["train-clean-100"]
    truncate(files[1])
    files[-1].write_bytes(b"not audio" * 100)
    common = ["--librispeech_root", str(tmp_path), "--max_train_samples", "8", "--max_steps", "4", "--save_steps", "2",
              "--eval_strategy", "no", "--do_eval", "false"]
    uninterrupted = main(distill_argv(tiny_teacher_dir, tmp_path / "a", *common))
    assert (uninterrupted["skipped_files"], uninterrupted["skipped_files_undecodable"]) == (3, 2)

    crashed = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "b", *common))
    crashed.add_callback(StopAtStep(2))
    crashed.train()
    assert crashed.skipped_files_metrics()["skipped_files_undecodable"] == 1
    resumed = main(distill_argv(tiny_teacher_dir, tmp_path / "b", *common, "--resume_from_checkpoint",
                                str(tmp_path / "b" / "checkpoint-2")))
    assert {k: v for k, v in resumed.items() if k.startswith("skipped_files")} == {
        k: v for k, v in uninterrupted.items() if k.startswith("skipped_files")}
    logged = {run: [e["skipped_files"] for e in json.loads((tmp_path / run / "trainer_state.json").read_text())[
        "log_history"] if "loss" in e] for run in ("a", "b")}
    assert logged["b"] == logged["a"] and len(logged["a"]) == 4 and logged["a"][-1] == 3


def free_port() -> int:
    """A TCP port no one listens on now, so that two test runs on one machine do not share a rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path, offline_hf, tiny_teacher_dir):
    """2 processes x batch 1 vs 1 process x batch 1 x 2 accumulation steps: the same global batches.
    Dropout is off, since each process draws its own dropout masks. Two of the 10 utterances fail when
    decoded, so a process meets a batch without a readable file: it must still take its part in the
    gradient all-reduce, or the processes fall out of step."""
    script = REPO / "tests" / "scripts" / "distill_and_dump.py"
    files = copy_corpus(tmp_path, "train-clean-100")["train-clean-100"]
    truncate(files[1])
    truncate(files[6])
    common = ["--max_steps", "5", "--save_strategy", "no", "--eval_strategy", "no", "--do_eval", "false",
              "--per_device_train_batch_size", "1", "--librispeech_root", str(tmp_path), "--max_train_samples", "10"]
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                  str(free_port())]
    subprocess.run([*accelerate, str(script), str(two),
                    *distill_argv(tiny_teacher_dir, two / "out", *common, "--use_cpu", "true", overrides=NO_DROPOUT)],
                   check=True, timeout=600, cwd=REPO)
    subprocess.run([sys.executable, str(script), str(one),
                    *distill_argv(tiny_teacher_dir, one / "out", *common, "--gradient_accumulation_steps", "2",
                                  overrides=NO_DROPOUT)],
                   check=True, timeout=600, cwd=REPO)

    rank0, rank1 = torch.load(two / "weights-rank0.pt"), torch.load(two / "weights-rank1.pt")
    single = torch.load(one / "weights-rank0.pt")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-4, atol=1e-6)
    # Each failure emptied one process's batch of one step; every process reports both.
    undecodable = [json.loads((two / f"skipped-rank{r}.json").read_text())["skipped_files_undecodable"] for r in (0, 1)]
    assert undecodable == [2, 2]
    two_losses = json.loads((two / "losses-rank0.json").read_text())
    assert len(two_losses) == 5
    assert two_losses == pytest.approx(json.loads((one / "losses-rank0.json").read_text()), rel=1e-5)
    # The loss terms are logged over both processes' batches, as one process logs them over its two.
    two_terms, one_terms = (json.loads((run / "terms-rank0.json").read_text()) for run in (two, one))
    assert json.loads((two / "terms-rank1.json").read_text()) == two_terms
    for got, want in zip(two_terms, one_terms, strict=True):
        assert got == pytest.approx(want, rel=1e-5)
    # The weights moved: the comparison is not between two untouched initialisations.
    initial = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "init", *common, overrides=NO_DROPOUT)).model
    assert any((initial.state_dict()[n] - single[n]).abs().max() > 1e-4 for n in single)


# -- the span mask, drawn in the collator (docs/method.md §3) -------------------------------------------


def _masking_collator(seed: int = 0, **mask_settings):
    from conftest import tiny_config
    from armhubert_training.distillation_trainer import DistillationArguments, DistillationMasker

    masker = DistillationMasker.for_student(DistillationArguments(**mask_settings), tiny_config(), seed)
    return AudioCollator(span_mask=masker), masker


def _items(lengths, epoch: int = 0, prefix: str = "utt"):
    rng = np.random.default_rng(len(lengths))
    return [{"input_values": rng.standard_normal(n).astype(np.float32), "text": "", "id": f"{prefix}-{i}",
             "epoch": epoch} for i, n in enumerate(lengths)]


def test_collator_frames_are_the_students():
    """The collator computes the student's frame count and real frames without a model, for any length."""
    from conftest import tiny_config
    from modeling_armhubert import ArmHubertModel, conv_output_lengths

    student = ArmHubertModel(tiny_config())
    _, masker = _masking_collator()
    lengths = torch.cat([torch.arange(1, 2_000), torch.randint(2_000, 600_000, (3_000,),
                                                               generator=torch.Generator().manual_seed(0))])
    ours = conv_output_lengths(lengths, masker.conv_kernel, masker.conv_stride)
    assert torch.equal(ours, student._get_feat_extract_output_lengths(lengths))
    assert int(ours[399]) == 1 and int(ours[398]) == 0  # receptive field 400, stride 320
    for width in (400, 719, 720, 16_000, 160_321):
        attention_mask = (torch.arange(width)[None, :] < torch.tensor([width, 400, 399, width // 2])[:, None]).long()
        frames = int(student._get_feat_extract_output_lengths(width))
        assert torch.equal(masker.frame_mask(attention_mask),
                           student._get_feature_vector_attention_mask(frames, attention_mask))


def test_collator_draws_the_seeded_mask_over_real_frames_only():
    """The collator's mask is the one `distillation_mask` draws with the (seed, epoch, ids) generator over
    the student's real frames: never on padding, the same count in every row, new in another epoch."""
    from armhubert_training.distillation_trainer import DistillationArguments, distillation_mask, mask_generator

    collator, masker = _masking_collator(seed=3)
    items = _items([48_000, 16_000, 33_333, 4_000], epoch=2)
    batch = collator(items)
    mask = batch["mask_time_indices"]
    frame_mask = masker.frame_mask(batch["attention_mask"])
    assert mask.dtype == torch.bool and mask.shape == frame_mask.shape == (4, 149)
    expected = distillation_mask(DistillationArguments(), frame_mask,
                                 mask_generator(3, 2, ["utt-0", "utt-1", "utt-2", "utt-3"]))
    assert torch.equal(mask, expected)
    assert not (mask & ~frame_mask).any()
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and 0 < int(counts[0]) < 12  # the 12-frame row bounds every row
    assert not torch.equal(mask, collator(_items([48_000, 16_000, 33_333, 4_000], epoch=3))["mask_time_indices"])
    _, other_seed = _masking_collator(seed=4)
    assert not torch.equal(mask, other_seed(batch["attention_mask"], batch["id"], 2))
    # Batches without a mask: the plain collator, and one whose items were all unreadable.
    assert "mask_time_indices" not in AudioCollator()(items)
    assert "mask_time_indices" not in collator([None, None])
    with pytest.raises(ValueError, match="needs an 'id'"):
        collator([{"input_values": np.ones(800, np.float32)}])


def test_collator_masks_have_the_reference_statistics():
    """docs/method.md §3: mask_prob 0.8, 100 frames (32,080 samples), batches of 8 -> masked share 0.540."""
    collator, _ = _masking_collator(seed=0, mask_prob=0.8)
    shares = [collator(_items([32_080] * 8, prefix=f"b{b}"))["mask_time_indices"].float().mean().item()
              for b in range(1000)]
    assert abs(np.mean(shares) - 0.540) < 0.01 and abs(np.std(shares) - 0.087) < 0.01


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_same_batch_same_mask_in_a_worker_and_in_the_main_process():
    collator, _ = _masking_collator(seed=1)
    dataset = _ListDataset(_items([16_000 + 3_000 * i for i in range(12)], epoch=5))
    masks = {}
    for workers in (0, 1):
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=collator)
        masks[workers] = [batch["mask_time_indices"] for batch in loader]
    assert len(masks[0]) == 3 and all(m.any() for m in masks[0])
    assert all(torch.equal(a, b) for a, b in zip(masks[0], masks[1]))


def test_training_batches_carry_the_mask_and_evaluation_batches_none(tmp_path, offline_hf, tiny_teacher_dir):
    trainer = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "out", "--max_steps", "1"))
    train_batch = next(iter(trainer.get_train_dataloader()))
    student_frames = trainer.model._get_feature_vector_attention_mask(
        int(trainer.model._get_feat_extract_output_lengths(train_batch["input_values"].shape[1])),
        train_batch["attention_mask"])
    assert train_batch["mask_time_indices"].shape == student_frames.shape
    assert train_batch["mask_time_indices"].any() and not (train_batch["mask_time_indices"] & ~student_frames).any()
    assert all(item["epoch"] == 0 for item in (trainer.train_dataset[0], trainer.eval_dataset[0]))
    assert "mask_time_indices" not in next(iter(trainer.get_eval_dataloader()))
    assert trainer.data_collator.span_mask is not None  # evaluation left the training collator as it was
    with pytest.raises(ValueError, match="draws no span mask"):
        type(trainer)(model=trainer.model, args=trainer.args, train_dataset=trainer.train_dataset,
                      eval_dataset=trainer.eval_dataset, data_collator=AudioCollator(),
                      teacher=trainer.teacher, distillation_args=trainer.distillation_args)


def test_streaming_hub_dataset(tmp_path, offline_hf, tiny_teacher_dir, hub_folder, monkeypatch):
    """A `datasets` dataset read with --streaming: per-process batches of different lengths."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    folder, originals = hub_folder
    # The recipe names LibriSpeech folders; the dataset's own splits replace them.
    metrics = main(distill_argv(tiny_teacher_dir, tmp_path / "out", "--librispeech_root", "", "--dataset_name",
                                str(folder), "--train_splits", "train", "--eval_splits", "validation",
                                "--text_column", "sentence", "--streaming", "true", "--max_steps", "3",
                                "--save_strategy", "no", "--eval_steps", "3", "--max_eval_samples", "4"))
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["eval_loss"])
    assert metrics["skipped_files"] == 0


def test_max_batch_seconds_bounds_every_training_batch(tmp_path, offline_hf, tiny_teacher_dir):
    trainer = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "out", "--max_steps", "1",
                                         "--max_batch_seconds", "40", "--per_device_train_batch_size", "12"))
    ids = []
    for batch in trainer.get_train_dataloader():
        assert batch["attention_mask"].numel() <= 40 * 16_000 and len(batch["id"]) <= 12
        assert batch["mask_time_indices"].shape[0] == len(batch["id"])
        ids += batch["id"]
    assert sorted(ids) == sorted(trainer.train_dataset[i]["id"] for i in range(len(trainer.train_dataset)))
    with pytest.raises(ValueError, match="persistent_workers"):
        build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "p", "--dataloader_num_workers", "1",
                                   "--dataloader_persistent_workers", "true"))


@pytest.mark.parametrize("bad, message", [
    (dict(mask_prob=1.5), r"--mask_prob must be in \[0, 1\]; got 1.5"),
    (dict(mask_prob=float("nan")), r"--mask_prob must be in \[0, 1\]"),
    (dict(mask_length=0), "--mask_length must be >= 1"),
    (dict(mask_min_spans=-1), "--mask_min_spans must be >= 0"),
    (dict(hint_weight=-1.0), "--hint_weight must be a finite weight >= 0"),
    (dict(last_weight=float("inf")), "--last_weight must be a finite weight >= 0"),
])
def test_bad_distillation_settings_stop_the_run_when_parsed(bad, message):
    """Before the teacher loads and the corpus is indexed, not at the first mask drawn in a worker."""
    from armhubert_training.distillation_trainer import DistillationArguments

    with pytest.raises(ValueError, match=message):
        DistillationArguments(**bad)


def test_a_run_resumed_inside_a_later_epoch_draws_that_epochs_order(tmp_path, offline_hf, tiny_teacher_dir):
    """Resuming on several processes skips the epoch's first batches through accelerate's SkipBatchSampler
    around its BatchSamplerShard, which hides the sampler from the data loader's set_epoch and from the
    Trainer's own forwarding: the trainer's samplers are told the epoch at the epoch's start instead, or
    the resumed epoch would replay the first epoch's order."""
    from accelerate.data_loader import prepare_data_loader, skip_first_batches
    from torch.utils.data import DataLoader
    from transformers import TrainerControl, TrainerState

    from armhubert_training.speech_trainer import EpochCallback, LengthGroupedEpochSampler

    trainer = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / "run", "--dataloader_num_workers", "0"))
    trainer.get_train_dataloader()
    assert any(isinstance(r, LengthGroupedEpochSampler) for r in trainer._epoch_receivers)

    lengths = torch.randint(16_000, 240_000, (40,), generator=torch.Generator().manual_seed(1)).tolist()

    def process_0_of_2(sampler):  # what `accelerator.prepare` makes of the loader on one of two processes
        loader = DataLoader(list(range(40)), sampler=sampler, batch_size=4, collate_fn=list)
        return prepare_data_loader(loader, num_processes=2, process_index=0, put_on_device=False)

    def as_the_trainer_sets_the_epoch(loader, epoch):
        loader.set_epoch(epoch)
        wrapped = getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None)
        if hasattr(wrapped, "set_epoch"):
            wrapped.set_epoch(epoch)

    uninterrupted = process_0_of_2(LengthGroupedEpochSampler(8, lengths, seed=42))
    as_the_trainer_sets_the_epoch(uninterrupted, 1)
    second_epoch = list(uninterrupted)
    sampler = LengthGroupedEpochSampler(8, lengths, seed=42)
    EpochCallback([sampler]).on_epoch_begin(None, TrainerState(epoch=1.5), TrainerControl())
    resumed = skip_first_batches(process_0_of_2(sampler), num_batches=2)
    as_the_trainer_sets_the_epoch(resumed, 1)
    assert list(resumed) == second_epoch[2:]
    first_epoch = list(process_0_of_2(LengthGroupedEpochSampler(8, lengths, seed=42)))
    assert first_epoch[2:] != second_epoch[2:]  # the check tells the epochs apart
