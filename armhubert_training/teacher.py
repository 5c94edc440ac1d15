"""The frozen teacher of masking distillation: a Transformers HuBERT, WavLM or wav2vec 2.0 model.

Each training step needs the teacher's layer outputs twice, on the same audio unmasked and with
its own mask embedding over the masked frames (docs/method.md §2). The conv feature encoder, the
most expensive part of a Base model at these lengths after the Transformer, does not depend on
the mask, so `FrozenTeacher` runs it once and runs the Transformer encoder on the unmasked and
masked inputs together as one batch of 2B.

The teacher's positional conv (a 128-tap grouped conv over 768 channels) is computed from spectra
(`SpectralPositionalConv`), the same conv to fp32 rounding: run directly by cuDNN it took 64 of the
173 ms of a 32 x 10 s step on an H100 (`benchmarks/results/distill_throughput_cuda_profile_default.txt`).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoModel, HubertModel, PreTrainedModel, Wav2Vec2Model, WavLMModel

from modeling_armhubert import grouped_conv_from_spectra, kernel_spectrum

SUPPORTED_TEACHERS = (HubertModel, WavLMModel, Wav2Vec2Model)


def load_teacher(name_or_path: str, **from_pretrained_kwargs) -> PreTrainedModel:
    """Load a HuBERT / WavLM / wav2vec 2.0 encoder by hub id or local path, frozen and in eval mode."""
    if looks_like_local_path(name_or_path):
        path = os.path.expanduser(name_or_path)
        if not os.path.exists(path):
            # Transformers would take it for a hub id and complain about the id's form instead.
            raise FileNotFoundError(f"Teacher path {name_or_path!r} does not exist. Give the directory of a "
                                    "HubertModel, WavLMModel or Wav2Vec2Model (config.json and weights) or a hub id "
                                    "such as facebook/hubert-base-ls960.")
        name_or_path = path
    model = AutoModel.from_pretrained(name_or_path, **from_pretrained_kwargs)
    if not isinstance(model, SUPPORTED_TEACHERS):
        raise ValueError(f"Teacher {name_or_path!r} is a {type(model).__name__}; a HubertModel, WavLMModel or "
                         "Wav2Vec2Model is needed (e.g. facebook/hubert-base-ls960, microsoft/wavlm-base).")
    if getattr(model, "masked_spec_embed", None) is None:
        raise ValueError(f"Teacher {name_or_path!r} has no mask embedding (its config has mask_time_prob=0); "
                         "masking distillation writes the teacher's own mask embedding over masked frames.")
    model.eval().requires_grad_(False)
    return model


def looks_like_local_path(name_or_path: str) -> bool:
    """True for what can only be a file system path, never a hub id ("name" or "namespace/name")."""
    return (name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
            or any(sep in name_or_path for sep in (os.sep, os.altsep) if sep and sep != "/"))


class FrozenTeacher(nn.Module):
    """Layer outputs of a frozen teacher, unmasked and masked, in one pass.

    Args:
        model: a HubertModel, WavLMModel or Wav2Vec2Model (post-LN "Base" or stable-LN "Large"; for
            the latter, layer outputs are taken before the encoder's final LayerNorm, as Transformers does).
        layers: which teacher layers to return, 1-based (layer i = `hidden_states[i]` in Transformers'
            convention); None = all layers.
        share_features: compute the conv features once for both passes (True) or run the whole
            model twice (False; the straightforward way, kept to measure the gain).
        positional_conv_from_spectra: compute the positional conv from spectra (True: `model`'s conv is
            replaced in place) or run the model's own conv (False; kept to measure the gain).
    """

    def __init__(self, model: PreTrainedModel, layers: list[int] | None = None, share_features: bool = True,
                 positional_conv_from_spectra: bool = True):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        positional = self.model.encoder.pos_conv_embed
        if positional_conv_from_spectra and not isinstance(positional.conv, SpectralPositionalConv):
            positional.conv = SpectralPositionalConv(positional.conv)
        # Transformers applies a given mask_time_indices only with apply_spec_augment on; a teacher saved
        # with it off would give its unmasked outputs as the masked ones in the two-pass path. In eval mode
        # the switch draws no mask of its own.
        self.model.config.apply_spec_augment = True
        num_layers = model.config.num_hidden_layers
        self.layers = list(layers) if layers is not None else list(range(1, num_layers + 1))
        if any(not 1 <= layer <= num_layers for layer in self.layers):
            raise ValueError(f"Teacher layers must be in 1..{num_layers}, got {self.layers}.")
        self.share_features = share_features

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)  # always eval: no dropout in the targets

    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        return self.model._get_feat_extract_output_lengths(num_samples)

    @torch.no_grad()
    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None, mask: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """
        Args:
            input_values: (B, S) waveform; attention_mask: (B, S) 1 = real sample.
            mask: (B, T) bool frames to mask, or None for the unmasked pass only (validation).

        Returns:
            unmasked and masked layer outputs, each a list of (B, T, hidden) for `self.layers`
            (masked is None when `mask` is None).
        """
        if mask is None:
            return self._run_model(input_values, attention_mask, None), None
        if not self.share_features:
            return (self._run_model(input_values, attention_mask, None),
                    self._run_model(input_values, attention_mask, mask))

        features = self.model.feature_extractor(input_values).transpose(1, 2)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self.model._get_feature_vector_attention_mask(features.shape[1], attention_mask)
        projected = self.model.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected  # WavLM/wav2vec2 return a pair
        masked = torch.where(mask[..., None], self.model.masked_spec_embed.to(hidden.dtype), hidden)
        both = torch.cat([hidden, masked])
        both_mask = torch.cat([frame_mask, frame_mask]) if frame_mask is not None else None
        outputs = self._run_encoder(both, both_mask)
        batch = input_values.shape[0]
        return [o[:batch] for o in outputs], [o[batch:] for o in outputs]

    def _run_model(self, input_values, attention_mask, mask) -> list[torch.Tensor]:
        out = self.model(input_values, attention_mask=attention_mask, mask_time_indices=mask,
                         output_hidden_states=True)
        return [out.hidden_states[layer] for layer in self.layers]

    def _run_encoder(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> list[torch.Tensor]:
        # The encoder returns only its last state; the layer outputs are caught as they are made.
        # They equal `hidden_states[i]` of a full forward (checked in tests/test_distillation.py).
        caught: dict[int, torch.Tensor] = {}
        hooks = []
        for layer in self.layers:
            def catch(_module, _inputs, output, layer=layer):
                caught[layer] = output[0] if isinstance(output, tuple) else output
            hooks.append(self.model.encoder.layers[layer - 1].register_forward_hook(catch))
        try:
            self.model.encoder(hidden, attention_mask=frame_mask)
        finally:
            for hook in hooks:
                hook.remove()
        return [caught[layer] for layer in self.layers]


class SpectralPositionalConv(nn.Module):
    """A frozen teacher's positional conv (a grouped `nn.Conv1d`, usually weight-normed), computed from
    spectra: (B, C, T) -> (B, C, T + 2 * padding - kernel + 1), what the conv returns, to fp32 rounding.

    The products of spectra run in fp32 whatever the autocast setting (cuFFT takes half precision only
    for power-of-two lengths), and the result is cast to the input's dtype: at least as exact as the conv
    in bf16. The kernel's spectrum is computed once per device from the weight, which is frozen.
    """

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.stride[0] != 1 or conv.dilation[0] != 1 or not isinstance(conv.padding[0], int):
            raise ValueError(f"SpectralPositionalConv computes stride-1 convs with integer padding, not {conv}.")
        self.conv = conv
        self._spectra: dict[torch.device, torch.Tensor] = {}

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        kernel, padding = conv.kernel_size[0], conv.padding[0]
        device = hidden_states.device
        with torch.autocast(device.type, enabled=False):
            if device not in self._spectra:
                self._spectra[device] = kernel_spectrum(conv.weight.detach().float(), conv.groups)
            bias = conv.bias.detach().float() if conv.bias is not None else None
            out_frames = hidden_states.shape[-1] + 2 * padding - kernel + 1
            out = grouped_conv_from_spectra(hidden_states.float().transpose(1, 2), self._spectra[device], kernel,
                                            padding, out_frames, bias)
        return out.transpose(1, 2).to(hidden_states.dtype)


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based) for each student layer: identity when the depths match, else evenly spaced."""
    if student_layers > teacher_layers:
        raise ValueError(f"The student has {student_layers} layers but the teacher only {teacher_layers}; "
                         "give --teacher_layer_map explicitly.")
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]
