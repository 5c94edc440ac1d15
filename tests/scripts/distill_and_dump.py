"""Run run_distill.py's trainer, then let every process dump its weights and loss history.

Used by tests/test_distillation.py under `accelerate launch --num_processes 2` to check that all
processes end with identical weights, and against a single process; each process also writes its
logged loss terms and the training files it skipped.
    python distill_and_dump.py DUMP_DIR [run_distill.py options]
"""

import json
import sys
from pathlib import Path

import torch

from run_distill import build_trainer

dump_dir = Path(sys.argv[1])
trainer = build_trainer(sys.argv[2:])
trainer.train()
rank = trainer.args.process_index
state = {k: v.detach().cpu() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
torch.save(state, dump_dir / f"weights-rank{rank}.pt")
losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
(dump_dir / f"losses-rank{rank}.json").write_text(json.dumps(losses))
terms = [{name: entry[name] for name in trainer.loss_terms} for entry in trainer.state.log_history if "loss" in entry]
(dump_dir / f"terms-rank{rank}.json").write_text(json.dumps(terms))
(dump_dir / f"skipped-rank{rank}.json").write_text(json.dumps(trainer.skipped_files_metrics()))
