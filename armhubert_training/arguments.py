"""The scripts' command lines: argument dataclasses, one concept each, and how they are parsed.

A script gives `HfArgumentParser` the concepts it uses, composed into one dataclass per side (e.g.
run_asr_ctc.py's `AsrModelArguments(FineTuningArguments, SuperbFeatureArguments, CtcHeadArguments,
StudentSourceArguments)`, at the end of this module), so that every option in its `--help` does something in that script and an
option name means the same in every script (tests/test_script_options.py checks both). A concept's
checks run in its `__post_init__`, which ends with `super().__post_init__()`: a dataclass composed of
several concepts runs the checks of all of them.

Command lines have the form `script.py [config.yaml] [--option value ...]`: the YAML file gives the
recipe, options on the command line override it. The YAML is turned into the equivalent options
placed before the user's, so both go through the same `HfArgumentParser` validation and the last
value of an option wins.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser

from configuration_armhubert import PRESETS, RECEPTIVE_FIELD_SAMPLES, ArmHubertConfig

from .audio import SAMPLING_RATE
from .corpora import CLASSIFICATION_CORPORA
from .corpora.hub import STREAMING_SHUFFLE_BUFFER

REPO = Path(__file__).resolve().parents[1]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the layout of the script's docstring and shows every default."""


def yaml_to_argv(path: str | Path) -> list[str]:
    """`{"max_steps": 10, "train_splits": ["a", "b"], "bf16": true}`
    -> `--max_steps 10 --train_splits a b --bf16 true`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        # PyYAML's message names neither the file nor, for some errors, where the problem is.
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{path}: invalid YAML{where}: {problem}. Fix the recipe there (options are written "
                         "'name: value', one per line).") from err
    if not isinstance(recipe, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(recipe).__name__}.")
    argv: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, list):
            argv.extend(str(item) for item in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        elif isinstance(value, bool):
            argv.append("true" if value else "false")
        else:
            argv.append(str(value))
    return argv


def parse_config_and_args(parser: HfArgumentParser, argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse an optional leading YAML file plus command-line overrides into the parser's dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = yaml_to_argv(argv[0]) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


class ArgumentConcept:
    """Base of the argument dataclasses: the end of the chain of their `__post_init__` checks."""

    def __post_init__(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# Model side
# ----------------------------------------------------------------------------------------------


@dataclass
class HubCacheArguments(ArgumentConcept):
    cache_dir: str | None = field(default=None, metadata={"help": "Where models downloaded from the hub are stored."})


@dataclass
class ConfigOverridesArguments(ArgumentConcept):
    config_overrides: str | None = field(default=None, metadata={
        "help": "JSON object of ArmHubertConfig fields to change, applied last, e.g. "
                "'{\"hidden_dropout\": 0.0, \"final_dropout\": 0.0}'. Unknown fields and values of the wrong type "
                "are refused."})

    def __post_init__(self) -> None:
        # A typo in the overrides stops the run here, before any data or model is loaded.
        ArmHubertConfig.parse_overrides(self.config_overrides, "--config_overrides")
        super().__post_init__()


@dataclass
class StudentSourceArguments(HubCacheArguments, ConfigOverridesArguments):
    """Where a task run's student comes from: a saved model, an authors' checkpoint, or a random preset."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "The student: a directory or hub id of an ArmHubert model (written by run_distill.py or "
                "armhubert_training.convert_original_checkpoint), or an authors' Lightning checkpoint (*.ckpt), "
                "converted into OUTPUT_DIR/converted-student first. A model this script fine-tuned is evaluated "
                "(or trained further) with its own head and its own vocabulary or classes. Use this or "
                "--random_student_preset."})
    random_student_preset: str | None = field(default=None, metadata={
        "help": f"A randomly initialised student of this preset, one of {sorted(PRESETS)}, for smoke tests."})

    def __post_init__(self) -> None:
        if (self.model_name_or_path is None) == (self.random_student_preset is None):
            raise ValueError("Give exactly one model source: --model_name_or_path (a student or fine-tuned model) "
                             f"or --random_student_preset; got {self.model_name_or_path!r} and "
                             f"{self.random_student_preset!r}.")
        if self.random_student_preset is not None and self.random_student_preset not in PRESETS:
            raise ValueError(f"Unknown --random_student_preset {self.random_student_preset!r}; choose one of "
                             f"{sorted(PRESETS)}.")
        super().__post_init__()


@dataclass
class FineTuningArguments(ArgumentConcept):
    """Full fine-tuning of the student, as Transformers fine-tunes wav2vec 2.0 / HuBERT: the conv feature
    encoder frozen, SpecAugment-style masking of the frames."""

    freeze_feature_encoder: bool = field(default=True, metadata={
        "help": "When the whole student is fine-tuned: do not train the conv feature encoder (standard for "
                "wav2vec 2.0 / HuBERT fine-tuning)."})
    mask_time_prob: float = field(default=0.05, metadata={
        "help": "When the whole student is fine-tuned: SpecAugment-style time masking, the probability of each "
                "frame to start a masked span (Transformers' default for wav2vec 2.0 / HuBERT fine-tuning)."})
    mask_time_length: int = field(default=10, metadata={
        "help": "When the whole student is fine-tuned: frames per time-mask span."})
    mask_feature_prob: float = field(default=0.0, metadata={
        "help": "When the whole student is fine-tuned: the probability of each channel to start a masked span "
                "of channels."})
    mask_feature_length: int = field(default=10, metadata={
        "help": "When the whole student is fine-tuned: channels per feature-mask span."})


@dataclass
class SuperbFeatureArguments(ArgumentConcept):
    superb_features: Literal["auto", "projected", "hidden_states"] = field(default="auto", metadata={
        "help": "Which of the student's per-layer features SUPERB's protocol reads (a learned weighted sum of them; "
                "query by example: each one by itself). 'projected': the outputs of "
                "the student's distillation heads, one per layer (the features the authors gave SUPERB); "
                "'hidden_states': the encoder input and every layer's output; 'auto': 'projected' when the student "
                "is frozen (SUPERB's protocol) and has heads, else 'hidden_states'."})


@dataclass
class CtcHeadArguments(ArgumentConcept):
    """The CTC model's head: a Linear layer on the last layer, or SUPERB's weighted sum, BiLSTM and CTC."""

    head: Literal["linear", "superb"] | None = field(default=None, metadata={
        "help": "'linear': full fine-tuning with a Linear CTC head on the last layer. 'superb': SUPERB's ASR "
                "protocol (frozen student, weighted sum of its layers, BiLSTM, CTC). Default: the head of a "
                "fine-tuned --model_name_or_path, else 'linear'."})
    superb_projection_dim: int = field(default=1024, metadata={
        "help": "--head superb: width of the Linear before the BiLSTM (SUPERB: 1024)."})
    superb_lstm_hidden_size: int = field(default=1024, metadata={
        "help": "--head superb: units per direction of each BiLSTM layer (SUPERB: 1024)."})
    superb_lstm_layers: int = field(default=2, metadata={
        "help": "--head superb: BiLSTM layers (SUPERB ASR and slot filling: 2; phoneme recognition: 0, the CTC "
                "layer then reads the projection)."})
    superb_lstm_dropout: float = field(default=0.2, metadata={
        "help": "--head superb: dropout after each BiLSTM layer (SUPERB: 0.2)."})
    superb_spec_augment: bool = field(default=False, metadata={
        "help": "--head superb: SUPERB's SpecAugment on the weighted-sum features while training (time warp "
                "window 5, 4 channel bands < 50 wide, 2 frame bands < 40 wide, zeroed), as SUPERB's ASR recipe "
                "does. Its sizes are ArmHubertConfig fields (superb_time_warp_window, ...): change them with "
                "--config_overrides."})
    ctc_loss_reduction: Literal["mean", "sum"] = field(default="mean", metadata={
        "help": "'mean': each utterance's CTC loss divided by its label length, averaged over the batch "
                "(PyTorch's and SUPERB's default); 'sum': summed over the batch."})
    ctc_zero_infinity: bool = field(default=True, metadata={
        "help": "Zero the loss of utterances whose transcript is too long for their frames (infinite CTC loss) "
                "instead of letting it break training."})


@dataclass
class ClassifierHeadArguments(ArgumentConcept):
    """The utterance classifier: SUPERB's protocol on a frozen student, or the whole student fine-tuned."""

    classifier_mode: Literal["superb", "fine_tune"] | None = field(default=None, metadata={
        "help": "'superb': SUPERB's protocol (frozen student, weighted sum of its layers, Linear, mean pooling, "
                "Linear). 'fine_tune': the whole student trained. Default: the mode of a fine-tuned "
                "--model_name_or_path, else 'superb'."})
    classifier_proj_size: int = field(default=256, metadata={
        "help": "Width of the frame-wise Linear before mean pooling (SUPERB: 256)."})
    use_weighted_layer_sum: bool = field(default=False, metadata={
        "help": "--classifier_mode fine_tune: classify a learned weighted sum of the layers instead of the last one."})

    def __post_init__(self) -> None:
        if self.classifier_proj_size < 1:
            raise ValueError(f"--classifier_proj_size must be a positive integer; got {self.classifier_proj_size}.")
        super().__post_init__()



@dataclass
class DiarizationHeadArguments(ArgumentConcept):
    """SUPERB's speaker diarization head: an LSTM over the weighted sum, one activity output per speaker."""

    num_speakers: int = field(default=2, metadata={
        "help": "Speakers per recording, one output each (SUPERB's Libri2Mix: 2). A recording with more stops the "
                "run at start-up."})
    diarization_lstm_hidden_size: int = field(default=512, metadata={
        "help": "Units of the unidirectional LSTM (SUPERB: 512)."})

    def __post_init__(self) -> None:
        for name in ("num_speakers", "diarization_lstm_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer; got {getattr(self, name)}.")
        super().__post_init__()

@dataclass
class XVectorHeadArguments(ArgumentConcept):
    """The speaker verification head's training objective (its layer sizes are ArmHubertConfig fields)."""

    am_softmax_scale: float = field(default=30.0, metadata={
        "help": "Scale of the AM-softmax objective (SUPERB: 30). The TDNN sizes are ArmHubertConfig fields "
                "(tdnn_dim, tdnn_kernel, tdnn_dilation, xvector_output_dim): change them with --config_overrides."})
    am_softmax_margin: float = field(default=0.4, metadata={
        "help": "Additive margin of the AM-softmax objective (SUPERB: 0.4)."})


@dataclass
class TeacherArguments(HubCacheArguments):
    """The teacher a student is distilled from, and which of its layers each student layer learns."""

    teacher: str = field(default="facebook/hubert-base-ls960", metadata={
        "help": "Teacher: a hub id or a local directory of a HubertModel, WavLMModel or Wav2Vec2Model "
                "(e.g. facebook/hubert-base-ls960, microsoft/wavlm-base)."})
    teacher_layer_map: list[int] | None = field(default=None, metadata={
        "help": "Teacher layer (1-based) each student layer learns from, e.g. 2 4 6 8 10 12 for a 6-layer "
                "student of a 12-layer teacher. Default: the same layer when the depths match, else evenly spaced."})


@dataclass
class DistilledStudentArguments(ConfigOverridesArguments):
    """The architecture a teacher is distilled into (its distillation heads are sized from the teacher)."""

    student_preset: str = field(default="armhubert", metadata={
        "help": f"Student architecture, one of {sorted(PRESETS)}. Its heads are sized from the teacher."})
    student_config: str | None = field(default=None, metadata={
        "help": "A config.json of an ArmHubertConfig to use instead of --student_preset."})


@dataclass
class MixedPrecisionArguments(ArgumentConcept):
    precision: Literal["auto", "bf16", "fp16", "no"] = field(default="auto", metadata={
        "help": "Mixed precision: 'auto' = --bf16/--fp16 or accelerate launch's --mixed_precision if given, else "
                "bf16 on GPUs that support it, fp16 with loss scaling on older GPUs, fp32 on a CPU; 'bf16', 'fp16' "
                "or 'no' (fp32) choose it outright (contradicting one of those is an error)."})


# ----------------------------------------------------------------------------------------------
# Data side: where the audio comes from and which utterances to use.
#
# `DataSourceArguments` refuses anything but exactly one source; each source concept (LibriSpeech,
# Audio SNIPS, a `datasets` dataset, a classification corpus) adds its option to `data_sources` and
# may name its own default splits, which `SplitArguments` fills in. A concept's `__post_init__`
# first hands on to the concepts it builds on, then checks its own options, so the source is settled
# before anything that depends on it is checked.
# ----------------------------------------------------------------------------------------------



class DataSourceArguments(ArgumentConcept):
    """Exactly one data source: each source concept below adds its option to `data_sources` (and may
    name its own default splits)."""

    def data_sources(self) -> dict[str, str]:
        """Option (attribute name) -> what it reads, for every source of this script (in --help order);
        exactly one is given."""
        return {}

    def default_splits(self) -> dict[str, str]:
        """The split each role ("train", "eval", "predict") reads when none is named: `datasets`' usual
        names, unless the source given names its own."""
        return {"train": "train", "eval": "validation", "predict": "test"}

    def __post_init__(self) -> None:
        super().__post_init__()
        sources = self.data_sources()
        for name in sources:
            # An empty value unsets a source given by a YAML recipe: --librispeech_root "" --dataset_name X
            setattr(self, name, getattr(self, name) or None)
        if sum(getattr(self, name) is not None for name in sources) != 1:
            raise ValueError(
                "Give exactly one data source: "
                + ", ".join(f"--{name} ({what})" for name, what in sources.items()) + "; got "
                + ", ".join(f"--{name} {getattr(self, name)!r}" for name in sources) + "."
            )


@dataclass
class HeaderReadingArguments(ArgumentConcept):
    """How many workers read audio headers when a corpus is indexed."""

    preprocessing_num_workers: int | None = field(default=None, metadata={
        "help": "Workers reading audio headers when indexing (threads for a local corpus folder, processes for "
                "a map-style `datasets` dataset)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            raise ValueError(f"--preprocessing_num_workers must be a positive integer; got "
                             f"{self.preprocessing_num_workers}.")


@dataclass
class SplitArguments(HeaderReadingArguments, DataSourceArguments):
    """The splits of the data source to train and evaluate on, how much of them, and how they are indexed."""

    train_splits: list[str] | None = field(default=None, metadata={
        "help": "What to train on, read as one split: split names of the data source (LibriSpeech's split "
                "folders, e.g. train-clean-100 train-clean-360 train-other-500; the other corpora's, named in "
                "their option's help; for a `datasets` dataset, split names or expressions, e.g. train.100 or "
                "'train[:1000]'). Default: train-clean-100 for LibriSpeech, else train."})
    eval_splits: list[str] | None = field(default=None, metadata={
        "help": "What to evaluate on (and, with --load_best_model_at_end, choose the best checkpoint on), read "
                "like --train_splits. Default: dev-clean for LibriSpeech, valid for Audio SNIPS, dev for LibriMix, else "
                "validation."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Use only the first N training utterances (after filtering), for quick runs."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Use only the first N evaluation utterances (after filtering), for quick runs."})

    def __post_init__(self) -> None:
        super().__post_init__()
        defaults = self.default_splits()
        if self.train_splits is None:
            self.train_splits = [defaults["train"]]
        if self.eval_splits is None:
            self.eval_splits = [defaults["eval"]]
        for name in ("train_splits", "eval_splits"):
            if not getattr(self, name) or not all(getattr(self, name)):
                raise ValueError(f"--{name} needs at least one split name, and no empty one; "
                                 f"got {getattr(self, name)}.")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer; got {getattr(self, name)}.")


@dataclass
class PredictionSplitArguments(SplitArguments):
    """What --do_predict runs on, each split scored on its own."""

    predict_splits: list[str] | None = field(default=None, metadata={
        "help": "What --do_predict runs on, each split scored on its own, named like --train_splits (e.g. "
                "'test[:100]' for a `datasets` dataset). Default: test-clean for LibriSpeech, else test."})
    max_predict_samples: int | None = field(default=None, metadata={
        "help": "Predict on only the first N utterances of each prediction split, for quick runs."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.predict_splits is None:
            self.predict_splits = [self.default_splits()["predict"]]
        if not self.predict_splits or not all(self.predict_splits):
            raise ValueError(f"--predict_splits needs at least one split name, and no empty one; "
                             f"got {self.predict_splits}.")
        if self.max_predict_samples is not None and self.max_predict_samples < 1:
            raise ValueError(f"--max_predict_samples must be a positive integer; got {self.max_predict_samples}.")


@dataclass
class LibriSpeechArguments(DataSourceArguments):
    """A local LibriSpeech folder (`corpora.librispeech`)."""

    librispeech_root: str | None = field(default=None, metadata={
        "help": "Local LibriSpeech corpus in its original layout: the folder containing LibriSpeech/ (or "
                "LibriSpeech/ itself). One of the data sources: give exactly one."})

    def data_sources(self) -> dict[str, str]:
        return {**super().data_sources(), "librispeech_root": "a local LibriSpeech folder"}

    def default_splits(self) -> dict[str, str]:
        if self.librispeech_root is not None:
            return {"train": "train-clean-100", "eval": "dev-clean", "predict": "test-clean"}
        return super().default_splits()


@dataclass
class SnipsArguments(DataSourceArguments):
    """A local Audio SNIPS folder (`corpora.snips`), SUPERB's slot filling corpus."""

    snips_root: str | None = field(default=None, metadata={
        "help": "Local Audio SNIPS corpus (SUPERB's slot filling) as s3prl's preparation writes it: the folder "
                "containing SNIPS/ (or SNIPS/ itself), with all.iob.snips.txt, slots.txt and train/ valid/ test/ wav "
                "folders. Splits: train, valid (default for evaluation), test, each read by its own voices. One of "
                "the data sources: give exactly one."})

    def data_sources(self) -> dict[str, str]:
        return {**super().data_sources(), "snips_root": "a local Audio SNIPS folder"}

    def default_splits(self) -> dict[str, str]:
        if self.snips_root is not None:
            return {"train": "train", "eval": "valid", "predict": "test"}
        return super().default_splits()


@dataclass
class HubDatasetArguments(DataSourceArguments):
    """A `datasets` dataset (`corpora.hub`)."""

    dataset_name: str | None = field(default=None, metadata={
        "help": "A `datasets` dataset to read instead of a local corpus folder: a hub name or a local path "
                "(parquet/arrow/CSV/JSON files). One of the data sources: give exactly one."})
    dataset_config: str | None = field(default=None, metadata={
        "help": "Configuration name of --dataset_name, if it has several."})
    audio_column: str = field(default="audio", metadata={"help": "Column of --dataset_name holding the audio."})

    def data_sources(self) -> dict[str, str]:
        return {**super().data_sources(), "dataset_name": "a `datasets` dataset"}


@dataclass
class TranscriptColumnArguments(HubDatasetArguments):
    """Where a `datasets` dataset keeps its transcripts."""

    text_column: str = field(default="text", metadata={
        "help": "Column of --dataset_name holding the transcript; an empty string for audio-only data (items "
                "then have text '')."})


@dataclass
class StreamingArguments(HubDatasetArguments):
    """Reading a `datasets` dataset as a stream."""

    streaming: bool = field(default=False, metadata={
        "help": "Read --dataset_name lazily instead of downloading it first. The datasets then have no length "
                "(set --max_steps) and cannot be grouped by length; training data is shuffled within a buffer of "
                f"{STREAMING_SHUFFLE_BUFFER} examples."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.streaming and self.dataset_name is None:
            raise ValueError("--streaming applies to --dataset_name only; a local corpus folder is indexed instead.")


@dataclass
class HubLabelArguments(HubDatasetArguments):
    """Where a `datasets` dataset keeps its labels."""

    label_column: str = field(default="label", metadata={
        "help": "Column of --dataset_name holding the label (class names, or a ClassLabel)."})


@dataclass
class ClassificationCorpusArguments(DataSourceArguments):
    """A classification corpus in its download layout (`corpora`: one reader per corpus)."""

    corpus: str | None = field(default=None, metadata={
        "help": f"A corpus in its original download layout, one of {list(CLASSIFICATION_CORPORA)}, under "
                "--corpus_root; its splits are train, validation and test. One of the data sources: give exactly "
                "one.", "choices": CLASSIFICATION_CORPORA})
    corpus_root: str | None = field(default=None, metadata={
        "help": "The corpus folder: speech_commands: the extracted speech_commands_v0.01 archive; fluent_commands: "
                "fluent_speech_commands_dataset/ (with data/*.csv); voxceleb1: the folder holding the extracted "
                "archives as dev/wav and test/wav (or wav/); iemocap: IEMOCAP_full_release/ (Session1..5); "
                "folder: <root>/<split>/<label>/[subfolders/]<audio file>."})
    speech_commands_test_root: str | None = field(default=None, metadata={
        "help": "speech_commands: the extracted speech_commands_test_set_v0.01 archive (the test split)."})
    voxceleb1_split_file: str | None = field(default=None, metadata={
        "help": "voxceleb1: the identification split file (iden_split.txt); default <corpus_root>/iden_split.txt."})
    fold: int = field(default=1, metadata={
        "help": "iemocap: the session held out as the test split (1-5); SUPERB reports the mean over the 5 folds."})

    def data_sources(self) -> dict[str, str]:
        return {**super().data_sources(), "corpus": "a corpus folder, with --corpus_root"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.corpus is not None and not self.corpus_root:
            raise ValueError(f"--corpus {self.corpus} needs --corpus_root, the folder the corpus was extracted to.")

    @property
    def split_file(self) -> Path:
        """The VoxCeleb1 identification split file: --voxceleb1_split_file, else the one in --corpus_root."""
        return Path(self.voxceleb1_split_file or Path(self.corpus_root) / "iden_split.txt")


@dataclass
class LibriMixArguments(DataSourceArguments):
    """Libri2Mix in the Kaldi-style folders of s3prl's LibriMix preparation (`corpora.librimix`), SUPERB's
    speaker diarization corpus."""

    librimix_root: str | None = field(default=None, metadata={
        "help": "The folder s3prl's LibriMix scripts/prepare_diarization.py writes (s3prl's "
                "downstream/diarization/data): train/, dev/ and test/, each with wav.scp, segments, utt2spk, "
                "reco2dur and rttm. Splits: train, dev (default for evaluation), test. One of the data sources: "
                "give exactly one."})

    def data_sources(self) -> dict[str, str]:
        return {**super().data_sources(), "librimix_root": "a LibriMix diarization folder"}

    def default_splits(self) -> dict[str, str]:
        if self.librimix_root is not None:
            return {"train": "train", "eval": "dev", "predict": "test"}
        return super().default_splits()


@dataclass
class DiarizationChunkArguments(ArgumentConcept):
    """How recordings are cut for the diarization head."""

    chunk_frames: int = field(default=2000, metadata={
        "help": "Label frames (20 ms each) per chunk; recordings are cut into whole chunks and a shorter last one, "
                "each run through the LSTM on its own (SUPERB: 2000, i.e. 40 s, so a Libri2Mix mixture is one "
                "chunk)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chunk_frames < 2:
            raise ValueError(f"--chunk_frames must be at least 2 (one frame is shorter than the receptive field); "
                             f"got {self.chunk_frames}.")


@dataclass
class DiarizationScoringArguments(ArgumentConcept):
    """How speaker activities become RTTM turns, each setting scored for DER (SUPERB reports the lowest)."""

    rttm_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7], metadata={
        "help": "A speaker is active where its sigmoid output exceeds the threshold; each threshold is scored "
                "(SUPERB: 0.3 0.4 0.5 0.6 0.7)."})
    rttm_median_filters: list[int] = field(default_factory=lambda: [1, 11], metadata={
        "help": "Median filter widths in frames applied to the decisions (1 = none), each scored with every "
                "threshold (SUPERB: 1 11)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.rttm_thresholds or not all(0.0 < t < 1.0 for t in self.rttm_thresholds):
            raise ValueError(f"--rttm_thresholds needs values in (0, 1); got {self.rttm_thresholds}.")
        if not self.rttm_median_filters or not all(w >= 1 and w % 2 == 1 for w in self.rttm_median_filters):
            raise ValueError(f"--rttm_median_filters needs odd widths >= 1; got {self.rttm_median_filters}.")


@dataclass
class InputEffectArguments(ArgumentConcept):
    """SUPERB's input effects (`input_effects`), applied to every waveform after decoding and recorded in the
    trained model's config, whose pipeline then applies them too. A fine-tuned model keeps its own."""

    input_gain_db: float = field(default=0.0, metadata={
        "help": "Gain in dB applied to every waveform (SUPERB's keyword spotting and speaker verification: -3, "
                "sox 'gain -3.0'); 0 = none."})
    input_silence_removal: bool = field(default=False, metadata={
        "help": "Remove silences from every waveform after the gain, as SUPERB's speaker verification does (sox "
                "'silence 1 0.1 0.1%% -1 0.1 0.1%%')."})

    def __post_init__(self) -> None:
        if self.input_gain_db > 0:
            raise ValueError(f"--input_gain_db must be <= 0 (a positive gain can clip), got {self.input_gain_db}.")
        super().__post_init__()


@dataclass
class VoxCeleb1VerificationArguments(ArgumentConcept):
    """VoxCeleb1 for speaker verification (`corpora.voxceleb1_verification`) and how the checkpoint is chosen."""

    voxceleb1_root: str | None = field(default=None, metadata={
        "help": "The VoxCeleb1 folder holding the extracted archives as dev/wav (training: every file) and test/wav "
                "(the files of --trial_list)."})
    trial_list: str | None = field(default=None, metadata={
        "help": "The trial list scored by --do_predict: lines '<1|0> <speaker/video/n.wav> <speaker/video/n.wav>' "
                "relative to test/wav (SUPERB: voxceleb1_test_v2.txt, the 37,720 trials of VoxCeleb1-O). Default: "
                "<voxceleb1_root>/veri_test.txt."})
    dev_speakers: int = field(default=0, metadata={
        "help": "Keep this many training speakers (drawn by --seed) out of training and score --dev_trials trials "
                "among them as the development set of --do_eval and --checkpoint_selection dev. 0 = none, as SUPERB."})
    dev_trials: int = field(default=2000, metadata={
        "help": "Trials drawn among the --dev_speakers held-out speakers, half of them same-speaker trials."})
    checkpoint_selection: Literal["best_test", "dev"] = field(default="best_test", metadata={
        "help": "'best_test': SUPERB's: every saved checkpoint is scored on --trial_list after training and the "
                "lowest test EER is reported (optimistic: the test set chooses). 'dev': the checkpoint with the "
                "lowest EER on the held-out --dev_speakers trials (--load_best_model_at_end) is scored once."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.voxceleb1_root:
            raise ValueError("Give --voxceleb1_root, the VoxCeleb1 folder holding dev/wav and test/wav.")
        if self.dev_speakers < 0 or self.dev_trials < 2:
            raise ValueError(f"--dev_speakers must be >= 0 and --dev_trials >= 2; got {self.dev_speakers} and "
                             f"{self.dev_trials}.")
        if self.checkpoint_selection == "dev" and not self.dev_speakers:
            raise ValueError("--checkpoint_selection dev needs held-out speakers: give --dev_speakers N.")

    @property
    def trial_file(self) -> Path:
        return Path(self.trial_list or Path(self.voxceleb1_root) / "veri_test.txt")


@dataclass
class AudioLengthArguments(ArgumentConcept):
    """The duration range of the utterances used, in seconds (lengths come from file headers)."""

    min_duration_seconds: float = field(default=RECEPTIVE_FIELD_SAMPLES / SAMPLING_RATE, metadata={
        "help": f"Drop utterances shorter than this, in seconds. At least {RECEPTIVE_FIELD_SAMPLES / SAMPLING_RATE} s "
                f"({RECEPTIVE_FIELD_SAMPLES} samples, the receptive field of the convolutional front-end: shorter "
                "audio yields no frames)."})
    max_duration_seconds: float | None = field(default=None, metadata={
        "help": "Longest audio to use, in seconds (default: no limit, as in the paper; SUPERB's SID recipe: 8). "
                "Longer utterances are cropped to a random window of that length or dropped, as "
                "--crop_to_max_duration says; without that option (run_asr_ctc.py: a crop would no longer match "
                "its transcript) they are dropped. The task scripts apply it to training only: they evaluate and "
                "predict on whole utterances."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_audio_samples < RECEPTIVE_FIELD_SAMPLES:
            raise ValueError(
                f"--min_duration_seconds must be at least {RECEPTIVE_FIELD_SAMPLES / SAMPLING_RATE} s "
                f"({RECEPTIVE_FIELD_SAMPLES} samples, the model's receptive field); got {self.min_duration_seconds}."
            )
        if self.max_audio_samples is not None and self.max_audio_samples < self.min_audio_samples:
            raise ValueError(
                f"--max_duration_seconds ({self.max_duration_seconds}) must not be below "
                f"--min_duration_seconds ({self.min_duration_seconds})."
            )

    @property
    def min_audio_samples(self) -> int:
        return round(self.min_duration_seconds * SAMPLING_RATE)

    @property
    def max_audio_samples(self) -> int | None:
        return None if self.max_duration_seconds is None else round(self.max_duration_seconds * SAMPLING_RATE)


@dataclass
class CroppingArguments(AudioLengthArguments):
    """Whether utterances longer than --max_duration_seconds are cropped or dropped."""

    crop_to_max_duration: bool = field(default=True, metadata={
        "help": "With --max_duration_seconds: crop longer utterances to a random window of that length, drawn "
                "anew for each (seed, item, epoch) (true), or drop them (false)."})


@dataclass
class BatchBudgetArguments(ArgumentConcept):
    """Training batches bounded by padded audio as well as by utterance count."""

    max_batch_seconds: float | None = field(default=None, metadata={
        "help": "Bound each training batch by padded audio too: at most per_device_train_batch_size "
                "utterances AND (utterances x longest one) <= this many seconds, batches formed from "
                "length-sorted utterances, so long utterances come in small batches (no out-of-memory) "
                "and short ones in large batches (little padding). Default: no bound, batches of "
                "per_device_train_batch_size utterances (the paper's recipes). Must be at least the "
                "longest training utterance."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_batch_seconds is not None and self.max_batch_seconds <= 0:
            raise ValueError(f"--max_batch_seconds must be positive, got {self.max_batch_seconds}.")


@dataclass
class CtcTargetArguments(SnipsArguments, StreamingArguments):
    """What a CTC layer learns from the transcripts: characters, phonemes (from a lexicon) or slots (from
    Audio SNIPS), and the vocabulary."""

    targets: Literal["characters", "phonemes", "slots"] | None = field(default=None, metadata={
        "help": "What the CTC layer learns: 'characters' (speech recognition), 'phonemes' (phoneme recognition, "
                "needs --lexicon) or 'slots' (slot filling, needs --snips_root). Default: 'phonemes' with "
                "--lexicon, 'slots' with --snips_root, else 'characters'. A fine-tuned --model_name_or_path must "
                "have been trained on the same kind."})
    lexicon: list[str] | None = field(default=None, metadata={
        "help": "--targets phonemes: pronunciation lexicons in the LibriSpeech format ('WORD PH1 PH2 ...'), read in "
                "order; a word takes its first pronunciation. SUPERB: librispeech-lexicon-200k-g2p.txt then "
                "librispeech-lexicon-allothers-g2p.txt. Utterances with a word missing from them are left out and "
                "counted."})
    append_eos: bool = field(default=False, metadata={
        "help": "End every CTC target with an <eos> token, as SUPERB's recipes do (decoding drops it); character "
                "targets then close their last word with '|' first, as SUPERB's speech recognition does. Applies "
                "when a vocabulary is built; a fine-tuned model or --vocab_file keeps its own."})
    chars_to_ignore: str = field(default="", metadata={
        "help": "Characters removed from transcripts before anything else, e.g. ',?.!;:\"' for corpora with "
                "punctuation. Transcripts are upper-cased and their whitespace collapsed; any other character "
                "outside the vocabulary becomes <unk> (counted and logged)."})
    vocab_file: str | None = field(default=None, metadata={
        "help": "A vocab.json to use instead of building one from the training transcripts (needed with "
                "--streaming, whose transcripts are not known up front)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.targets == "phonemes" and not self.lexicon:
            raise ValueError("--targets phonemes needs --lexicon (pronunciation lexicons in the LibriSpeech format, "
                             "e.g. SUPERB's librispeech-lexicon-200k-g2p.txt librispeech-lexicon-allothers-g2p.txt).")
        if self.lexicon and self.targets not in (None, "phonemes"):
            raise ValueError(f"--lexicon is for --targets phonemes, not {self.targets}.")
        if self.targets == "slots" and not self.snips_root:
            raise ValueError("--targets slots needs --snips_root (an Audio SNIPS folder with slot annotations).")
        if self.snips_root and self.targets not in (None, "slots"):
            raise ValueError(f"--snips_root annotates slots: use --targets slots, not {self.targets}.")
        if self.streaming and (self.lexicon or self.targets == "phonemes"):
            raise ValueError("--targets phonemes reads every transcript up front to leave out the utterances with "
                             "words missing from the lexicon, which --streaming cannot; drop --streaming.")

    def default_targets(self) -> str:
        """The targets the data implies when neither --targets nor a fine-tuned model says."""
        return self.targets or ("phonemes" if self.lexicon else "slots" if self.snips_root else "characters")


@dataclass
class CtcMetricArguments(ArgumentConcept):
    """The `evaluate` modules that score CTC predictions (local copies in metrics/ work offline)."""

    wer_metric: str = field(default=str(REPO / "metrics" / "wer"), metadata={
        "help": "What evaluate.load() loads for WER: the local module shipped in metrics/wer (works offline), or "
                "e.g. 'wer' for the Hub's."})
    cer_metric: str = field(default=str(REPO / "metrics" / "cer"), metadata={
        "help": "What evaluate.load() loads for CER (default: the local module in metrics/cer)."})
    slot_filling_metric: str = field(default=str(REPO / "metrics" / "slot_filling"), metadata={
        "help": "What evaluate.load() loads for SUPERB's slot_type_f1 and slot_value_cer (default: the local "
                "module in metrics/slot_filling)."})


# ----------------------------------------------------------------------------------------------
# Query by example (run_query_by_example.py): no head trains, each layer is scored by DTW.
# ----------------------------------------------------------------------------------------------


@dataclass
class Quesst14Arguments(ArgumentConcept):
    """QUESST 2014 in its download layout (`corpora.quesst14`)."""

    quesst14_root: str | None = field(default=None, metadata={
        "help": "The extracted quesst14Database folder (Audio/, dev_queries/, eval_queries/, scoring/). Only the "
                "English entries of its language lists are read, as SUPERB does."})

    def __post_init__(self) -> None:
        if not self.quesst14_root:
            raise ValueError("--quesst14_root is required: the extracted quesst14Database folder.")
        super().__post_init__()


@dataclass
class QbeScoringArguments(ArgumentConcept):
    """Which layers are matched, where, and which scorer gives their MTWV."""

    layers: list[int] | None = field(default=None, metadata={
        "help": "Layers whose features are matched (SUPERB's -l): i = the output of layer i (its distillation "
                "head's with projected features), 0 = the encoder input (hidden_states features only); default: "
                "every one. The dev split picks the best, which is then scored on the eval split."})
    scorer: Literal["auto", "official", "python"] = field(default="auto", metadata={
        "help": "What turns the STD lists into MTWV: 'official' = the corpus's scoring/score-TWV-Cnxe.sh (needs Java "
                "and bc), 'python' = this project's implementation of the standard definition, 'auto' = official "
                "when the script, Java and bc are there, else python."})
    device: str = field(default="auto", metadata={
        "help": "Where the student runs and the distances and DTW are computed: 'auto' (a GPU when there is one), "
                "'cpu', 'cuda', 'cuda:1', ..."})
    output_dir: str = field(default="outputs/armhubert-superb-qbe", metadata={
        "help": "Where the features (features/), the STD lists (<split>/layer_<i>/benchmark.stdlist.xml) and the "
                "results JSONs (dev_results.json: every layer; eval_results.json: the selected one) are written."})

    def __post_init__(self) -> None:
        if self.layers is not None and any(layer < 0 for layer in self.layers):
            raise ValueError(f"--layers are indices from 0; got {self.layers}.")
        super().__post_init__()


# ----------------------------------------------------------------------------------------------
# Each script's arguments: the concepts it uses, nothing added. HfArgumentParser lists the options of
# the last base first, so the student and the data source come last here and first in --help.
# ----------------------------------------------------------------------------------------------


@dataclass
class DistillationModelArguments(MixedPrecisionArguments, DistilledStudentArguments, TeacherArguments):
    """run_distill.py (and the benchmarks of a real run): which teacher, which student, in which precision."""


@dataclass
class AsrModelArguments(FineTuningArguments, SuperbFeatureArguments, CtcHeadArguments, StudentSourceArguments):
    """run_asr_ctc.py: which student, which CTC head, and the head's settings."""


@dataclass
class ClassificationModelArguments(FineTuningArguments, SuperbFeatureArguments, ClassifierHeadArguments,
                                   StudentSourceArguments):
    """run_audio_classification.py: which student, which classifier mode, and the classifier's settings."""


@dataclass
class DistillationDataArguments(BatchBudgetArguments, CroppingArguments, SplitArguments, StreamingArguments,
                                TranscriptColumnArguments, LibriSpeechArguments):
    """run_distill.py: LibriSpeech or a `datasets` dataset (streamed or not), cropped or filtered by duration."""


@dataclass
class AsrDataArguments(CtcMetricArguments, BatchBudgetArguments, AudioLengthArguments, PredictionSplitArguments,
                       CtcTargetArguments, TranscriptColumnArguments, LibriSpeechArguments):
    """run_asr_ctc.py: transcribed speech (LibriSpeech, Audio SNIPS or a `datasets` dataset), its CTC
    targets, prediction splits and metrics."""

    @property
    def crop_to_max_duration(self) -> bool:
        """Never: a cropped utterance no longer matches its transcript, so training drops utterances longer
        than --max_duration_seconds instead."""
        return False


@dataclass
class ClassificationDataArguments(InputEffectArguments, CroppingArguments, PredictionSplitArguments,
                                  HubLabelArguments, ClassificationCorpusArguments):
    """run_audio_classification.py: labelled audio (a corpus folder or a `datasets` dataset), training
    utterances cropped or filtered by duration, prediction splits, SUPERB's input effects."""


@dataclass
class QbeModelArguments(SuperbFeatureArguments, StudentSourceArguments):
    """run_query_by_example.py: which student, and which of its features are matched."""


@dataclass
class QbeArguments(QbeScoringArguments, Quesst14Arguments):
    """run_query_by_example.py: the corpus, the layers, the scorer and where the results go."""


@dataclass
class DiarizationModelArguments(SuperbFeatureArguments, DiarizationHeadArguments, StudentSourceArguments):
    """run_diarization.py: which student, and SUPERB's diarization head on it."""


@dataclass
class DiarizationDataArguments(DiarizationScoringArguments, DiarizationChunkArguments, PredictionSplitArguments,
                               LibriMixArguments):
    """run_diarization.py: LibriMix splits, their chunking, and the RTTM settings scored for DER."""


@dataclass
class SpeakerVerificationModelArguments(XVectorHeadArguments, SuperbFeatureArguments, StudentSourceArguments):
    """run_speaker_verification.py: which student, and the x-vector head's objective."""


@dataclass
class SpeakerVerificationDataArguments(InputEffectArguments, CroppingArguments, HeaderReadingArguments,
                                       VoxCeleb1VerificationArguments):
    """run_speaker_verification.py: VoxCeleb1 in its download layout, the trial lists, the input effects, and
    the training utterances' duration range and crops."""
