"""Configuration of ArmHubert, the student network of Recycle-and-Distill (Interspeech 2023).

Field names follow Transformers' `HubertConfig` wherever the concept is the same, so that
anyone who knows HuBERT/wav2vec 2.0 configs can read this one. The additions are:

- `reuse_pattern`: one bool per layer. True = a normal attention layer (q, k, v, out
  projections); False = an attention-map-reusing (ARM) layer that keeps only v and out and
  applies the attention map of the nearest preceding normal layer.
- `reuse_mode`: how a reuse layer turns that map into weights. `"probs"` uses the previous
  layer's probabilities as they are (the method as the paper describes it). `"legacy_double_softmax"`
  applies softmax to those probabilities a second time, which is what the authors' code did
  and what their released checkpoints were trained with.
- `projection_dim`: teacher hidden size for the per-layer distillation heads
  (0 or None = no heads; equal to `hidden_size` = identity heads, as in the authors' code).
- `layer_grad_scale`: per-layer gradient scaling used when distilling (forward unchanged).
- `superb_*`: the downstream model of SUPERB's ASR task, used by [`ArmHubertForSuperbCTC`]
  (frozen student, softmax-weighted sum of its layers, BiLSTM, character CTC), and SUPERB's
  SpecAugment on the weighted-sum features (`superb_spec_augment` and the fields after it).
- `classifier_*`, `use_weighted_layer_sum`: the utterance classifier [`ArmHubertForSequenceClassification`]
  (SUPERB's KS/IC/SID/ER protocol, or full fine-tuning like `HubertForSequenceClassification`).
- `diarization_lstm_hidden_size`: the LSTM of [`ArmHubertForSuperbDiarization`] (SUPERB's speaker diarization).
- `tdnn_*`, `xvector_output_dim`, `am_softmax_*`: SUPERB's speaker verification head [`ArmHubertForXVector`]
  (Transformers' `WavLMConfig` names for the same sizes).
- `input_gain_db`, `input_silence_removal`: the input effects SUPERB applies before the model
  (`armhubert_training/input_effects.py`), recorded so that a task model's pipeline applies them too.
"""

import dataclasses
import json
import numbers
import types
import typing
from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

# No `from __future__ import annotations`: the fields' annotations stay types, which `field_types` reads
# (through `dataclasses.fields`) to check users' overrides.

REUSE_MODES = ("probs", "legacy_double_softmax")
# What `ArmHubertForSuperbCTC` takes the weighted sum of (see `ArmHubertConfig.superb_features`).
SUPERB_FEATURES = ("projected", "hidden_states")
# How `ArmHubertForSequenceClassification` uses the student (see `ArmHubertConfig.classifier_mode`).
CLASSIFIER_MODES = ("superb", "fine_tune")

# Conv feature encoder of the published students: (channels, kernel, stride) per layer,
# total stride 320 and receptive field 400 samples, like HuBERT's but narrower.
def _student_conv_layers(width: int) -> list[tuple[int, int, int]]:
    return [(128, 10, 5), (256, 1, 1)] + [(256, 3, 2)] * 4 + [(width, 1, 1)] + [(width, 2, 2)] * 2


def conv_receptive_field(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Samples seen by one output frame of a conv stack with these kernels and strides."""
    field = 1
    for kernel, stride in zip(reversed(conv_kernel), reversed(conv_stride)):
        field = (field - 1) * stride + kernel
    return field


# The receptive field of the students (and of HuBERT / WavLM teachers): 400 samples, 25 ms. Shorter
# audio yields no frame, so the data pipeline leaves it out.
RECEPTIVE_FIELD_SAMPLES = conv_receptive_field([kernel for _, kernel, _ in _student_conv_layers(1)],
                                               [stride for _, _, stride in _student_conv_layers(1)])


def _preset(width: int, ffn: int, reuse: bool, **extra: Any) -> dict[str, Any]:
    conv = _student_conv_layers(width)
    return {
        "hidden_size": width,
        "intermediate_size": ffn,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "conv_dim": [c for c, _, _ in conv],
        "conv_kernel": [k for _, k, _ in conv],
        "conv_stride": [s for _, _, s in conv],
        "reuse_pattern": [True, False] * 6 if reuse else [True] * 12,
        "layer_grad_scale": reuse,
        "projection_dim": 768,
        **extra,
    }


# The published students (docs/method.md §1). Heads map to a 768-wide teacher (HuBERT/WavLM Base).
PRESETS: dict[str, dict[str, Any]] = {
    "armhubert": _preset(480, 864, reuse=True),
    "armhubert-s": _preset(432, 816, reuse=True),
    "armwavlm-s": _preset(432, 816, reuse=True),
    "maskhubert": _preset(480, 640, reuse=False),
    # STaR's student (docs/method.md §5): 22.31 M parameters, no heads, since its Gram losses compare widths.
    "starhubert": _preset(432, 976, reuse=False, num_attention_heads=8, projection_dim=0),
}


AUTO_MAP = {
    "AutoConfig": "configuration_armhubert.ArmHubertConfig",
    "AutoModel": "modeling_armhubert.ArmHubertModel",
    "AutoModelForCTC": "modeling_armhubert.ArmHubertForCTC",
    "AutoModelForAudioClassification": "modeling_armhubert.ArmHubertForSequenceClassification",
    "AutoModelForAudioFrameClassification": "modeling_armhubert.ArmHubertForSuperbDiarization",
    "AutoModelForAudioXVector": "modeling_armhubert.ArmHubertForXVector",
}


class ArmHubertConfig(PretrainedConfig):
    r"""Configuration of an [`ArmHubertModel`].

    Args:
        vocab_size: Output vocabulary of the CTC head ([`ArmHubertForCTC`]).
        hidden_size: Width of the Transformer encoder.
        num_hidden_layers: Number of encoder layers.
        num_attention_heads: Attention heads per layer; must divide `hidden_size`.
        intermediate_size: Width of the feed-forward block.
        hidden_act: Activation of the feed-forward block.
        hidden_dropout: Dropout after attention/feed-forward blocks and after the positional conv.
        activation_dropout: Dropout inside the feed-forward block.
        attention_dropout: Dropout on attention probabilities (normal layers only; reuse layers use 0).
        feat_proj_dropout: Dropout on the feature encoder output ("dropout_input" in the authors' code).
        final_dropout: Dropout before the CTC head.
        initializer_range: Std of the normal init of linear layers.
        layer_norm_eps: Epsilon of every LayerNorm.
        feat_extract_activation: Activation after every conv of the feature encoder.
        conv_dim, conv_kernel, conv_stride: Channels, kernel and stride of each conv layer.
            GroupNorm (one group per channel) follows the first conv only.
        conv_bias: Whether the convs have a bias.
        num_conv_pos_embeddings: Kernel size of the convolutional positional embedding.
        num_conv_pos_embedding_groups: Groups of the convolutional positional embedding.
        reuse_pattern: One bool per layer, True = normal layer, False = attention-map-reusing layer.
            The first entry must be True. None = all layers normal.
        reuse_mode: `"probs"` or `"legacy_double_softmax"` (see module docstring).
        projection_dim: Output width of the per-layer distillation heads; 0/None = no heads.
        layer_grad_scale: Scale gradients per layer during distillation (docs/method.md §1.2).
        apply_spec_augment, mask_time_prob, mask_time_length, mask_time_min_masks,
        mask_feature_prob, mask_feature_length, mask_feature_min_masks: SpecAugment-style masking
            applied in training mode when no `mask_time_indices` are given (as in `HubertModel`).
            Distillation passes its own mask and sets `mask_time_prob=0`.
        ctc_loss_reduction, ctc_zero_infinity: CTC loss options of the CTC models.
        superb_features: What [`ArmHubertForSuperbCTC`] takes the weighted sum of. `"projected"`: the L
            outputs of the distillation heads (needs `projection_dim`), the features the authors gave
            SUPERB; `"hidden_states"`: the encoder input and the L layer outputs, SUPERB's convention
            for HuBERT-like models and the only choice for a student without heads.
        superb_projection_dim: Width of the Linear between the weighted sum and the BiLSTM (SUPERB: 1024).
        superb_lstm_hidden_size: Hidden size of each direction of each BiLSTM layer (SUPERB: 1024).
        superb_lstm_layers: Number of BiLSTM layers (SUPERB ASR and slot filling: 2; phoneme recognition: 0,
            the output layer then reads the projection directly).
        superb_lstm_dropout: Dropout after each BiLSTM layer (SUPERB: 0.2).
        classifier_mode: How [`ArmHubertForSequenceClassification`] uses the student. `"superb"`: SUPERB's
            utterance-level protocol, the student frozen and in eval mode, a learned softmax-weighted sum
            of its `superb_features`; `"fine_tune"`: the whole student trained, as `HubertForSequenceClassification`.
        classifier_proj_size: Width of the frame-wise Linear before mean pooling (SUPERB: 256).
        use_weighted_layer_sum: `"fine_tune"` only: classify a learned softmax-weighted sum of the
            `superb_features` instead of the last layer (always on with `"superb"`).
        classifier_slot_names, classifier_slot_sizes: Several single-label decisions from one output layer
            (SUPERB's intent classification: action, object, location): the logits are sliced into
            consecutive blocks of these sizes, one softmax each; `id2label` names each logit "slot=value".
            None = one decision over all `num_labels`.
        superb_spec_augment: Apply SUPERB's SpecAugment ([`SuperbSpecAugment`]) to the weighted-sum
            features while training (SUPERB's ASR and slot-filling recipes do); never in eval mode.
        superb_time_warp_window: Time warp: the warp point moves by fewer than this many frames; 0 = no
            warp (SUPERB: 5).
        superb_num_freq_masks: Bands of feature channels zeroed per utterance (SUPERB: 4).
        superb_freq_mask_width_limit: Each channel band is 0 .. limit - 1 channels wide (SUPERB: 50).
        superb_num_time_masks: Bands of frames zeroed per utterance (SUPERB: 2).
        superb_time_mask_width_limit: Each frame band is 0 .. limit - 1 frames wide (SUPERB: 40).
        diarization_lstm_hidden_size: Units of the unidirectional LSTM of [`ArmHubertForSuperbDiarization`]
            (SUPERB's speaker diarization: 512); its `num_labels` is the number of speakers per recording.
        tdnn_dim, tdnn_kernel, tdnn_dilation: Output width, context and dilation of each TDNN layer of
            [`ArmHubertForXVector`] (SUPERB: 512, 512, 512, 512, 1500; 5, 3, 3, 1, 1; 1, 2, 3, 1, 1); the Linear
            before them maps the weighted sum to `tdnn_dim[0]`.
        xvector_output_dim: Width of the two utterance-level Linears; the first one's ReLU output is the
            speaker embedding (SUPERB: 512).
        am_softmax_scale, am_softmax_margin: The AM-softmax training objective (SUPERB: 30, 0.4).
        input_gain_db: Gain in dB applied to every input waveform before the model (SUPERB's keyword spotting
            and speaker verification: -3, sox `gain -3.0`); 0 = none.
        input_silence_removal: Remove silences from every input waveform as SUPERB's speaker verification does
            (sox `silence 1 0.1 0.1% -1 0.1 0.1%`), after the gain.
    """

    model_type = "armhubert"

    vocab_size: int = 32
    hidden_size: int = 480
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 864
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.05
    final_dropout: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    feat_extract_activation: str = "gelu"
    conv_dim: list[int] | tuple[int, ...] = (128, 256, 256, 256, 256, 256, 480, 480, 480)
    conv_kernel: list[int] | tuple[int, ...] = (10, 1, 3, 3, 3, 3, 1, 2, 2)
    conv_stride: list[int] | tuple[int, ...] = (5, 1, 2, 2, 2, 2, 1, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    reuse_pattern: list[bool] | tuple[bool, ...] | None = None
    reuse_mode: str = "probs"
    projection_dim: int | None = None
    layer_grad_scale: bool = False
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    superb_features: str = "projected"
    superb_projection_dim: int = 1024
    superb_lstm_hidden_size: int = 1024
    superb_lstm_layers: int = 2
    superb_lstm_dropout: float = 0.2
    classifier_mode: str = "fine_tune"
    classifier_proj_size: int = 256
    use_weighted_layer_sum: bool = False
    classifier_slot_names: list[str] | tuple[str, ...] | None = None
    classifier_slot_sizes: list[int] | tuple[int, ...] | None = None
    superb_spec_augment: bool = False
    superb_time_warp_window: int = 5
    superb_num_freq_masks: int = 4
    superb_freq_mask_width_limit: int = 50
    superb_num_time_masks: int = 2
    superb_time_mask_width_limit: int = 40
    diarization_lstm_hidden_size: int = 512
    tdnn_dim: list[int] | tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: list[int] | tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: list[int] | tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    am_softmax_scale: float = 30.0
    am_softmax_margin: float = 0.4
    input_gain_db: float = 0.0
    input_silence_removal: bool = False
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2

    def __post_init__(self, **kwargs: Any) -> None:
        # Every auto class the code provides, so that a saved student loads with each of them (e.g.
        # AutoModelForCTC builds a CTC model on a bare student). Saving a model then records its own
        # class for its auto class on top (`register_for_auto_class` in modeling_armhubert.py), e.g.
        # AutoModelForCTC -> ArmHubertForSuperbCTC for a SUPERB model; a saved map keeps its entries.
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        if self.reuse_pattern is None:
            self.reuse_pattern = [True] * self.num_hidden_layers
        if isinstance(self.reuse_pattern, str) or any(isinstance(flag, str) or flag not in (True, False)
                                                      for flag in self.reuse_pattern):
            raise TypeError(f"reuse_pattern must be a list of booleans (true/false in config.json), one per layer, got "
                            f"{self.reuse_pattern!r}.")
        self.reuse_pattern = [bool(flag) for flag in self.reuse_pattern]
        self.conv_dim, self.conv_kernel, self.conv_stride = (
            list(self.conv_dim), list(self.conv_kernel), list(self.conv_stride))
        self.tdnn_dim, self.tdnn_kernel, self.tdnn_dilation = (
            list(self.tdnn_dim), list(self.tdnn_kernel), list(self.tdnn_dilation))
        self.num_feat_extract_layers = len(self.conv_dim)
        super().__post_init__(**kwargs)
        self.check_values()

    def __setattr__(self, name: str, value: Any) -> None:
        # As in Transformers' strict configs, a field changed after construction has its type checked at
        # once; the checks across fields (`check_values`) run again when a model is built or the config saved.
        # (Construction sets each field a first time, before `check_values` checks them all.)
        if name in self.__dict__ and name in _OWN_FIELD_TYPES:
            self._check_type(name, value)
        super().__setattr__(name, value)

    def _check_type(self, name: str, value: Any) -> None:
        expected = _OWN_FIELD_TYPES[name]
        if not _has_type(value, expected):
            raise TypeError(f"{type(self).__name__} field {name!r} must be {_describe_type(expected)}, got "
                            f"{value!r} ({type(value).__name__}).")

    def validate(self) -> None:
        """Transformers' checks of a config (run by `save_pretrained`), then `check_values`."""
        super().validate()
        self.check_values()

    def check_values(self) -> None:
        """Raise a TypeError or ValueError that says what is wrong and how to fix it. Run at construction,
        and again by `save_pretrained` and by every model built from the config, so that a field changed
        since (e.g. `num_hidden_layers` without `reuse_pattern`) fails with what to fix."""
        for name in _OWN_FIELD_TYPES:
            self._check_type(name, getattr(self, name))
        if self.hidden_size <= 0 or self.num_hidden_layers <= 0 or self.num_attention_heads <= 0:
            raise ValueError("hidden_size, num_hidden_layers and num_attention_heads must be positive, got "
                             f"{self.hidden_size}, {self.num_hidden_layers}, {self.num_attention_heads}.")
        for name in ("vocab_size", "intermediate_size", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
                     "mask_time_length", "mask_feature_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("mask_time_min_masks", "mask_feature_min_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive (it keeps the LayerNorms finite), got "
                             f"{self.layer_norm_eps}.")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in ACT2FN:
                raise ValueError(f"{name} must name one of Transformers' activations (transformers.activations.ACT2FN, "
                                 f"e.g. 'gelu'), got {getattr(self, name)!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads}); pick a head count that divides it.")
        if self.reuse_pattern is None:  # only when set after construction, which fills the default in
            raise ValueError("reuse_pattern is None; give one bool per layer (a new config fills in all-True).")
        if len(self.reuse_pattern) != self.num_hidden_layers:
            raise ValueError(f"reuse_pattern has {len(self.reuse_pattern)} entries but num_hidden_layers is "
                             f"{self.num_hidden_layers}; give one bool per layer.")
        if not self.reuse_pattern[0]:
            raise ValueError("reuse_pattern[0] must be True: the first layer has no earlier attention map to reuse.")
        if self.reuse_mode not in REUSE_MODES:
            raise ValueError(f"reuse_mode must be one of {REUSE_MODES}, got {self.reuse_mode!r}.")
        if not (len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride)) or not self.conv_dim:
            raise ValueError("conv_dim, conv_kernel and conv_stride must be non-empty and of equal length, got "
                             f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}.")
        if min(self.conv_dim + self.conv_kernel + self.conv_stride) < 1:
            raise ValueError(f"conv_dim, conv_kernel and conv_stride must hold positive integers, got {self.conv_dim}, "
                             f"{self.conv_kernel}, {self.conv_stride}.")
        if self.projection_dim is not None and self.projection_dim < 0:
            raise ValueError(f"projection_dim must be >= 0 (0 or None = no heads), got {self.projection_dim}.")
        if self.hidden_size % self.num_conv_pos_embedding_groups != 0:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_conv_pos_embedding_groups "
                             f"({self.num_conv_pos_embedding_groups}).")
        if self.superb_features not in SUPERB_FEATURES:
            raise ValueError(f"superb_features must be one of {SUPERB_FEATURES}, got {self.superb_features!r}.")
        for name in ("superb_projection_dim", "superb_lstm_hidden_size", "diarization_lstm_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("superb_time_warp_window", "superb_num_freq_masks", "superb_num_time_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 switches that part of SpecAugment off), got "
                                 f"{getattr(self, name)}.")
        for name in ("superb_freq_mask_width_limit", "superb_time_mask_width_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (widths are drawn from 0 .. limit - 1), got "
                                 f"{getattr(self, name)}.")
        if self.superb_lstm_layers < 0:
            raise ValueError(f"superb_lstm_layers must be >= 0 (0 = no BiLSTM, as SUPERB's phoneme recognition "
                             f"head), got {self.superb_lstm_layers}.")
        for name in ("hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
                     "final_dropout", "mask_time_prob", "mask_feature_prob", "superb_lstm_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.classifier_mode not in CLASSIFIER_MODES:
            raise ValueError(f"classifier_mode must be one of {CLASSIFIER_MODES}, got {self.classifier_mode!r}.")
        if self.classifier_proj_size < 1:
            raise ValueError(f"classifier_proj_size must be a positive integer, got {self.classifier_proj_size}.")
        self._check_slots()
        self._check_xvector()
        if self.ctc_loss_reduction not in ("sum", "mean"):
            raise ValueError(f"ctc_loss_reduction must be 'sum' or 'mean', got {self.ctc_loss_reduction!r}.")

    def _check_xvector(self) -> None:
        if not (len(self.tdnn_dim) == len(self.tdnn_kernel) == len(self.tdnn_dilation)) or not self.tdnn_dim:
            raise ValueError("tdnn_dim, tdnn_kernel and tdnn_dilation must be non-empty and of equal length (one entry "
                             f"per TDNN layer), got {list(self.tdnn_dim)}, {list(self.tdnn_kernel)}, "
                             f"{list(self.tdnn_dilation)}.")
        if min([*self.tdnn_dim, *self.tdnn_kernel, *self.tdnn_dilation, self.xvector_output_dim]) < 1:
            raise ValueError("tdnn_dim, tdnn_kernel, tdnn_dilation and xvector_output_dim must be positive integers.")
        if self.am_softmax_scale <= 0 or not 0 <= self.am_softmax_margin < 1:
            raise ValueError(f"am_softmax_scale must be positive and am_softmax_margin in [0, 1), got "
                             f"{self.am_softmax_scale} and {self.am_softmax_margin}.")
        if self.input_gain_db > 0:
            raise ValueError(f"input_gain_db must be <= 0 (SUPERB attenuates by 3 dB; a positive gain can clip), got "
                             f"{self.input_gain_db}.")

    def _check_slots(self) -> None:
        names, sizes = self.classifier_slot_names, self.classifier_slot_sizes
        if (names is None) != (sizes is None):
            raise ValueError("classifier_slot_names and classifier_slot_sizes go together: give both (one name and "
                             f"one size per slot) or neither; got {names!r} and {sizes!r}.")
        if names is None:
            return
        if len(names) != len(sizes) or len(set(names)) != len(names) or not names:
            raise ValueError(f"classifier_slot_names must be distinct, one per entry of classifier_slot_sizes; got "
                             f"{names!r} and {sizes!r}.")
        if min(sizes) < 1 or sum(sizes) != self.num_labels:
            raise ValueError(f"classifier_slot_sizes {list(sizes)} must be positive and sum to num_labels "
                             f"({self.num_labels}): one logit per value of every slot.")

    @property
    def slot_slices(self) -> list[tuple[str, slice]]:
        """[(slot name, its block of logits)]; one slot "label" over all logits for a single decision."""
        if self.classifier_slot_names is None:
            return [("label", slice(0, self.num_labels))]
        starts = [sum(self.classifier_slot_sizes[:i]) for i in range(len(self.classifier_slot_sizes))]
        return [(name, slice(start, start + size))
                for name, start, size in zip(self.classifier_slot_names, starts, self.classifier_slot_sizes)]

    @property
    def has_projection_heads(self) -> bool:
        return bool(self.projection_dim)

    @property
    def spec_augment_masks_time(self) -> bool:
        """Whether SpecAugment masks frames while training (writing the mask embedding over them)."""
        return self.apply_spec_augment and self.mask_time_prob > 0

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame of the conv feature encoder (400 for the presets)."""
        return conv_receptive_field(self.conv_kernel, self.conv_stride)

    @property
    def total_stride(self) -> int:
        """Samples between two output frames (320 for the presets, i.e. 50 frames per second)."""
        stride = 1
        for s in self.conv_stride:
            stride *= s
        return stride

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Samples per CTC output frame; the speech recognition pipeline aligns chunks and timestamps to it."""
        return self.total_stride

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ArmHubertConfig":
        """Config of a published student: `armhubert`, `armhubert-s`, `armwavlm-s`, `maskhubert` or `starhubert`.

        `overrides` replace preset fields, e.g. `projection_dim=0` for a student without heads or
        `projection_dim=1024` for a Large teacher.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """The fields this class declares (those a user may override), with their types. The base class's
        fields (dtype, ...) are not for users to set."""
        own = ArmHubertConfig.__annotations__
        return {field.name: field.type for field in dataclasses.fields(cls) if field.name in own}

    @classmethod
    def parse_overrides(cls, overrides: str | dict[str, Any] | None, option: str = "overrides") -> dict[str, Any]:
        """Check a JSON object (or dict) of field changes: valid JSON, known fields, values of the right type.

        `option` names where the text came from (e.g. "--config_overrides") in the error messages.
        """
        if overrides is None or overrides == "":
            return {}
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except json.JSONDecodeError as err:
                raise ValueError(f"{option} is not valid JSON ({err}): {overrides!r}. Give a JSON object such as "
                                 '\'{"hidden_dropout": 0.0}\' (double quotes, lowercase true/false).') from None
        if not isinstance(overrides, dict):
            raise ValueError(f"{option} must be a JSON object of {cls.__name__} fields, got "
                             f"{type(overrides).__name__}: {overrides!r}.")
        fields = cls.field_types()
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(f"{option}: unknown {cls.__name__} field(s) {unknown}. Valid fields: "
                             f"{', '.join(sorted(fields))}.")
        for name, value in overrides.items():
            if not _has_type(value, fields[name]):
                raise TypeError(f"{option}: field {name!r} must be {_describe_type(fields[name])}, got {value!r} "
                                f"({type(value).__name__}).")
        return dict(overrides)

    def with_overrides(self, overrides: str | dict[str, Any] | None, option: str = "overrides",
                       **changes: Any) -> "ArmHubertConfig":
        """A new config: this one with `changes` (set by the caller), then the user's `overrides` (a JSON
        object, checked by `parse_overrides`), validated like a new config."""
        overrides = self.parse_overrides(overrides, option)
        try:
            return type(self).from_dict({**self.to_dict(), **changes, **overrides})
        except (TypeError, ValueError) as err:
            if not overrides:
                raise
            error = TypeError if isinstance(err, TypeError) else ValueError
            raise error(f"{option} gives an invalid config: {err}") from err


# The fields users set, with their types (read once: every assignment to a config looks them up).
_OWN_FIELD_TYPES: dict[str, Any] = ArmHubertConfig.field_types()


def _has_type(value: Any, expected: Any) -> bool:
    """Whether `value` fits the annotation `expected`, in JSON's terms: an int is a number, a bool is no int."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is types.UnionType:
        return any(_has_type(value, arg) for arg in args)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_has_type(item, args[0]) for item in value)
    if expected is type(None) or isinstance(value, bool):
        return type(value) is expected
    if expected in (int, float):
        return isinstance(value, numbers.Integral if expected is int else numbers.Real)
    return isinstance(value, expected)


def _describe_type(expected: Any) -> str:
    """`list[int] | tuple[int, ...] | None` -> "a list of int or null" (JSON's words), for error messages."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is type(None):
        return "null"
    if origin is types.UnionType:
        described = list(dict.fromkeys(_describe_type(arg) for arg in args))
        return " or ".join(described)
    if origin in (list, tuple):
        return f"a list of {args[0].__name__}"
    return {bool: "a bool (true/false)", int: "an int", float: "a number", str: "a string"}.get(
        expected, getattr(expected, "__name__", str(expected)))

__all__ = ["CLASSIFIER_MODES", "ArmHubertConfig", "PRESETS", "RECEPTIVE_FIELD_SAMPLES", "REUSE_MODES",
           "SUPERB_FEATURES"]
