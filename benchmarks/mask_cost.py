"""What the span mask costs the training process per batch, before and after it moved into the collator.

before   the training step drew the mask itself (`distillation_trainer.distillation_mask`, Python loops
         on the CPU while the GPU waits): timed in this process.
after    the collator draws it in a DataLoader worker (`AudioCollator(span_mask=DistillationMasker)`); the
         step only takes it from the batch (`MaskingDistillationTrainer.batch_mask`): batches come from a
         real DataLoader with one worker, and that call is timed in this process.
worker   the drawing itself, now done by a worker (timed here on the same batches).

Batches are rows of whole utterances without padding (docs/method.md §3 settings of the recipes:
mask_prob 0.8, length 10, uniform lengths). Medians over --batches batches.

    python -m benchmarks.mask_cost                      # 32 x 500, 18 x 750, 32 x 1,000 frames
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Sequence

import numpy as np
import torch

from armhubert_training.distillation_trainer import (DistillationArguments, DistillationMasker,
                                                     MaskingDistillationTrainer, distillation_mask, mask_generator)
from armhubert_training.collators import AudioCollator
from configuration_armhubert import ArmHubertConfig


class _Batches(torch.utils.data.Dataset):
    """Item i: `frames` frames of noise (320 * (frames - 1) + 400 samples) with its id and epoch 0."""

    def __init__(self, count: int, frames: int):
        self.count, self.samples = count, 320 * (frames - 1) + 400

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_values": np.zeros(self.samples, np.float32), "text": "", "id": f"utt-{i}", "epoch": 0}


def measure(rows: int, frames: int, batches: int, masker: DistillationMasker) -> dict[str, Any]:
    args = masker.args
    loader = torch.utils.data.DataLoader(_Batches(rows * batches, frames), batch_size=rows, num_workers=1,
                                         collate_fn=AudioCollator(span_mask=masker))
    before, after, worker = [], [], []
    for batch in loader:
        frame_mask = masker.frame_mask(batch["attention_mask"])
        start = time.perf_counter()
        distillation_mask(args, frame_mask, mask_generator(masker.seed, 0, batch["id"]))
        before.append(time.perf_counter() - start)
        start = time.perf_counter()
        masker(batch["attention_mask"], batch["id"], 0)
        worker.append(time.perf_counter() - start)
        start = time.perf_counter()
        MaskingDistillationTrainer.batch_mask(batch, frame_mask)
        after.append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(times) for name, times in
          (("before_ms", before), ("after_ms", after), ("worker_ms", worker))}
    return {"batch": f"{rows} x {frames}", **ms, "reduction": ms["before_ms"] / ms["after_ms"]}


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["32x500", "18x750", "32x1000"],
                        help="Batches as ROWSxFRAMES (default 32x500 18x750 32x1000).")
    parser.add_argument("--batches", type=int, default=20, help="Batches per shape (default 20).")
    parser.add_argument("--mask-prob", type=float, default=0.8, help="Mask probability (default 0.8).")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    masker = DistillationMasker.for_student(DistillationArguments(mask_prob=args.mask_prob),
                                            ArmHubertConfig.from_preset("armhubert"), seed=0)
    results = []
    print("| batch (rows x frames) | before: mask in the step (ms) | after: taken from the batch (ms) | "
          "drawn in a worker (ms) |\n|---|---|---|---|")
    for shape in args.shapes:
        rows, frames = (int(n) for n in shape.lower().split("x"))
        row = measure(rows, frames, args.batches, masker)
        results.append(row)
        print(f"| {row['batch']} | {row['before_ms']:.1f} | {row['after_ms']:.3f} | {row['worker_ms']:.1f} |",
              flush=True)
    return results


if __name__ == "__main__":
    main()
