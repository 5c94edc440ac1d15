"""Model cards (README.md with Hub metadata) for distilled students."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from transformers import TrainingArguments

PAPER = "https://arxiv.org/abs/2305.11685"


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


def fine_tuning_recipe(training_args: TrainingArguments) -> str:
    """One sentence of a fine-tuned model's card: steps, batch, optimiser, learning rate and schedule."""
    length = (f"{training_args.max_steps} steps" if training_args.max_steps > 0
              else f"{training_args.num_train_epochs:g} epochs")
    batch = (f"{training_args.per_device_train_batch_size} x {training_args.gradient_accumulation_steps} "
             f"accumulation x {training_args.world_size} processes")
    optimizer = getattr(training_args.optim, "value", training_args.optim)
    schedule = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    return (f"{length}, batch {batch},\n{optimizer} lr {training_args.learning_rate:g} ({schedule} schedule), "
            f"weight decay {training_args.weight_decay:g}.")


def distilled_student_card(
    *,
    model_name: str,
    teacher: str,
    datasets: list[str],
    num_parameters: int,
    num_parameters_without_heads: int,
    recipe: dict[str, Any],
    results: dict[str, float],
) -> ModelCard:
    """A card for a student made by `run_distill.py`.

    Args:
        model_name: the student's name (the output folder or hub id).
        teacher: the teacher's hub id or path (becomes `base_model` when it is a hub id).
        datasets: hub names of the training data (e.g. `openslr/librispeech_asr`).
        recipe: training settings to list (optimiser, schedule, batch, mask, ...).
        results: final metrics (train loss, eval loss, ...).
    """
    base_model = teacher if "/" in teacher and not Path(teacher).exists() else None
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=["audio", "speech", "hubert", "distillation", "recycle-and-distill", "armhubert"],
        base_model=base_model,
        datasets=datasets or None,
        license="mit",
    )
    results_rows = {key: (f"{value:.4f}" if isinstance(value, float) else value) for key, value in results.items()}
    body = f"""---
{data.to_yaml()}
---

# {model_name}

A speech encoder distilled from `{teacher}` with Recycle-and-Distill ([paper]({PAPER})):
attention map reusing and masking distillation. {num_parameters / 1e6:.2f} M parameters
({num_parameters_without_heads / 1e6:.2f} M without the distillation heads).

## Usage

```python
from transformers import AutoFeatureExtractor, AutoModel

extractor = AutoFeatureExtractor.from_pretrained("{model_name}")
model = AutoModel.from_pretrained("{model_name}", trust_remote_code=True)
inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")  # 16 kHz mono float audio
outputs = model(**inputs, output_hidden_states=True)
layer_features = outputs.hidden_states  # encoder input + one (batch, frames, hidden) tensor per layer
```

Fine-tune it for speech recognition with `run_asr_ctc.py` of the armhubert project.

## Training recipe

{_table(recipe, ("setting", "value"))}

## Results

{_table(results_rows, ("metric", "value")) if results_rows else "No metrics were recorded."}
"""
    return ModelCard(body)
