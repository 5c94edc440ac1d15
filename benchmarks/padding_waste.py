"""Padding waste and batch memory of each batching strategy, over one epoch of LibriSpeech-like lengths.

No model runs: the script draws utterance lengths like LibriSpeech's training sets
(tools/make_synthetic_librispeech.py: 2-35 s, mean about 13.2 s), forms one epoch of batches with
each strategy exactly as training does, and reports per strategy:

  padding        padded samples / all samples in the batches (compute spent on zeros)
  utts / batch   mean number of utterances per batch
  mean / max padded s   padded audio per batch (batch size x its longest utterance): the maximum is
                 what sets the memory a run needs, the mean what a step costs

Strategies:
  random          --train_sampling_strategy random: batches of N utterances in random order
  group_by_length run_distill.py's default: N utterances, grouped by length over the global batch
  budget          --max_batch_seconds S with per_device_train_batch_size M: at most M utterances and
                  (utterances x longest) <= S seconds

    python -m benchmarks.padding_waste                        # train-clean-100's 28,539 utterances, N=32
    python -m benchmarks.padding_waste --count 281241 --batch-size 18 --budget 250 --budget-max-batch 64
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from armhubert_training.speech_trainer import AudioBudgetBatchSampler
from benchmarks.bench_utils import RESULTS_DIR, command_line, write_json
from benchmarks.tables import padding_waste_table
from tools.make_synthetic_librispeech import sample_durations

SAMPLE_RATE = 16_000


def batches_of(order: Sequence[int], size: int) -> list[list[int]]:
    order = list(order)
    return [order[i:i + size] for i in range(0, len(order), size)]


def summarise(name: str, batches: list[list[int]], lengths: np.ndarray) -> dict[str, Any]:
    padded = np.array([len(b) * lengths[b].max() for b in batches], dtype=np.float64)
    return {"strategy": name, "batches": len(batches),
            "padding": f"{1 - lengths.sum() / padded.sum():.1%}",
            "utts_per_batch": f"{len(lengths) / len(batches):.1f}",
            "mean_padded_s": f"{padded.mean() / SAMPLE_RATE:.0f}",
            "max_padded_s": f"{padded.max() / SAMPLE_RATE:.0f}"}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=28_539,
                        help="Utterances in the epoch (default 28,539, train-clean-100; 281,241 is all 960 h).")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="Utterances per batch of the count-based strategies (default 32, the paper's 2 x 12 "
                             "x accumulation 3 / 2 GPUs is 36 per step).")
    parser.add_argument("--budget", type=float, default=None,
                        help="--max_batch_seconds of the budget strategy (default: the count strategies' mean "
                             "real audio per batch, so that every strategy trains on the same audio per step).")
    parser.add_argument("--budget-max-batch", type=int, default=None,
                        help="per_device_train_batch_size with the budget (default 2 x --batch-size).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the lengths and of the orders.")
    parser.add_argument("--output", default=str(RESULTS_DIR / "padding_waste.json"), help="Where to write the JSON.")
    args = parser.parse_args(argv)

    lengths = np.rint(sample_durations(args.count, seed=args.seed) * SAMPLE_RATE).astype(np.int64)
    budget = args.budget or float(lengths.mean() * args.batch_size / SAMPLE_RATE)
    budget = max(budget, float(lengths.max() / SAMPLE_RATE))
    generator = torch.Generator().manual_seed(args.seed)
    grouped = LengthGroupedSampler(args.batch_size, lengths=lengths.tolist(), generator=generator)
    sampler = AudioBudgetBatchSampler(lengths.tolist(), max_samples=round(budget * SAMPLE_RATE),
                                      max_batch_size=args.budget_max_batch or 2 * args.batch_size, seed=args.seed)
    rows = [
        summarise(f"random, {args.batch_size} utts", batches_of(torch.randperm(args.count, generator=generator).tolist(),
                                                                args.batch_size), lengths),
        summarise(f"group_by_length, {args.batch_size} utts", batches_of(list(grouped), args.batch_size), lengths),
        summarise(f"budget {budget:.0f} s, <= {sampler.max_batch_size} utts", list(sampler), lengths),
    ]
    print(f"{args.count} utterances of {lengths.mean() / SAMPLE_RATE:.1f} s mean (LibriSpeech-like lengths)\n")
    print(padding_waste_table(rows))
    write_json(args.output, {"command": command_line(__file__, argv), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
