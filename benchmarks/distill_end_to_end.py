"""End-to-end throughput of run_distill.py: everything a real run does, on a corpus on disk.

Each variant builds the trainer as run_distill.py does, with
`distillation_setup.build_distillation_trainer` (the Trainer, the DataLoader and its workers, the
length-grouped sampler, FLAC decoding, the collator, the span mask, the frozen teacher, the
student, AdamW, gradient clipping, mixed precision) and trains for a fixed number of steps on a
LibriSpeech-layout corpus of FLAC files that this script writes first, with utterance lengths
drawn like LibriSpeech's (2-35 s, mean about 13.2 s; see tools/make_synthetic_librispeech.py), or
on a corpus given with --corpus.

Reported per variant, over the timed steps (after the warm-up steps):
  audio s / s      real (unpadded) audio seconds distilled per second of wall time
  data wait        share of that wall time the training loop waited for the next batch
  padding          padded samples / all samples in the batches
  mask (ms)        time per step the training process spends on the span mask (drawing it in the
                   collator with --dataloader_num_workers 0, taking it from the batch); ~0 with workers
  peak memory      the GPU's peak allocated memory (on a GPU)
and, once, the decoding speed of one data-loader worker (audio seconds of FLAC decoded per second)
and from it the number of `dataloader_num_workers` that the default variant's rate needs.

Variants (each changes one thing from `default`):
  default             run_distill.py's defaults, --dataloader_num_workers WORKERS
  no-workers          --dataloader_num_workers 0: decoding in the training process
  no-shared-features  --share_teacher_features false: the teacher runs twice from the waveform
  direct-positional-conv  --teacher_positional_conv_from_spectra false: the teacher's own positional conv
  no-length-grouping  --train_sampling_strategy random: batches of random lengths
  torch-compile       --torch_compile true
  token-budget        --max_batch_seconds (the default's mean audio per batch, at least the longest
                      utterance) with up to twice as many utterances per batch

    python -m benchmarks.distill_end_to_end --device cuda       # HuBERT Base-sized random teacher -> armhubert, bf16
    python -m benchmarks.distill_end_to_end --tiny             # tiny models and short audio, on the CPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import soundfile as sf
import torch
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments

from armhubert_training import distillation_trainer
from armhubert_training.arguments import DistillationDataArguments, DistillationModelArguments
from armhubert_training.distillation_setup import build_distillation_trainer
from armhubert_training.audio import load_audio
from armhubert_training.speech_trainer import setup_script_logging
from benchmarks.bench_utils import (
    RESULTS_DIR, TINY_STUDENT, command_line, describe_machine, machine_info, write_json,
)
from benchmarks.tables import distill_end_to_end_table
from tools.make_random_teacher import make_random_teacher
from tools.make_synthetic_librispeech import mean_duration, sample_durations, write_corpus

SAMPLE_RATE = 16000
TARGET_AUDIO_S_PER_S = 3000  # armhubert from a HuBERT Base-sized teacher on one H100/H200, bf16
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "no-workers": ["--dataloader_num_workers", "0"],
    "no-shared-features": ["--share_teacher_features", "false"],
    "direct-positional-conv": ["--teacher_positional_conv_from_spectra", "false"],
    "no-length-grouping": ["--train_sampling_strategy", "random"],
    "torch-compile": ["--torch_compile", "true"],
    "token-budget": [],  # --max_batch_seconds: see variant_arguments
}
# The student of `--tiny`: 2 layers for the 2-layer tiny teacher.
TINY_OVERRIDES = {**TINY_STUDENT, "num_hidden_layers": 2, "reuse_pattern": [True, False]}
TINY_OVERRIDES.pop("projection_dim")  # run_distill sizes the heads from the teacher


# -- decoding ------------------------------------------------------------------------------


def decode_rate(files: list[Path], max_seconds: float = 10.0) -> float:
    """Audio seconds decoded per second by one process, as one data-loader worker decodes them."""
    decoded, start = 0.0, time.perf_counter()
    for path in files:
        decoded += len(load_audio(str(path))) / SAMPLE_RATE
        if time.perf_counter() - start > max_seconds:
            break
    return decoded / (time.perf_counter() - start)


# -- one variant --------------------------------------------------------------------------------


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimisation step."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()
        self.ends.append(time.perf_counter())


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def instrument(trainer) -> dict[str, list[float]]:
    """Time the trainer's batch fetching and span mask per step; note each step's real and padded samples."""
    per_step: dict[str, list[float]] = {"wait_s": [], "real": [], "total": [], "mask_s": []}
    fetch = trainer.get_batch_samples

    def timed_fetch(*args, **kwargs):
        _synchronize()  # what is left of the previous step's GPU work is not waiting for data
        per_step["mask_s"].append(0.0)  # a collator in this process draws this step's masks during the fetch
        start = time.perf_counter()
        batches, num_items = fetch(*args, **kwargs)
        per_step["wait_s"].append(time.perf_counter() - start)
        per_step["real"].append(sum(int(b["attention_mask"].sum()) for b in batches))
        per_step["total"].append(sum(b["attention_mask"].numel() for b in batches))
        return batches, num_items

    trainer.get_batch_samples = timed_fetch
    return per_step


def variant_arguments(name: str, args: argparse.Namespace) -> list[str]:
    """The options that make variant `name` differ from the default."""
    if name != "token-budget":
        return VARIANTS[name]
    mean_s, longest_s = mean_duration(args.duration_scale), 35.0 * args.duration_scale  # sample_durations' shape
    budget = max(args.batch_size * mean_s, longest_s)
    return ["--max_batch_seconds", f"{budget:.2f}", "--per_device_train_batch_size", str(2 * args.batch_size)]


def run_variant(name: str, args: argparse.Namespace, teacher_dir: Path, corpus: Path, workdir: Path) -> dict[str, Any]:
    argv = [
        "--teacher", str(teacher_dir), "--student_preset", args.student, "--librispeech_root", str(corpus),
        "--train_splits", "train-clean-100", "--output_dir", str(workdir / name), "--do_train", "true",
        "--do_eval", "false", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
        "--max_steps", str(args.warmup + args.steps), "--per_device_train_batch_size", str(args.batch_size),
        "--gradient_accumulation_steps", "1", "--logging_steps", str(10**6), "--disable_tqdm", "true",
        "--dataloader_num_workers", str(args.workers), "--precision", args.precision,
        "--train_sampling_strategy", "group_by_length", "--learning_rate", "5e-4", "--seed", "0",
        *(["--config_overrides", json.dumps(TINY_OVERRIDES)] if args.tiny else []),
        *(["--use_cpu", "true"] if args.device == "cpu" else []),
        *variant_arguments(name, args),
    ]
    parser = HfArgumentParser((DistillationModelArguments, distillation_trainer.DistillationArguments,
                               DistillationDataArguments, TrainingArguments))
    model_args, distill_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    setup_script_logging(training_args)  # as run_distill.py logs
    trainer = build_distillation_trainer(model_args, distill_args, data_args, training_args)
    per_step = instrument(trainer)
    clock = StepClock()
    trainer.add_callback(clock)

    # The mask is drawn by the collator (DistillationMasker): in the DataLoader workers, or in this process
    # with --dataloader_num_workers 0; and the step takes it from the batch (batch_mask). Time both here.
    masker_class, trainer_class = distillation_trainer.DistillationMasker, type(trainer)
    original_draw, original_take = masker_class.__call__, trainer_class.batch_mask

    def timed(function):
        def wrapper(*call_args, **call_kwargs):
            start = time.perf_counter()
            result = function(*call_args, **call_kwargs)
            if torch.utils.data.get_worker_info() is None:  # forked workers run this wrapper too: not counted
                per_step["mask_s"][-1] += time.perf_counter() - start
            return result
        return wrapper

    masker_class.__call__ = timed(original_draw)
    trainer_class.batch_mask = staticmethod(timed(original_take))
    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.train()
    finally:
        masker_class.__call__, trainer_class.batch_mask = original_draw, staticmethod(original_take)
    timed = slice(args.warmup + 1, args.warmup + args.steps)  # steps whose start and end were both clocked
    wall = clock.ends[args.warmup + args.steps - 1] - clock.ends[args.warmup]
    audio_seconds = sum(per_step["real"][timed]) / SAMPLE_RATE
    row = {
        "variant": name, "arguments": " ".join(variant_arguments(name, args)) or "(defaults)",
        "steps_timed": args.steps - 1,
        "audio_s_per_s": audio_seconds / wall,
        "step_ms": 1000 * wall / (args.steps - 1),
        "data_wait_share": sum(per_step["wait_s"][timed]) / wall,
        "padding_share": 1 - sum(per_step["real"][timed]) / sum(per_step["total"][timed]),
        "mask_ms_per_step": 1000 * statistics.mean(per_step["mask_s"][timed]),
        "mean_batch_audio_s": audio_seconds / (args.steps - 1),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "warmup_s": clock.ends[args.warmup] - start,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "final_loss": next((e["train_loss"] for e in reversed(trainer.state.log_history) if "train_loss" in e), None),
    }
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if name == "torch-compile":
        torch._dynamo.reset()
    return row


# -- driver -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: a HuBERT Base-sized random teacher; cpu: the same unless --tiny (default cpu).")
    parser.add_argument("--tiny", action="store_true",
                        help="Tiny teacher and student, lengths scaled by --duration-scale 0.15 (tests, smoke runs).")
    parser.add_argument("--student", default="armhubert", help="Student preset (default armhubert).")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "no"], default="auto",
                        help="run_distill.py's --precision (default auto: bf16 on recent GPUs, fp32 on a CPU).")
    parser.add_argument("--batch-size", type=int, default=None, help="Utterances per step (default 32 cuda, 4 cpu).")
    parser.add_argument("--workers", type=int, default=None,
                        help="dataloader_num_workers of the default variant (default 8 cuda, 1 cpu).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps per variant (default 5 cuda, 1 cpu).")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per variant (default 20 cuda, 3 cpu).")
    parser.add_argument("--duration-scale", type=float, default=None,
                        help="Multiply every utterance length by this (default 1; 0.15 with --tiny).")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="Variants to run, in this order (default all).")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="Use this LibriSpeech-layout folder (its train-clean-100) instead of writing one.")
    parser.add_argument("--teacher-dir", type=Path, default=None,
                        help="Use this saved teacher instead of writing a random one.")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Where the corpus, teacher and outputs go (default a temporary folder, removed after).")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default benchmarks/results/distill_end_to_end_<device>.json).")
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to PyTorch.")
    args.batch_size = args.batch_size or (32 if on_gpu else 4)
    args.workers = args.workers if args.workers is not None else (8 if on_gpu else 1)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    args.steps = args.steps or (20 if on_gpu else 3)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the rate is measured between step ends).")
    args.duration_scale = args.duration_scale or (0.15 if args.tiny else 1.0)
    args.output = args.output or RESULTS_DIR / f"distill_end_to_end_{args.device}.json"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="distill_end_to_end_"))
    try:
        return _run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    corpus, teacher_dir = args.corpus, args.teacher_dir
    if corpus is None:
        # One epoch holds every step, so no variant pays for restarting its workers mid-run.
        corpus = workdir / "corpus"
        durations = sample_durations(args.batch_size * (args.warmup + args.steps), scale=args.duration_scale)
        start = time.perf_counter()
        write_corpus(corpus, durations)
        print(f"corpus written in {time.perf_counter() - start:.0f} s", flush=True)
    if teacher_dir is None:
        teacher_dir = workdir / "teacher"
        make_random_teacher(str(teacher_dir), arch="hubert", size="tiny" if args.tiny else "base")

    files = sorted(corpus.rglob("train-clean-100/*/*/*.flac"))
    durations = [sf.info(str(path)).duration for path in files]
    per_worker = decode_rate(files)
    rows: list[dict[str, Any]] = []
    result = {
        "benchmark": "distill_end_to_end", "command": command_line(__file__, None),
        "machine": machine_info(torch.device(args.device)), "device": args.device,
        "teacher": str(args.teacher_dir) if args.teacher_dir else "hubert-base (random weights)" + (" tiny" if args.tiny else ""),
        "student": args.student + (" (tiny)" if args.tiny else ""), "precision": args.precision,
        "batch_size": args.batch_size, "workers": args.workers, "warmup": args.warmup, "steps": args.steps,
        "corpus": {"utterances": len(durations), "hours": round(sum(durations) / 3600, 3),
                   "mean_s": statistics.mean(durations), "min_s": min(durations), "max_s": max(durations)},
        "decode_audio_s_per_s_per_worker": per_worker,
        "target_audio_s_per_s": TARGET_AUDIO_S_PER_S, "rows": rows,
    }
    print(f"decoding: {per_worker:.0f} audio s / s per worker", flush=True)
    for name in args.variants:
        try:
            rows.append(run_variant(name, args, teacher_dir, corpus, workdir))
        except Exception as error:  # one failing variant (a compiler error, say) must not lose the others
            rows.append({"variant": name, "arguments": " ".join(variant_arguments(name, args)),
                         "error": f"{type(error).__name__}: {error}"[:2000]})
        print(json.dumps({k: v for k, v in rows[-1].items()}, default=str), flush=True)
        default = next((r for r in rows if r["variant"] == "default" and "error" not in r), None)
        if default is not None:
            result["workers_needed_for_default"] = default["audio_s_per_s"] / per_worker
            result["workers_needed_for_target"] = TARGET_AUDIO_S_PER_S / per_worker
        write_json(args.output, result)  # after every variant: a run cut short keeps what it measured
    print(f"\n{args.device}, precision {args.precision}; teacher {result['teacher']}, student {result['student']}, "
          f"batch {args.batch_size}, {args.workers} workers; {describe_machine(result['machine'])}")
    print(f"decoding {per_worker:.0f} audio s / s per worker: {TARGET_AUDIO_S_PER_S} audio s / s needs "
          f"{TARGET_AUDIO_S_PER_S / per_worker:.1f} workers")
    print(distill_end_to_end_table(rows))
    return result


if __name__ == "__main__":
    main()
