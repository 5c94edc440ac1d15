"""Write tests/fixtures/saved-<version>/: tiny model folders saved by this checkout, and their outputs.

Every later version must load these folders (with its own classes, and with the Auto classes and
the code saved in each folder) and give the same outputs: tests/test_saved_models.py checks it.
Run this once per saved-format version, from the repository root, and commit the folder:

    python -m tools.make_saved_model_fixture tests/fixtures/saved-v0.1

A model class added later gets a fixture of its own, written with `--folders`, so that the folders
already committed stay as the earlier code saved them:

    python -m tools.make_saved_model_fixture tests/fixtures/saved-v0.1-speaker --folders xvector diarization

Each folder is saved the way the scripts save their models: the config built as the script builds
it, the task model loaded from the saved student with `from_pretrained(student, config=...)`,
then `save_pretrained`, which writes config.json, model.safetensors and the two code files. The code
files, the same in every folder, are kept once, in `code/` (the test puts them back into each folder
before loading with the folder's own code). The tokenizer, feature extractor and pipeline files the scripts also write are left out: loading the
model does not read them. The models are tiny (a few thousand parameters) to keep the fixture small.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import (
    ArmHubertForCTC,
    ArmHubertForSequenceClassification,
    ArmHubertForSuperbCTC,
    ArmHubertForSuperbDiarization,
    ArmHubertForXVector,
    ArmHubertModel,
)

# The folders, the class each was saved from, and the Auto class that loads it.
FOLDERS = {
    "student": ("ArmHubertModel", "AutoModel"),
    "ctc-linear": ("ArmHubertForCTC", "AutoModelForCTC"),
    "ctc-superb": ("ArmHubertForSuperbCTC", "AutoModelForCTC"),
    "classifier-superb": ("ArmHubertForSequenceClassification", "AutoModelForAudioClassification"),
    "classifier-fine-tune": ("ArmHubertForSequenceClassification", "AutoModelForAudioClassification"),
    "xvector": ("ArmHubertForXVector", "AutoModelForAudioXVector"),
    "diarization": ("ArmHubertForSuperbDiarization", "AutoModelForAudioFrameClassification"),
}
CLASSES = {model_class.__name__: model_class for model_class in (
    ArmHubertModel, ArmHubertForCTC, ArmHubertForSuperbCTC, ArmHubertForSequenceClassification, ArmHubertForXVector,
    ArmHubertForSuperbDiarization)}
REFERENCE_FILE = "reference.pt"
# As the scripts write them into a task model's config (run_asr_ctc.py, run_audio_classification.py).
ASR_PIPELINES = {"automatic-speech-recognition": {
    "impl": "asr_pipeline.ArmHubertSpeechRecognitionPipeline", "pt": ["AutoModelForCTC"], "type": "multimodal"}}
CLASSIFICATION_PIPELINES = {"audio-classification": {
    "impl": "classification_pipeline.ArmHubertAudioClassificationPipeline",
    "pt": ["AutoModelForAudioClassification"], "type": "audio"}}


def student_config() -> ArmHubertConfig:
    """A 2-layer ARM student with distillation heads, as run_distill.py configures one (no own SpecAugment)."""
    preset = ArmHubertConfig.from_preset("armhubert")
    return ArmHubertConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        conv_dim=[4, 8, 8, 8, 8, 8, 16, 16, 16], conv_kernel=preset.conv_kernel, conv_stride=preset.conv_stride,
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, reuse_pattern=[True, False],
        layer_grad_scale=True, projection_dim=12, mask_time_prob=0.0)


def task_configs(student: ArmHubertConfig) -> dict[str, ArmHubertConfig]:
    """The student's config turned into each task model's, with the fields the scripts set."""
    ctc = dict(vocab_size=7, pad_token_id=0, bos_token_id=None, eos_token_id=None, ctc_loss_reduction="mean")
    labels = ["a=x", "a=y", "b=x", "b=y", "b=z"]
    slots = dict(num_labels=5, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                 classifier_slot_names=["a", "b"], classifier_slot_sizes=[2, 3])
    keywords = dict(num_labels=3, id2label={0: "yes", 1: "no", 2: "up"}, label2id={"yes": 0, "no": 1, "up": 2})
    fine_tune = dict(layer_grad_scale=False, apply_spec_augment=True, mask_time_prob=0.05, mask_time_length=2)
    speakers = dict(num_labels=3, id2label={0: "id10001", 1: "id10002", 2: "id10003"},
                    label2id={"id10001": 0, "id10002": 1, "id10003": 2})
    turns = dict(num_labels=2, id2label={0: "speaker_0", 1: "speaker_1"}, label2id={"speaker_0": 0, "speaker_1": 1})
    return {
        "ctc-linear": student.with_overrides(None, **ctc, **fine_tune, projection_dim=0,
                                             reuse_mode="legacy_double_softmax",  # as converted authors' students
                                             custom_pipelines=ASR_PIPELINES),
        "ctc-superb": student.with_overrides(None, **ctc, superb_features="projected", superb_projection_dim=8,
                                             superb_lstm_hidden_size=4, superb_lstm_layers=2, superb_spec_augment=True,
                                             custom_pipelines=ASR_PIPELINES),
        "classifier-superb": student.with_overrides(None, **keywords, classifier_mode="superb", classifier_proj_size=6,
                                                    superb_features="projected", bos_token_id=None, eos_token_id=None,
                                                    custom_pipelines=CLASSIFICATION_PIPELINES),
        "classifier-fine-tune": student.with_overrides(
            None, **slots, **fine_tune, classifier_mode="fine_tune", classifier_proj_size=6,
            use_weighted_layer_sum=True, superb_features="hidden_states", projection_dim=0, bos_token_id=None,
            eos_token_id=None, custom_pipelines=CLASSIFICATION_PIPELINES),
        # As run_speaker_verification.py and run_diarization.py configure them, with tiny heads.
        "xvector": student.with_overrides(None, **speakers, superb_features="projected", tdnn_dim=[8, 8, 8, 8, 12],
                                          xvector_output_dim=6, am_softmax_scale=30.0, am_softmax_margin=0.4,
                                          bos_token_id=None, eos_token_id=None),
        "diarization": student.with_overrides(None, **turns, superb_features="hidden_states", projection_dim=0,
                                              diarization_lstm_hidden_size=6, bos_token_id=None, eos_token_id=None),
    }


def reference_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 8000) waveforms, the second right-padded after 6000 samples (18 frames: the x-vector head's
    statistics need 16), and their attention mask. Each fixture keeps the batch it was made with."""
    values = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 8000, dtype=torch.long)
    values[1, 6000:], mask[1, 6000:] = 0.0, 0
    return values, mask


def model_outputs(model, values: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the test compares: the first output (last_hidden_state or logits), an x-vector model's
    embeddings and, for a bare student, every hidden state and distillation-head output."""
    with torch.no_grad():
        out = model.eval()(values, attention_mask=mask, output_hidden_states=True)
    outputs = {"first": out[0]}
    if getattr(out, "embeddings", None) is not None:
        outputs["embeddings"] = out.embeddings
    if getattr(out, "projected_hidden_states", None) is not None:
        outputs["hidden_states"] = torch.stack(out.hidden_states)
        outputs["projected_hidden_states"] = torch.stack(out.projected_hidden_states)
    return outputs


# Where the code files of the saved folders are kept once, and which they are.
CODE_FOLDER = "code"
CODE_FILES = ("configuration_armhubert.py", "modeling_armhubert.py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="The fixture folder to write, e.g. tests/fixtures/saved-v0.1.")
    parser.add_argument("--folders", nargs="+", choices=list(FOLDERS), default=list(FOLDERS),
                        help="The model folders to save (default: all). The bare student they are loaded from is "
                             "saved only when named.")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    values, mask = reference_batch()

    torch.manual_seed(0)
    student = ArmHubertModel(student_config())
    student_dir = args.output_dir / "student"
    student.save_pretrained(student_dir)
    models = {"student": student}
    for name, config in task_configs(student.config).items():
        if name not in args.folders:
            continue
        torch.manual_seed(1)
        model = CLASSES[FOLDERS[name][0]].from_pretrained(student_dir, config=config)
        # Trained heads are not at their init values (the SUPERB layer weights start all zero).
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if not param_name.startswith("armhubert."):
                    param.add_(0.1 * torch.randn(param.shape))
        model.save_pretrained(args.output_dir / name)
        models[name] = model
    if "student" not in args.folders:
        shutil.rmtree(student_dir)
        del models["student"]

    reference = {"input_values": values, "attention_mask": mask,
                 "outputs": {name: model_outputs(model, values, mask) for name, model in models.items()}}
    torch.save(reference, args.output_dir / REFERENCE_FILE)
    folders = {name: FOLDERS[name] for name in models}
    (args.output_dir / "folders.json").write_text(json.dumps(folders, indent=2) + "\n")
    keep_code_once(args.output_dir, list(models))


def keep_code_once(output_dir: Path, folders: list[str]) -> None:
    """Move the code files `save_pretrained` copied into every folder to one `code/` folder."""
    code = output_dir / CODE_FOLDER
    code.mkdir(exist_ok=True)
    for name in CODE_FILES:
        copies = {(output_dir / folder / name).read_text() for folder in folders}
        assert len(copies) == 1, f"{name} differs between the saved folders"
        (code / name).write_text(copies.pop())
        for folder in folders:
            (output_dir / folder / name).unlink()


if __name__ == "__main__":
    main()
