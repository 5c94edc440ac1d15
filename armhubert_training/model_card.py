"""Model cards (README.md with Hub metadata) of the models the scripts write: a distilled student
(`distilled_student_card`), a CTC model (`asr_model_card`), an utterance classifier
(`classification_model_card`) and a speaker verification model (`speaker_verification_model_card`).

Every card is the Hub metadata, a title, what the model is, then sections (`_card`); the parts the
cards share (the model's name, the base model, the pipeline usage, the fine-tuning recipe line, tables)
are the helpers below.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData
from transformers import TrainingArguments

from modeling_armhubert import ArmHubertForSuperbCTC

from .asr_trainer import TASK_METRICS
from .input_effects import InputEffects

if TYPE_CHECKING:
    from modeling_armhubert import (
        ArmHubertForSequenceClassification,
        ArmHubertForSuperbDiarization,
        ArmHubertForXVector,
        ArmHubertModel,
        ArmHubertPreTrainedModel,
    )

    from .arguments import (
        AsrDataArguments,
        ClassificationDataArguments,
        DistillationDataArguments,
        DistillationModelArguments,
        StudentSourceArguments,
    )
    from .distillation_trainer import DistillationArguments, MaskingDistillationTrainer

PAPER = "https://arxiv.org/abs/2305.11685"
STAR_PAPER = ("STaR: Distilling Speech Temporal Relation for Lightweight Speech Self-Supervised Learning Models, "
              "ICASSP 2024")
LICENSE = "mit"

# Per kind of CTC target: (task, what the CTC layer emits); and the metrics' column titles.
_CTC_TASKS = {
    "characters": ("Speech recognition", "upper-case characters"),
    "phonemes": ("Phoneme recognition", "SUPERB's 71 ARPAbet phones (with stress)"),
    "slots": ("Slot filling", "upper-case characters and slot tags"),
}
_METRIC_TITLES = {"wer": "WER", "cer": "CER", "per": "PER", "slot_type_f1": "slot-type F1",
                  "slot_value_cer": "slot-value CER"}
_NO_EVALUATION = "No evaluation was run."


# ----------------------------------------------------------------------------------------------
# What the cards share
# ----------------------------------------------------------------------------------------------


def model_name(training_args: TrainingArguments) -> str:
    """The model's name on its card: the hub id it is pushed to, else the output folder's name."""
    return training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))


def hub_base_model(source: str) -> str | None:
    """`source` when it names a hub model (the card's `base_model`), None for a local folder or file."""
    return source if "/" in source and not os.path.exists(source) and not source.endswith(".ckpt") else None


def _card_data(pipeline_tag: str | None, tags: list[str], base_model: str | None, **fields: Any) -> ModelCardData:
    return ModelCardData(library_name="transformers", pipeline_tag=pipeline_tag, tags=tags, base_model=base_model,
                         license=LICENSE, **fields)


def _card(card_data: ModelCardData, name: str, intro: str, sections: dict[str, str]) -> ModelCard:
    """Metadata, `# name`, the intro paragraph, then one `## title` per section."""
    body = "".join(f"\n## {title}\n\n{text}\n" for title, text in sections.items())
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n# {name}\n\n{intro}\n{body}")


def _pipeline_usage(name: str, task: str, variable: str, call: str) -> str:
    """A code block that runs the model through `pipeline(task)` on a file."""
    return f"""```python
from transformers import pipeline

{variable} = pipeline("{task}", model="{name}", trust_remote_code=True)
{variable}{call}          # or a 16 kHz float waveform
```"""


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


def _results(lines: list[str]) -> str:
    """A results table (header and separator first), or a sentence when it has no rows."""
    return "\n".join(lines) if len(lines) > 2 else _NO_EVALUATION


def fine_tuning_recipe(training_args: TrainingArguments) -> str:
    """One sentence of a fine-tuned model's card: steps, batch, optimiser, learning rate and schedule."""
    length = (f"{training_args.max_steps} steps" if training_args.max_steps > 0
              else f"{training_args.num_train_epochs:g} epochs")
    optimizer = getattr(training_args.optim, "value", training_args.optim)
    schedule = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    return (f"{length}, batch {_batch(training_args)},\n{optimizer} lr {training_args.learning_rate:g} "
            f"({schedule} schedule), weight decay {training_args.weight_decay:g}.")


def _batch(training_args: TrainingArguments) -> str:
    return (f"{training_args.per_device_train_batch_size} x {training_args.gradient_accumulation_steps} "
            f"accumulation x {training_args.world_size} processes")


def _fine_tuned_from(student: StudentSourceArguments) -> str:
    return student.model_name_or_path or f"preset {student.random_student_preset}"


# ----------------------------------------------------------------------------------------------
# A distilled student (run_distill.py)
# ----------------------------------------------------------------------------------------------


def distilled_student_card(trainer: MaskingDistillationTrainer, student: ArmHubertModel,
                           model_args: DistillationModelArguments, distill_args: DistillationArguments,
                           data_args: DistillationDataArguments, training_args: TrainingArguments,
                           layer_map: list[int]) -> ModelCard:
    """A card for a student made by `run_distill.py`: its size, how to use it, the recipe to reproduce
    it, and the results so far (the latest losses logged, the files skipped, the steps made)."""
    results: dict[str, Any] = {}
    skipped = trainer.skipped_files_metrics()
    for entry in trainer.state.log_history:
        results.update({k: v for k, v in entry.items() if k in ("train_loss", "eval_loss")})
        skipped.update({k: v for k, v in entry.items() if k.startswith("eval_skipped_files")})
    # Totals always; a reason only when it left files out.
    results.update({k: v for k, v in skipped.items() if v or k in ("skipped_files", "eval_skipped_files")})
    results.update(optimisation_steps=trainer.state.global_step)
    results_rows = {key: (f"{value:.4f}" if isinstance(value, float) else value) for key, value in results.items()}

    name = model_name(training_args)
    num_parameters = student.num_parameters()
    num_head_parameters = (sum(p.numel() for p in student.projection_heads.parameters())
                           if student.projection_heads is not None else 0)
    datasets = ["openslr/librispeech_asr"] if data_args.librispeech_root else [data_args.dataset_name]
    star = distill_args.objective == "star"
    method_tag = "star" if star else "recycle-and-distill"
    card_data = _card_data("feature-extraction", ["audio", "speech", "hubert", "distillation", method_tag,
                                                  "armhubert"],
                           base_model=hub_base_model(model_args.teacher), datasets=datasets or None)
    if star:
        method = (f"STaR (*{STAR_PAPER}*): its layers' temporal Gram matrices matched to the teacher's\n"
                  f"(this project's implementation, docs/method.md §5 of the armhubert project)")
    else:
        method = (f"Recycle-and-Distill ([paper]({PAPER})):\n"
                  "attention map reusing and masking distillation")
    size = f"{num_parameters / 1e6:.2f} M parameters"
    if num_head_parameters:
        size += f"\n({(num_parameters - num_head_parameters) / 1e6:.2f} M without the distillation heads)"
    intro = f"A speech encoder distilled from `{model_args.teacher}` with {method}. {size}."
    usage = f"""```python
from transformers import AutoFeatureExtractor, AutoModel

extractor = AutoFeatureExtractor.from_pretrained("{name}")
model = AutoModel.from_pretrained("{name}", trust_remote_code=True)
inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")  # 16 kHz mono float audio
outputs = model(**inputs, output_hidden_states=True)
layer_features = outputs.hidden_states  # encoder input + one (batch, frames, hidden) tensor per layer
```

Fine-tune it for speech recognition with `run_asr_ctc.py` of the armhubert project."""
    recipe = distillation_recipe(model_args, distill_args, data_args, training_args, layer_map)
    return _card(card_data, name, intro, {
        "Usage": usage,
        "Training recipe": _table(recipe, ("setting", "value")),
        "Results": _table(results_rows, ("metric", "value")) if results_rows else "No metrics were recorded.",
    })


def distillation_recipe(model_args: DistillationModelArguments, distill_args: DistillationArguments,
                        data_args: DistillationDataArguments, training_args: TrainingArguments,
                        layer_map: list[int]) -> dict[str, str]:
    """The settings a reader of the card needs to reproduce a distillation run."""
    data = (f"LibriSpeech {' + '.join(data_args.train_splits)}" if data_args.librispeech_root
            else f"{data_args.dataset_name} ({' + '.join(data_args.train_splits)})")
    return {
        "teacher": model_args.teacher,
        "student": " ".join(filter(None, [model_args.student_config or model_args.student_preset,
                                          model_args.config_overrides])),
        "teacher layers": " ".join(map(str, layer_map)),
        "data": data,
        **_objective_rows(distill_args),
        "optimizer": f"AdamW lr {training_args.learning_rate}, betas ({training_args.adam_beta1}, "
                     f"{training_args.adam_beta2}), eps {training_args.adam_epsilon}, "
                     f"weight decay {training_args.weight_decay}",
        "schedule": f"{getattr(training_args.lr_scheduler_type, 'value', training_args.lr_scheduler_type)}, "
                    f"warmup {training_args.warmup_steps} (below 1: a fraction of all steps)",
        "batch": _batch(training_args),
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
    }


def _objective_rows(distill_args: DistillationArguments) -> dict[str, str]:
    """The recipe rows of the distillation objective: which one, and its settings."""
    if distill_args.objective == "star":
        return {"objective": "STaR (temporal Gram matrices, unmasked)",
                "loss": f"terms {distill_args.star_terms}, normalisation {distill_args.star_normalisation}"}
    return {"objective": "masking distillation",
            "mask": f"prob {distill_args.mask_prob}, length {distill_args.mask_length} "
                    f"({distill_args.mask_length_distribution}), min space {distill_args.mask_min_space}",
            "loss": f"{distill_args.loss_type}, hint weight {distill_args.hint_weight}, "
                    f"last {distill_args.last_weight}"}


# ----------------------------------------------------------------------------------------------
# A CTC model (run_asr_ctc.py)
# ----------------------------------------------------------------------------------------------


def _conv_encoder_frozen(model: ArmHubertPreTrainedModel) -> bool:
    """Whether training left the student's conv feature encoder out (`--freeze_feature_encoder`)."""
    return not any(p.requires_grad for p in model.armhubert.feature_extractor.parameters())


def asr_model_card(model: ArmHubertPreTrainedModel, student: StudentSourceArguments, data_args: AsrDataArguments,
                   training_args: TrainingArguments, metrics: dict[str, float], units: str = "characters") -> ModelCard:
    """A card for a fine-tuned CTC model: what it is, how to use it, its results and recipe.

    `data_args` are run_asr_ctc.py's (with --snips_root); `units` is the kind of target the model emits.
    """
    name = model_name(training_args)
    source = _fine_tuned_from(student)
    superb = isinstance(model, ArmHubertForSuperbCTC)
    task, emitted = _CTC_TASKS[units]
    columns = {metric: _METRIC_TITLES[metric] for metric in TASK_METRICS[units]}
    head = (f"SUPERB's downstream protocol: the student frozen, a softmax-weighted sum of its "
            f"{model.config.superb_features.replace('_', ' ')} features"
            f"{' (SUPERB SpecAugment in training)' if model.config.superb_spec_augment else ''}, "
            f"{model.config.superb_lstm_layers} BiLSTM "
            f"layers of {model.config.superb_lstm_hidden_size} units and a CTC layer" if superb
            else "a CTC layer on the last layer, the whole student fine-tuned"
                 + (" (conv encoder frozen)" if _conv_encoder_frozen(model) else ""))
    train_splits = " + ".join(data_args.train_splits)
    data = (f"LibriSpeech {train_splits}" if data_args.librispeech_root
            else f"Audio SNIPS {train_splits}" if data_args.snips_root
            else f"{data_args.dataset_name} ({train_splits})")
    eval_split = " + ".join(data_args.eval_splits)
    first = next(iter(columns))
    results = [f"| split | {' | '.join(columns.values())} | real-time factor |", "|---|" + "---|" * (len(columns) + 1)]
    for prefix in sorted({key.removesuffix(f"_{first}") for key in metrics if key.endswith(f"_{first}")}):
        split = eval_split if prefix == "eval" else prefix.removeprefix("predict_")
        values = " | ".join(f"{100 * metrics[f'{prefix}_{metric}']:.2f} %" for metric in columns)
        results.append(f"| {split} | {values} | {metrics[prefix + '_rtf']:.4f} |")
    card_data = _card_data("automatic-speech-recognition",
                           ["audio", "speech", "ctc", "armhubert", "recycle-and-distill"]
                           + (["superb"] if superb else []), base_model=hub_base_model(source), metrics=list(columns))
    intro = (f"{task} with an ArmHubert student (Recycle-and-Distill, [paper]({PAPER}))\n"
             f"from `{source}`, with {head}. Greedy CTC decoding over {emitted}, no language model.")
    return _card(card_data, name, intro, {
        "Usage": _pipeline_usage(name, "automatic-speech-recognition", "asr", '("speech.flac")["text"]'),
        "Results": _results(results),
        "Training": f"Fine-tuned with `run_asr_ctc.py` of the armhubert project on {data}: "
                    f"{fine_tuning_recipe(training_args)}",
    })


# ----------------------------------------------------------------------------------------------
# An utterance classifier (run_audio_classification.py)
# ----------------------------------------------------------------------------------------------


def classification_model_card(model: ArmHubertForSequenceClassification, student: StudentSourceArguments,
                              data_args: ClassificationDataArguments, training_args: TrainingArguments,
                              metrics: dict[str, float]) -> ModelCard:
    """A card for a fine-tuned classifier: what it is, how to use it, its results and recipe."""
    name = model_name(training_args)
    source = _fine_tuned_from(student)
    config = model.config
    superb = config.classifier_mode == "superb"
    features = (f"a softmax-weighted sum of its {config.superb_features.replace('_', ' ')} features"
                if model.featurizer is not None else "its last layer")
    head = (f"SUPERB's utterance-level protocol: the student frozen, {features}, a frame-wise Linear("
            f"{config.classifier_proj_size}), mean pooling over the real frames and a linear classifier" if superb
            else f"the whole student fine-tuned on {features}, a frame-wise Linear({config.classifier_proj_size}), "
                 "mean pooling and a linear classifier")
    if config.classifier_slot_names:
        classes = "; ".join(f"{slot}: {block.stop - block.start} values" for slot, block in config.slot_slices)
        output = (f"Three single-label decisions ({classes}) from one output layer; the pipeline returns their "
                  "best values joined with \"|\".")
    else:
        shown = ", ".join(config.id2label[i] for i in range(min(config.num_labels, 12)))
        output = f"{config.num_labels} classes: {shown}{', ...' if config.num_labels > 12 else ''}."
    data = (f"{data_args.corpus} ({' + '.join(data_args.train_splits)})" if data_args.corpus
            else f"{data_args.dataset_name} ({' + '.join(data_args.train_splits)})")
    results = ["| split | accuracy | utterances |", "|---|---|---|"]
    for prefix in sorted({key.removesuffix("_accuracy") for key in metrics if key.endswith("_accuracy")}):
        split = " + ".join(data_args.eval_splits) if prefix == "eval" else prefix.removeprefix("predict_")
        results.append(f"| {split} | {100 * metrics[prefix + '_accuracy']:.2f} % | {metrics[prefix + '_utterances']} |")
    card_data = _card_data("audio-classification",
                           ["audio", "speech", "audio-classification", "armhubert", "recycle-and-distill"]
                           + (["superb"] if superb else []),
                           base_model=hub_base_model(source), metrics=["accuracy"])
    intro = (f"Audio classification with an ArmHubert student (Recycle-and-Distill, [paper]({PAPER}))\n"
             f"from `{source}`, with {head}. {output}")
    return _card(card_data, name, intro, {
        "Usage": _pipeline_usage(name, "audio-classification", "classify", '("speech.wav")[0]["label"]'),
        "Results": _results(results),
        "Training": f"Fine-tuned with `run_audio_classification.py` of the armhubert project on {data}: "
                    f"{fine_tuning_recipe(training_args)}",
    })


# ----------------------------------------------------------------------------------------------
# A speaker verification model (run_speaker_verification.py)
# ----------------------------------------------------------------------------------------------


def speaker_verification_model_card(model: ArmHubertForXVector, student: StudentSourceArguments,
                                    training_args: TrainingArguments, metrics: dict[str, float]) -> ModelCard:
    """A card for a speaker verification model: what it is, how to score two files, its EERs and recipe."""
    name = model_name(training_args)
    source = _fine_tuned_from(student)
    config = model.config
    effects = InputEffects.from_config(config)
    results = ["| trials | EER | threshold | scored trials |", "|---|---|---|---|"]
    for prefix in sorted({key.removesuffix("_eer") for key in metrics if key.endswith("_eer")}):
        if prefix in ("eval", "predict_test"):
            trials = "held-out training speakers" if prefix == "eval" else "test"
            results.append(f"| {trials} | {100 * metrics[prefix + '_eer']:.2f} % | "
                           f"{metrics[prefix + '_eer_threshold']:.4f} | {metrics[prefix + '_trials']} |")
    selected = metrics.get("predict_test_selected_checkpoint")
    selection = (f"\n\nThe test row is the lowest test EER of the saved checkpoints ({selected}), SUPERB's selection."
                 if selected else "")
    card_data = _card_data(None, ["audio", "speech", "speaker-verification", "x-vector", "armhubert",
                                  "recycle-and-distill", "superb"], base_model=hub_base_model(source), metrics=["eer"])
    intro = (f"Speaker verification with an ArmHubert student (Recycle-and-Distill, [paper]({PAPER})) from "
             f"`{source}`, with SUPERB's x-vector head on the frozen student: a weighted sum of its layers, "
             f"{len(config.tdnn_dim)} TDNN layers, mean and standard deviation pooling, a "
             f"{config.xvector_output_dim}-wide embedding; trained with AM-softmax over {config.num_labels} "
             f"speakers. Input effects applied to every file: {effects}.")
    usage = f"""```python
from modeling_armhubert import ArmHubertForXVector             # with the armhubert project installed
from armhubert_training.verification_trainer import verify

model = ArmHubertForXVector.from_pretrained("{name}")
verify(model, "a.wav", "b.wav")    # cosine of the embeddings; above the EER threshold = same speaker
```"""
    return _card(card_data, name, intro, {
        "Usage": usage,
        "Results": _results(results) + selection,
        "Training": f"Trained with `run_speaker_verification.py` of the armhubert project on VoxCeleb1 (dev/wav): "
                    f"{fine_tuning_recipe(training_args)}",
    })


# ----------------------------------------------------------------------------------------------
# A speaker diarization model (run_diarization.py)
# ----------------------------------------------------------------------------------------------


def diarization_model_card(model: ArmHubertForSuperbDiarization, student: StudentSourceArguments,
                           training_args: TrainingArguments, metrics: dict[str, float]) -> ModelCard:
    """A card for a SUPERB diarization model: what it is, how to run it, its frame accuracy and DER, its recipe."""
    name = model_name(training_args)
    source = _fine_tuned_from(student)
    config = model.config
    rows = ["| split | frame accuracy | DER (lowest setting) | threshold | median filter |", "|---|---|---|---|---|"]
    for prefix in sorted({key.removesuffix("_accuracy") for key in metrics if key.endswith("_accuracy")}):
        der = metrics.get(f"{prefix}_der")
        der_cells = (f"{100 * der:.2f} % | {metrics[prefix + '_der_threshold']:g} | "
                     f"{int(metrics[prefix + '_der_median'])}" if der is not None else "– | – | –")
        rows.append(f"| {prefix} | {metrics[prefix + '_accuracy']:.4f} | {der_cells} |")
    card_data = _card_data(None, ["audio", "speech", "speaker-diarization", "armhubert", "recycle-and-distill",
                                  "superb"], base_model=hub_base_model(source), metrics=["der"])
    intro = (f"Speaker diarization with an ArmHubert student (Recycle-and-Distill, [paper]({PAPER})) from "
             f"`{source}`, with SUPERB's head on the frozen student: a weighted sum of its layers, one "
             f"unidirectional LSTM({config.diarization_lstm_hidden_size}) and a Linear giving the activity of each "
             f"of {config.num_labels} speakers every 20 ms, trained with the permutation-invariant BCE.")
    usage = f"""```python
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioFrameClassification

model = AutoModelForAudioFrameClassification.from_pretrained("{name}", trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained("{name}")
inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")   # 16 kHz mono, float
with torch.no_grad():
    activity = torch.sigmoid(model(**inputs).logits)   # (1, frames, speakers): speech of each, every 20 ms
```"""
    return _card(card_data, name, intro, {
        "Usage": usage,
        "Results": _results(rows),
        "Training": f"Trained with `run_diarization.py` of the armhubert project on LibriMix (s3prl's Kaldi-style "
                    f"folders): {fine_tuning_recipe(training_args)}",
    })
